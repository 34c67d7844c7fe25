"""The popularity baseline as a SavedModel with the retrieval model's `serving_default` and
`evaluation` signatures (not its embedding signatures: popularity has no embeddings).

It ranks items by how often they occur in training, skipping the ones in the request's history.
Blessing compares the two-tower model against it on the same `evaluation` signature.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from trainer.retrieval.history_source import HistorySourceModule


class PopularityModule(HistorySourceModule):
  """Top-K most frequent training items, excluding each request's history."""

  def __init__(self, item_ids: Sequence[str], counts: Sequence[int], top_k: int):
    super().__init__(item_ids, top_k)
    self._scores = tf.constant(list(counts), tf.float32) / float(max(sum(counts), 1))

  def catalog_scores(self, history: tf.Tensor) -> tf.Tensor:
    return tf.tile(self._scores[tf.newaxis, :], [tf.shape(history)[0], 1])


def export_popularity_model(item_ids: Sequence[str], counts: Sequence[int], top_k: int,
                            export_dir: str) -> None:
  PopularityModule(item_ids, counts, top_k).export(export_dir)
