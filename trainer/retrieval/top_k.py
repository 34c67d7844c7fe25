"""Top-K over a fixed catalog with per-request exclusions, in plain TF ops stock TF Serving has.

TFRS's BruteForce needs a static exclusion width; requests carry histories of any length. The
excluded ids are looked up in a hash table and their scores overwritten, which costs
O(batch x excluded) rather than comparing every excluded id with every catalog item.
"""
from __future__ import annotations

from typing import Dict, Sequence

import tensorflow as tf

from trainer.retrieval.signature import EXCLUDED_SCORE, ITEM_IDS, SCORES


class ExcludingTopK(tf.Module):
  """scores [batch, catalog] + excluded ids [batch, any] -> top-K item ids and scores."""

  def __init__(self, item_ids: Sequence[str], k: int):
    super().__init__()
    self.item_ids = tf.constant(list(item_ids), tf.string)
    self.positions = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            self.item_ids, tf.range(len(item_ids), dtype=tf.int64)), default_value=-1)
    self.k = min(k, len(item_ids))

  def __call__(self, scores: tf.Tensor, excluded_ids: tf.Tensor) -> Dict[str, tf.Tensor]:
    excluded_ids = tf.reshape(excluded_ids, [tf.shape(scores)[0], -1])
    columns = self.positions.lookup(excluded_ids)
    rows = tf.broadcast_to(tf.range(tf.shape(scores, out_type=tf.int64)[0])[:, tf.newaxis],
                           tf.shape(columns, out_type=tf.int64))
    known = columns >= 0
    where = tf.stack([tf.boolean_mask(rows, known), tf.boolean_mask(columns, known)], axis=1)
    scores = tf.tensor_scatter_nd_update(
        scores, where, tf.fill([tf.shape(where)[0]], tf.constant(EXCLUDED_SCORE, scores.dtype)))
    top = tf.math.top_k(scores, k=self.k)
    return {ITEM_IDS: tf.gather(self.item_ids, top.indices), SCORES: top.values}
