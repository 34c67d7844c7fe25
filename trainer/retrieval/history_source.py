"""The retrieval model's `serving_default` and `evaluation` signatures for a candidate source
that scores the catalog from the request's history alone (popularity, item-to-item), so that
the cascade and the evaluator call every source alike.

A source writes only `catalog_scores`; the request parsing, the exclusion of history items and
the top-K are here, once.
"""
from __future__ import annotations

from typing import Dict, Sequence

import tensorflow as tf

from trainer.retrieval.signature import QUERY_SPEC
from trainer.retrieval.top_k import ExcludingTopK
from transform import features as F


class HistorySourceModule(tf.Module):
  """Top-K of `catalog_scores(history)`, excluding each request's history; only `history` of
  the query is read."""

  def __init__(self, item_ids: Sequence[str], top_k: int):
    super().__init__()
    self.top_k = ExcludingTopK(item_ids, top_k)

  def catalog_scores(self, history: tf.Tensor) -> tf.Tensor:
    """history [batch, any] item ids ("" = padding) -> scores [batch, catalog]."""
    raise NotImplementedError

  def _top_k_excluding(self, history: tf.Tensor) -> Dict[str, tf.Tensor]:
    return self.top_k(self.catalog_scores(history), history)

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

  def export(self, export_dir: str) -> None:
    tf.saved_model.save(self, export_dir, signatures=self.signatures())
