"""The retrieval loss over sampled catalog negatives, as a TFRS-style Task layer.

TFRS's `tasks.Retrieval` scores each query against the batch's own candidates: on a catalog
whose items arrive grouped (or whose batches hold few distinct items) that softmax is starved of
negatives. This task scores each query against its positive and against catalog items sampled
uniformly by the model (the whole catalog when it is small), optionally plus the batch's own
candidates corrected for their sampling probability (logQ), removes accidental hits (a sampled
negative that is the positive), and returns the summed softmax cross-entropy. Like TFRS's tasks
it owns its metrics: the positive's rank among the sampled negatives (top-1 and top-10 hit
rates), computed when `compute_metrics` is on (validation).
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

# Logit of a masked (accidental-hit) negative: far below any real score, still finite.
_MASKED_LOGIT = -1e9


class SampledCatalogRetrieval(tf.keras.layers.Layer):
  """queries [B, d], positives [B, d], sampled negatives [S, d] -> summed softmax loss."""

  def __init__(self, temperature: float, in_batch_negatives: bool = False,
               name: Optional[str] = None):
    super().__init__(name=name)
    self._temperature = temperature
    self._in_batch_negatives = in_batch_negatives
    self.top_1 = tf.keras.metrics.Mean(name="sampled_top_1_hit_rate")
    self.top_10 = tf.keras.metrics.Mean(name="sampled_top_10_hit_rate")

  def call(self, query_embeddings: tf.Tensor, candidate_embeddings: tf.Tensor,
           candidate_ids: tf.Tensor, negative_embeddings: tf.Tensor, negative_ids: tf.Tensor,
           candidate_sampling_probability: Optional[tf.Tensor] = None,
           compute_metrics: bool = True) -> tf.Tensor:
    scores = tf.matmul(query_embeddings, negative_embeddings, transpose_b=True) / self._temperature
    positive = tf.reduce_sum(query_embeddings * candidate_embeddings, axis=1) / self._temperature
    if self._in_batch_negatives:
      batch_scores = tf.matmul(query_embeddings, candidate_embeddings,
                               transpose_b=True) / self._temperature
      if candidate_sampling_probability is not None:
        batch_scores -= tf.math.log(candidate_sampling_probability)[tf.newaxis, :]
      scores = tf.concat([scores, batch_scores], axis=1)
      negative_ids = tf.concat([negative_ids, candidate_ids], axis=0)
    hits = tf.equal(candidate_ids[:, tf.newaxis], negative_ids[tf.newaxis, :])
    scores = tf.where(hits, tf.fill(tf.shape(scores), _MASKED_LOGIT), scores)
    logits = tf.concat([positive[:, tf.newaxis], scores], axis=1)
    loss = tf.reduce_sum(tf.reduce_logsumexp(logits, axis=1) - positive)
    if not compute_metrics:
      return loss
    rank = tf.reduce_sum(tf.cast(scores >= positive[:, tf.newaxis], tf.float32), axis=1)
    with tf.control_dependencies([self.top_1.update_state(tf.cast(rank < 1, tf.float32)),
                                  self.top_10.update_state(tf.cast(rank < 10, tf.float32))]):
      return tf.identity(loss)
