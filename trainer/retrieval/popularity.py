"""The popularity baseline as a SavedModel with the retrieval model's `serving_default` and
`evaluation` signatures (not its embedding signatures: popularity has no embeddings).

It ranks items by how often they occur in training, skipping the ones in the request's history.
Blessing compares the two-tower model against it on the same `evaluation` signature.
"""
from __future__ import annotations

from typing import Dict, Sequence

import tensorflow as tf

from trainer.retrieval.signature import QUERY_SPEC
from trainer.retrieval.top_k import ExcludingTopK
from transform import features as F


class PopularityModule(tf.Module):
  """Top-K most frequent training items, excluding each request's history."""

  def __init__(self, item_ids: Sequence[str], counts: Sequence[int], top_k: int):
    super().__init__()
    self._scores = tf.constant(list(counts), tf.float32) / float(max(sum(counts), 1))
    self.top_k = ExcludingTopK(item_ids, top_k)

  def _top_k_excluding(self, history: tf.Tensor) -> Dict[str, tf.Tensor]:
    batch = tf.shape(history)[0]
    return self.top_k(tf.tile(self._scores[tf.newaxis, :], [batch, 1]), history)

  def recommend(self, request: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    return self._top_k_excluding(request[F.HISTORY])

  def evaluate(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
    raw = tf.io.parse_example(examples, {F.HISTORY: tf.io.VarLenFeature(tf.string)})
    return self._top_k_excluding(tf.sparse.to_dense(raw[F.HISTORY], default_value=""))

  def signatures(self) -> Dict[str, tf.types.experimental.ConcreteFunction]:
    examples = tf.TensorSpec([None], tf.string, name="examples")
    return {
        "serving_default": tf.function(
            lambda **r: self.recommend(r)).get_concrete_function(**QUERY_SPEC),
        "evaluation": tf.function(self.evaluate).get_concrete_function(examples),
    }


def export_popularity_model(item_ids: Sequence[str], counts: Sequence[int], top_k: int,
                            export_dir: str) -> None:
  module = PopularityModule(item_ids, counts, top_k)
  tf.saved_model.save(module, export_dir, signatures=module.signatures())
