"""The ranking model: a deep & cross network (TFRS's `dcn.Cross`) scoring each candidate's
features, trained per list (TF Recommenders on Keras 2: TF_USE_LEGACY_KERAS=1).

Listwise softmax over each user's candidates is the default objective: with pooled pointwise
binary cross-entropy the model learns which users have more positives (users with short,
peaked histories) instead of the order within a user's list, and lost to EASE on MovieLens;
the softmax over a list compares candidates of the same user only. Pointwise BCE stays an
option (`loss="pointwise"`). A linear scorer on the same features is the `linear` variant.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from trainer.ranker.lists import FEATURES, MASK

LISTWISE, POINTWISE = "listwise", "pointwise"
DCN, LINEAR = "dcn", "linear"
# Logit of a padding slot: far below any candidate's, still finite (softmax stays defined).
_PADDING_LOGIT = -1e9


def build_scorer(kind: str, mean: np.ndarray, std: np.ndarray, width: int = 64,
                 cross_layers: int = 1, dropout: float = 0.2) -> tf.keras.Model:
  """Features [N, F] -> logits [N]: standardised with the training moments, then a DCN-v2
  (cross layers on the input, a two-layer ReLU tower) or a single linear unit."""
  inputs = tf.keras.Input((len(mean),), name="features")
  x = (inputs - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
  if kind == DCN:
    x0 = x
    for _ in range(cross_layers):
      x = tfrs.layers.dcn.Cross()(x0, x)
    for units in (width, width // 2):
      x = tf.keras.layers.Dense(units, activation="relu")(x)
      x = tf.keras.layers.Dropout(dropout)(x)
  elif kind != LINEAR:
    raise ValueError(f"unknown ranker scorer {kind!r}: use {DCN} or {LINEAR}")
  return tf.keras.Model(inputs, tf.squeeze(tf.keras.layers.Dense(1)(x), -1), name=kind)


def list_logits(scorer: tf.keras.Model, features: tf.Tensor, mask: tf.Tensor,
                training: bool = False) -> tf.Tensor:
  """[B, C, F] features of padded lists -> [B, C] logits, padding at a very low logit."""
  shape = tf.shape(features)
  logits = tf.reshape(scorer(tf.reshape(features, [-1, shape[-1]]), training=training),
                      shape[:2])
  return tf.where(mask, logits, _PADDING_LOGIT)


def loss(kind: str, labels: tf.Tensor, logits: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """Mean over the batch's lists: listwise softmax cross-entropy against the labels as a
  distribution, or binary cross-entropy averaged over the real candidates."""
  if kind == LISTWISE:
    target = labels / tf.maximum(tf.reduce_sum(labels, axis=1, keepdims=True), 1.0)
    per_list = -tf.reduce_sum(target * tf.nn.log_softmax(logits, axis=1), axis=1)
    has_positive = tf.cast(tf.reduce_sum(labels, axis=1) > 0, tf.float32)
    return tf.reduce_sum(per_list * has_positive) / tf.maximum(tf.reduce_sum(has_positive), 1.0)
  if kind == POINTWISE:
    weights = tf.cast(mask, tf.float32)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels, tf.where(mask, logits, 0.0))
    return tf.reduce_sum(bce * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
  raise ValueError(f"unknown ranker loss {kind!r}: use {LISTWISE} or {POINTWISE}")


def standardised_per_list(logits: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """Each list's logits as z-scores over its real candidates, so scorers of different scales
  can be averaged (the ensemble)."""
  weights = tf.cast(mask, tf.float32)
  count = tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1.0)
  values = tf.where(mask, logits, 0.0)
  mean = tf.reduce_sum(values, axis=1, keepdims=True) / count
  std = tf.sqrt(tf.reduce_sum(tf.square(values - mean) * weights, axis=1, keepdims=True)
                / count) + 1e-6
  return tf.where(mask, (logits - mean) / std, 0.0)


def ensemble_logits(scorers, features: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """The ensemble's score: each scorer's logits standardised per list, averaged (a scorer
  listed twice counts twice)."""
  return tf.add_n([standardised_per_list(list_logits(s, features, mask), mask)
                   for s in scorers]) / float(len(scorers))


def moments(batches: tf.data.Dataset) -> Dict[str, np.ndarray]:
  """Mean and standard deviation of every feature over the real candidates, in one pass."""
  total, total_sq, count = None, None, 0.0
  for inputs, _, _ in batches:
    rows = tf.boolean_mask(inputs[FEATURES], inputs[MASK]).numpy().astype(np.float64)
    total = rows.sum(0) if total is None else total + rows.sum(0)
    total_sq = (rows ** 2).sum(0) if total_sq is None else total_sq + (rows ** 2).sum(0)
    count += len(rows)
  mean = total / max(count, 1.0)
  std = np.sqrt(np.maximum(total_sq / max(count, 1.0) - mean ** 2, 0.0)) + 1e-6
  return {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}
