"""The retrieval model's item embeddings, kept per model version, so that the bandit's arm
features cost no model call once an item has been embedded.

An item's embedding depends only on the model version and the item's catalog row, and both are
fixed while a version serves (the catalog keeps the rows of the items it has, `Catalog.refresh`).
A version's table is filled with the items requests ask for, in one batched call for those it
lacks, so it never grows beyond the catalog; the tables of the `max_versions` most recently
asked-for versions are kept (an experiment serves a few at once; a reload adds one).
"""
from __future__ import annotations

import collections
import threading
from typing import Callable, Dict, List, Sequence

import numpy as np

# (model version, item ids) -> their embeddings [n, d], in that order.
Embed = Callable[[int, List[str]], np.ndarray]


class ItemVectors:
  """Item id -> embedding of each retrieval version in use, filled on demand."""

  def __init__(self, embed: Embed, max_versions: int = 4):
    self._embed = embed
    self._max_versions = max_versions
    self._tables: "collections.OrderedDict[int, Dict[str, np.ndarray]]" = (
        collections.OrderedDict())
    self._lock = threading.Lock()

  def _table(self, version: int) -> Dict[str, np.ndarray]:
    with self._lock:
      table = self._tables.setdefault(version, {})
      self._tables.move_to_end(version)
      while len(self._tables) > self._max_versions:
        self._tables.popitem(last=False)
      return table

  def get(self, version: int, item_ids: Sequence[str]) -> np.ndarray:
    """The embeddings [len(item_ids), d] of these items by this version; the ones not yet
    known are embedded in one call (which may raise the caller's model errors)."""
    table = self._table(version)
    missing = [item for item in dict.fromkeys(item_ids) if item not in table]
    if missing:
      vectors = self._embed(version, missing)
      with self._lock:
        table.update(zip(missing, vectors))
    return np.stack([table[item] for item in item_ids])
