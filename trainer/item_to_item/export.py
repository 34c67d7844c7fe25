"""The item-to-item source as a SavedModel with the retrieval model's `serving_default` and
`evaluation` signatures (`trainer/retrieval/history_source.py`), so that the cascade and the
evaluator call it like every other source; stock TF Serving loads it (core TF ops only).

The table is a `ScoringTable` (non-trainable variables, not graph constants: a constant lives
in saved_model.pb, which protobuf caps at 2 GB, and a million items at M=200 is 1.6 GB). History ids map to table rows through the top-K's id -> index hash
table (unknown ids and "" are -1 and add nothing). An empty history scores every item 0: the
answer is then the first K catalog items, which `ItemToItemTrainer` orders by count (the most
popular first).
"""
from __future__ import annotations

import tensorflow as tf

from trainer.item_to_item.model import ItemToItemTables
from trainer.item_to_item.scoring import ScoringTable
from trainer.retrieval.history_source import HistorySourceModule


class ItemToItemModule(HistorySourceModule):
  """Top-K of the summed neighbour rows of the request's history, history items excluded."""

  def __init__(self, tables: ItemToItemTables, top_k: int):
    super().__init__(tables.item_ids, top_k)
    self.table = ScoringTable(tables.ease.neighbours, tables.ease.weights)

  def catalog_scores(self, history: tf.Tensor) -> tf.Tensor:
    return self.table.scores(self.top_k.positions.lookup(history))


def export_item_to_item(module: ItemToItemModule, export_dir: str) -> None:
  module.export(export_dir)
