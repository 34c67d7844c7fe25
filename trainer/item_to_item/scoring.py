"""A user's catalog scores from an item-to-item table: the sum, over the user's history items
i, of row i (item i adds w(i, j) to each neighbour j's score).

One home for the serving export and the ranker's kNN features, in plain TF ops that stock TF
Serving has (gather, unsorted segment sum, sort): no py_function, no custom ops.
"""
from __future__ import annotations

import tensorflow as tf


def catalog_scores(table_neighbours: tf.Tensor, table_weights: tf.Tensor,
                   history_indices: tf.Tensor, n_items: int) -> tf.Tensor:
  """table [n, M] (neighbour -1 = none), history [B, H] item indices (-1 = padding or unknown)
  -> scores [B, n_items]. A repeated history item counts once: the tables are fit on binary
  user-item data."""
  history = tf.sort(tf.cast(history_indices, tf.int64), axis=1)
  batch = tf.shape(history, out_type=tf.int64)[0]
  previous = tf.concat([tf.fill([batch, 1], tf.constant(-1, tf.int64)), history], axis=1)[:, :-1]
  counted = (history >= 0) & (history != previous)
  rows = tf.maximum(history, 0)
  neighbours = tf.cast(tf.gather(table_neighbours, rows), tf.int64)  # [B, H, M]
  weights = tf.gather(table_weights, rows)
  valid = counted[:, :, tf.newaxis] & (neighbours >= 0)
  user = tf.range(batch)[:, tf.newaxis, tf.newaxis]
  slots = tf.where(valid, user * n_items + neighbours, 0)
  scores = tf.math.unsorted_segment_sum(tf.where(valid, weights, tf.zeros_like(weights)), slots,
                                        batch * n_items)
  return tf.reshape(scores, [batch, n_items])
