"""What the ranker knows of each item, from the training interactions its sources were fit on:
the catalog (ids and the raw metadata the retrieval model embeds), popularity, and when it was
interacted with (a histogram over the training period).

Built by the list miner once per fold (each fold's statistics leave its held-out interactions
out) and once from the whole training split (what the exported ranker carries). Memory grows
with the catalog, never with the log: `ItemStats` accumulates per item and merges.
"""
from __future__ import annotations

import dataclasses
import io
import json
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

DAY = 86_400
RECENT_DAYS = 30
TIME_BINS = 64
# (first, last) timestamp of the training period, which the histograms' bins divide evenly.
Span = Tuple[int, int]


def time_bin(timestamp: int, span: Span) -> int:
  width = max(span[1] - span[0], 1) / TIME_BINS
  return int(min(max((timestamp - span[0]) / width, 0), TIME_BINS - 1))


@dataclasses.dataclass
class ItemStats:
  """Sums per item over its interactions: count, timestamp sum, first timestamp and a time
  histogram; mergeable, so Beam can combine them."""
  count: int = 0
  time_sum: float = 0.0
  first: int = 2 ** 62
  histogram: List[int] = dataclasses.field(default_factory=lambda: [0] * TIME_BINS)

  def add(self, timestamp: int, bin_index: int) -> "ItemStats":
    """One more interaction at `timestamp`, in histogram bin `bin_index` (`time_bin`)."""
    histogram = list(self.histogram)
    histogram[bin_index] += 1
    return ItemStats(self.count + 1, self.time_sum + timestamp, min(self.first, timestamp),
                     histogram)

  @staticmethod
  def merge(parts: Sequence["ItemStats"]) -> "ItemStats":
    return ItemStats(sum(p.count for p in parts), sum(p.time_sum for p in parts),
                     min([p.first for p in parts] + [2 ** 62]),
                     [sum(bins) for bins in zip(*[p.histogram for p in parts])]
                     if parts else [0] * TIME_BINS)


@dataclasses.dataclass
class ItemCatalog:
  """Per item (index = position in `item_ids`, sorted): raw metadata and statistics."""
  item_ids: List[str]
  titles: List[str]
  categories: List[List[str]]
  years: np.ndarray       # [n] int64, 0 = unknown
  counts: np.ndarray      # [n] int64 interactions
  first_seen: np.ndarray  # [n] int64 unix seconds
  mean_time: np.ndarray   # [n] float64 unix seconds
  histogram: np.ndarray   # [n, TIME_BINS] int64 interactions per time bin of `span`
  span: Span

  @classmethod
  def build(cls, metadata: Mapping[str, Mapping[str, object]],
            stats: Mapping[str, ItemStats], span: Span) -> "ItemCatalog":
    """`metadata`: item id -> {title, categories, year}; `stats`: item id -> ItemStats over the
    interactions the sources saw, binned over `span`."""
    ids = sorted(stats)
    rows = [metadata.get(item, {}) for item in ids]
    return cls(
        item_ids=ids, titles=[str(r.get("title") or "") for r in rows],
        categories=[list(r.get("categories") or []) for r in rows],
        years=np.array([int(r.get("year") or 0) for r in rows], np.int64),
        counts=np.array([stats[i].count for i in ids], np.int64),
        first_seen=np.array([stats[i].first for i in ids], np.int64),
        mean_time=np.array([stats[i].time_sum / max(stats[i].count, 1) for i in ids]),
        histogram=np.array([stats[i].histogram for i in ids], np.int64).reshape(
            len(ids), TIME_BINS),
        span=(int(span[0]), int(span[1])))

  @property
  def now(self) -> int:
    """The latest training timestamp: what the item ages are counted from."""
    return self.span[1]

  def recent_counts(self) -> np.ndarray:
    """Interactions in the bins of the last RECENT_DAYS."""
    start = time_bin(self.now - RECENT_DAYS * DAY, self.span)
    return self.histogram[:, start:].sum(axis=1)

  def most_popular(self, exclude: Sequence[str], depth: int) -> List[str]:
    """The `depth` items with the most interactions, `exclude`d ones left out (popularity's
    answer for a user with that history)."""
    excluded = set(exclude)
    order = np.argsort(-self.counts, kind="stable")
    return [self.item_ids[i] for i in order[:depth + len(excluded)]
            if self.item_ids[i] not in excluded][:depth]

  def rows(self) -> List[Dict[str, object]]:
    """Contract-style catalog rows (item_id, title, categories, year) for the retrieval
    model's `item_embeddings` signature."""
    return [{"item_id": i, "title": t, "categories": c, "year": int(y)}
            for i, t, c, y in zip(self.item_ids, self.titles, self.categories, self.years)]

  def save(self, path: str) -> None:
    arrays = {name: getattr(self, name) for name in _ARRAYS}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, text=np.array(json.dumps({
        "item_ids": self.item_ids, "titles": self.titles, "categories": self.categories,
        "span": list(self.span)})))
    with tf.io.gfile.GFile(path, "wb") as f:
      f.write(buffer.getvalue())

  @classmethod
  def load(cls, path: str) -> "ItemCatalog":
    with tf.io.gfile.GFile(path, "rb") as f:
      arrays = np.load(io.BytesIO(f.read()))
      text = json.loads(str(arrays["text"]))
      return cls(item_ids=text["item_ids"], titles=text["titles"],
                 categories=text["categories"], span=tuple(text["span"]),
                 **{name: arrays[name] for name in _ARRAYS})


_ARRAYS = ("years", "counts", "first_seen", "mean_time", "histogram")
