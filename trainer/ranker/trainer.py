"""Trains the ranking stage's scorers on the mined candidate lists, with early stopping on the
validation lists' loss, and exports the ranker.

The default trains three DCNs (different seeds) and a linear scorer and averages their per-list
standardised logits. On MovieLens-100K (benchmarks/movielens_protocol.py, inner validation)
one DCN and the linear model were level and their average beat both (their errors are partly
seed noise); a member far below the others on validation (an undertrained one, on a small
log) is left out rather than averaged in. `RankerSettings.scorers` names the members.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from trainer.ranker import warm_start
from trainer.ranker.export import RankerModule, export_ranker
from trainer.ranker.features import RankingFeatures
from trainer.ranker.lists import FEATURES, MASK, list_dataset
from trainer.ranker.metrics import hit_metrics, mean_metrics
from trainer.ranker.model import (DCN, LINEAR, LISTWISE, build_scorer, ensemble_logits,
                                  list_logits, loss, moments)
from trainer.settings import known_settings

MONITOR = "validation_loss"
MEMBER_FLOOR = 0.9
TRAINING_RECORD = "ranker_training.json"


@dataclasses.dataclass(frozen=True)
class RankerSettings:
  """What the pipeline's config may set for the ranker trainer."""
  loss: str = LISTWISE          # or "pointwise" (binary cross-entropy)
  scorers: Tuple[str, ...] = (DCN, DCN, DCN, LINEAR)
  max_epochs: int = 16
  patience: int = 3             # epochs without a better validation MAP before stopping
  lists_per_batch: int = 32
  learning_rate: float = 1e-3
  linear_learning_rate: float = 1e-2  # a single unit needs larger steps to converge as fast
  weight_decay: float = 1e-3
  width: int = 64
  cross_layers: int = 1
  dropout: float = 0.2
  shuffle_buffer: int = 10_000
  seed: int = 42

  @classmethod
  def from_config(cls, config: Optional[Mapping[str, Any]]) -> "RankerSettings":
    values = known_settings(config, [f.name for f in dataclasses.fields(cls)],
                            "ranker trainer settings")
    if "scorers" in values:
      values["scorers"] = tuple(values["scorers"])
    return cls(**values)


def list_batches(files: Sequence[str], n_features: int, settings: RankerSettings,
             shuffle_seed: Optional[int]) -> tf.data.Dataset:
  dataset = list_dataset(files, n_features)
  if shuffle_seed is not None:
    dataset = dataset.shuffle(settings.shuffle_buffer, seed=shuffle_seed,
                              reshuffle_each_iteration=True)
  return dataset.padded_batch(settings.lists_per_batch).prefetch(tf.data.AUTOTUNE)


def _hits(logits: np.ndarray, mask: np.ndarray, labels: np.ndarray, relevant: np.ndarray
          ) -> List[Dict[str, float]]:
  """Each list's hit metrics when ordered by its logits."""
  values = []
  for row, row_mask in enumerate(mask):
    order = np.argsort(-logits[row][row_mask], kind="stable")
    values.append(hit_metrics(labels[row][row_mask][order], int(relevant[row])))
  return values


def list_metrics(scorers: Sequence[tf.keras.Model], batches: tf.data.Dataset
                 ) -> Dict[str, float]:
  """The lists' metrics (MAP, NDCG@10, ...) when each is ordered by the scorers' ensemble."""
  values = []
  for inputs, labels, relevant in batches:
    logits = ensemble_logits(scorers, inputs[FEATURES], inputs[MASK])
    values += _hits(logits.numpy(), inputs[MASK].numpy(), labels.numpy(), relevant.numpy())
  return mean_metrics(values)


def validation_metrics(scorer: tf.keras.Model, kind: str, batches: tf.data.Dataset
                       ) -> Dict[str, float]:
  """The validation lists' metrics when ordered by `scorer`, and its training objective on
  them (`validation_loss`: a far steadier early-stopping signal than their MAP, which moves by
  +-0.002 from epoch to epoch on a few hundred lists), in one pass."""
  values, losses = [], []
  for inputs, labels, relevant in batches:
    logits = list_logits(scorer, inputs[FEATURES], inputs[MASK])
    losses.append(float(loss(kind, labels, logits, inputs[MASK])))
    values += _hits(logits.numpy(), inputs[MASK].numpy(), labels.numpy(), relevant.numpy())
  return dict(mean_metrics(values), validation_loss=float(np.mean(losses)) if losses else 0.0)


def ensemble_members(best_maps: Sequence[float]) -> List[int]:
  """The scorers averaged: all but those whose validation MAP is below MEMBER_FLOOR of the
  best one's (an undertrained or diverged member, as a linear scorer on a small log can be).
  Choosing among comparable members by validation MAP would fit its noise."""
  best = max(best_maps)
  return [i for i, value in enumerate(best_maps) if value >= MEMBER_FLOOR * best]


def train_scorer(kind: str, seed: int, settings: RankerSettings, train: tf.data.Dataset,
                 validation: tf.data.Dataset, feature_moments: Dict[str, np.ndarray],
                 initial_weights: Optional[List[np.ndarray]] = None
                 ) -> Tuple[tf.keras.Model, List[Dict[str, float]]]:
  """One scorer, AdamW, early-stopped on the validation loss (the best epoch's weights
  kept). Started from `initial_weights` (a warm start), those weights are epoch 0 of the
  curve and are kept when no epoch beats them."""
  tf.keras.utils.set_random_seed(seed)
  scorer = build_scorer(kind, feature_moments["mean"], feature_moments["std"], settings.width,
                        settings.cross_layers, settings.dropout)
  optimizer = tf.keras.optimizers.AdamW(
      learning_rate=settings.linear_learning_rate if kind == LINEAR else settings.learning_rate,
      weight_decay=settings.weight_decay)

  # Lists are padded per batch: one trace for every batch shape.
  @tf.function(input_signature=[tf.TensorSpec([None, None, len(feature_moments["mean"])]),
                                tf.TensorSpec([None, None], tf.bool),
                                tf.TensorSpec([None, None])])
  def step(features: tf.Tensor, mask: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    with tf.GradientTape() as tape:
      value = loss(settings.loss, labels, list_logits(scorer, features, mask, True), mask)
    optimizer.apply_gradients(zip(tape.gradient(value, scorer.trainable_variables),
                                  scorer.trainable_variables))
    return value

  curve: List[Dict[str, float]] = []
  best, best_weights, waited = np.inf, scorer.get_weights(), 0
  if initial_weights is not None:
    scorer.set_weights(initial_weights)
    curve.append(dict(validation_metrics(scorer, settings.loss, validation), epoch=0))
    best, best_weights = curve[0][MONITOR], scorer.get_weights()
  for epoch in range(settings.max_epochs):
    losses = [float(step(inputs[FEATURES], inputs[MASK], labels))
              for inputs, labels, _ in train]
    metrics = dict(validation_metrics(scorer, settings.loss, validation),
                   loss=float(np.mean(losses)), epoch=epoch + 1)
    curve.append(metrics)
    logging.info("ranker %s seed %d epoch %d: %s", kind, seed, epoch + 1, metrics)
    if metrics[MONITOR] < best:
      best, best_weights, waited = metrics[MONITOR], scorer.get_weights(), 0
    else:
      waited += 1
      if waited >= settings.patience:
        break
  scorer.set_weights(best_weights)
  return scorer, curve


def train_and_export(settings: RankerSettings, train_files: Sequence[str],
                     validation_files: Sequence[str], features: RankingFeatures,
                     export_dir: str, record_dir: str, base_dir: Optional[str] = None
                     ) -> Dict[str, Any]:
  """Trains every scorer of the ensemble (from the base ranker's weights at `base_dir` where
  they fit, trainer/ranker/warm_start.py), exports the ranker with the given features (the
  sources fit on the whole training split) and writes the training record and the next run's
  warm-start state into `record_dir`."""
  n_features = len(features.names)
  started = time.time()
  build = warm_start.build_description(features.names, settings.scorers, settings.width,
                                       settings.cross_layers)
  initial, warm_report = warm_start.load(base_dir, build)
  logging.info("ranker warm start: %s", warm_report)
  train = list_batches(train_files, n_features, settings, settings.seed)
  validation = list_batches(validation_files, n_features, settings, None)
  feature_moments = moments(list_batches(train_files, n_features, settings, None))
  scorers, curves = [], []
  for member, kind in enumerate(settings.scorers):
    scorer, curve = train_scorer(kind, settings.seed + member, settings, train, validation,
                                 feature_moments, initial[member] if initial else None)
    scorers.append(scorer)
    curves.append({"scorer": kind, "seed": settings.seed + member, "epochs": curve,
                   "best_validation": min(curve, key=lambda m: m[MONITOR])})
  members = ensemble_members([c["best_validation"]["map"] for c in curves])
  ensemble = [scorers[m] for m in members]
  module = RankerModule(features, ensemble)
  export_ranker(module, export_dir)
  tf.io.gfile.makedirs(record_dir)
  warm_start.save(scorers, build, record_dir)
  record = {"settings": dataclasses.asdict(settings), "features": features.names,
            "warm_start": warm_report, "scorers": curves, "ensemble_members": members,
            "ensemble_validation": list_metrics(ensemble, validation),
            "seconds": round(time.time() - started, 1)}
  with tf.io.gfile.GFile(os.path.join(record_dir, TRAINING_RECORD), "w") as f:
    json.dump(record, f, indent=2)
  return record
