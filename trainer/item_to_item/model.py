"""The item-to-item candidate source's tables, learnt from co-occurrence in the training split.

Why these two: on MovieLens-100K (issue 10's prototype) dense EASE is the strongest single
source, and keeping each item's top-M neighbours by |weight| costs only 0.7% MAP at M=200 (its
large negative weights matter, so by magnitude, not by value); shrunk-cosine item-kNN is a
weaker source, but its scores are the ranker's kNN features. Dense EASE inverts the n x n Gram
matrix in one process, so a catalog above `dense_limit` gets the cosine table as its source.

A table's row i holds the neighbours j of item i with the weight w(i, j) that item i adds to
j's score for a user who has i (EASE: B[i, j]); a user's score of j sums the rows of the
user's history items (`trainer/item_to_item/scoring.py`).
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any, List, Mapping

import numpy as np
import tensorflow as tf

from trainer.settings import known_settings

EASE, COSINE = "ease", "cosine"


@dataclasses.dataclass(frozen=True)
class ItemToItemSettings:
  """What the pipeline may set for the item-to-item source (JSON, by field name)."""
  ease_lambda: float = 500.0  # the prototype found 500-700 best and the curve flat around it
  neighbours: int = 200  # M, the neighbours kept per item, by |weight|
  # The largest catalog that gets dense EASE: its solve holds about 3 n x n float64 arrays at
  # once (2.4 GB at 10,000 items).
  dense_limit: int = 10_000
  shrink: float = 0.0  # cosine shrinkage: the prototype's inner validation chose 0
  # A user's most recent distinct items that form co-occurrence pairs, so a user gives at most
  # history_limit^2 / 2 pairs; the prototype lost 0.5% MAP at 200 items, 4.6% at 100.
  history_limit: int = 500
  top_k: int = 100

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | None) -> "ItemToItemSettings":
    return cls(**known_settings(config, [field.name for field in dataclasses.fields(cls)],
                                "item-to-item settings"))


def _write_bytes(path: str, data: bytes) -> None:
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(data)


def _read_bytes(path: str) -> bytes:
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


@dataclasses.dataclass
class NeighbourTable:
  """Per item (row), its M neighbours (item indices, -1 = none) and their weights (0 there),
  strongest first."""
  neighbours: np.ndarray  # [n, M] int32
  weights: np.ndarray  # [n, M] float32

  def save(self, path: str) -> None:
    """One .npz file, through tf.io.gfile (so gs:// works; numpy writes only local files)."""
    buffer = io.BytesIO()
    np.savez(buffer, neighbours=self.neighbours, weights=self.weights)
    _write_bytes(path, buffer.getvalue())

  @classmethod
  def load(cls, path: str) -> "NeighbourTable":
    with np.load(io.BytesIO(_read_bytes(path))) as arrays:
      return cls(neighbours=arrays["neighbours"], weights=arrays["weights"])


@dataclasses.dataclass
class ItemToItemTables:
  """One fitted variant of the source: its catalog and its two tables."""
  item_ids: List[str]  # index -> item id: the catalog of the training split
  item_counts: np.ndarray  # [n] int64: users whose kept history holds the item (Gram diagonal)
  ease: NeighbourTable  # the source's table: EASE, or the cosine table above dense_limit
  cosine: NeighbourTable  # shrunk cosine, always: the ranker's kNN features read it
  method: str  # EASE or COSINE: what `ease` holds

  def save(self, folder: str) -> None:
    tf.io.gfile.makedirs(folder)
    _write_bytes(os.path.join(folder, "catalog.json"), json.dumps({
        "method": self.method, "item_ids": self.item_ids,
        "item_counts": self.item_counts.tolist()}).encode())
    self.ease.save(os.path.join(folder, "ease.npz"))
    self.cosine.save(os.path.join(folder, "cosine.npz"))

  @classmethod
  def load(cls, folder: str) -> "ItemToItemTables":
    catalog = json.loads(_read_bytes(os.path.join(folder, "catalog.json")))
    return cls(item_ids=catalog["item_ids"],
               item_counts=np.array(catalog["item_counts"], np.int64),
               ease=NeighbourTable.load(os.path.join(folder, "ease.npz")),
               cosine=NeighbourTable.load(os.path.join(folder, "cosine.npz")),
               method=catalog["method"])


def _top_m(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, strength: np.ndarray,
           n: int, m: int) -> NeighbourTable:
  """From sparse entries (row, col, weight), each row's m strongest (ties: lower column)."""
  order = np.lexsort((cols, -strength, rows))
  rows, cols, weights = rows[order], cols[order], weights[order]
  rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
  keep = rank < m
  width = min(m, n)
  neighbours = np.full((n, width), -1, np.int32)
  table_weights = np.zeros((n, width), np.float32)
  neighbours[rows[keep], rank[keep]] = cols[keep]
  table_weights[rows[keep], rank[keep]] = weights[keep]
  return NeighbourTable(neighbours, table_weights)


def _ease_weights(item_counts: np.ndarray, rows: np.ndarray, cols: np.ndarray, counts: np.ndarray,
                 ease_lambda: float) -> np.ndarray:
  """Dense EASE (Steck 2019): B = I - P / diag(P), P = (G + lambda I)^-1, diag(B) = 0, with
  G = X^T X for binary user-item X: co-occurrence off the diagonal, item counts on it.
  `rows`, `cols`, `counts`: the co-occurrence in both orders."""
  gram = np.zeros((len(item_counts),) * 2)
  gram[rows, cols] = counts
  gram[np.diag_indices_from(gram)] = item_counts + ease_lambda
  weights = np.linalg.inv(gram)
  del gram
  weights /= -np.diag(weights)[np.newaxis, :]
  weights[np.diag_indices_from(weights)] = 0.0
  return weights


def _ease_table(item_counts: np.ndarray, rows: np.ndarray, cols: np.ndarray, counts: np.ndarray,
                settings: ItemToItemSettings) -> NeighbourTable:
  n = len(item_counts)
  weights = _ease_weights(item_counts, rows, cols, counts, settings.ease_lambda)
  m = min(settings.neighbours, n)
  # Each row's m largest |B| first (linear time), then the exact order among those.
  strongest = np.argpartition(-np.abs(weights), m - 1, axis=1)[:, :m].ravel()
  sources = np.repeat(np.arange(n), m)
  kept = weights[sources, strongest]
  nonzero = kept != 0
  return _top_m(sources[nonzero], strongest[nonzero], kept[nonzero], np.abs(kept[nonzero]), n, m)


def fit_tables(item_ids: List[str], item_counts: np.ndarray, pair_rows: np.ndarray,
               pair_cols: np.ndarray, pair_counts: np.ndarray, settings: ItemToItemSettings
               ) -> ItemToItemTables:
  """The tables from the co-occurrence counts: each unordered pair of item indices i != j
  once, in either order, with the number of users who have both; `item_counts` the users who
  have each item (the Gram diagonal)."""
  n = len(item_ids)
  rows = np.concatenate([pair_rows, pair_cols]).astype(np.int64)
  cols = np.concatenate([pair_cols, pair_rows]).astype(np.int64)
  counts = np.concatenate([pair_counts, pair_counts]).astype(np.float64)
  item_counts = np.asarray(item_counts, np.int64)
  similarity = counts / (np.sqrt(item_counts[rows] * item_counts[cols]) + settings.shrink)
  cosine = _top_m(rows, cols, similarity.astype(np.float32), similarity, n, settings.neighbours)
  if n > settings.dense_limit:
    return ItemToItemTables(list(item_ids), item_counts, cosine, cosine, COSINE)
  ease = _ease_table(item_counts, rows, cols, counts, settings)
  return ItemToItemTables(list(item_ids), item_counts, ease, cosine, EASE)
