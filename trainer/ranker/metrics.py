"""Top-K metrics of one user's recommendation list against the items they went on to choose:
the one definition the ranker's validation, the TFMA metric and the benchmarks share.

Microsoft Recommenders' definitions (binary relevance, every held-out item relevant):
precision@k = hits / k; recall@k = hits / relevant; NDCG@k normalises by the ideal order of
min(relevant, k) hits; MAP (their `map_at_k`) sums the precision at each hit position within
the top k and divides by the number of relevant items. recall@100 measures the candidate depth.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

K = 10
DEPTH = 100
USER_COUNT = "user_count"


def metric_names() -> List[str]:
  return ["map", f"ndcg@{K}", f"precision@{K}", f"recall@{K}", f"recall@{DEPTH}"]


def hit_metrics(hits: np.ndarray, n_relevant: int) -> Optional[Dict[str, float]]:
  """Metrics of a ranked list given as hits (1 = relevant, best first) and the number of
  relevant items (also those the list misses); None when nothing is relevant."""
  if n_relevant <= 0:
    return None
  hits = np.asarray(hits, np.float64)[:DEPTH]
  top = hits[:K]
  ranks = np.arange(1, top.size + 1)
  ideal = (1.0 / np.log2(np.arange(2, min(n_relevant, K) + 2))).sum()
  return {"map": float((np.cumsum(top) / ranks * top).sum() / n_relevant),
          f"ndcg@{K}": float((top / np.log2(ranks + 1)).sum() / ideal),
          f"precision@{K}": float(top.sum() / K),
          f"recall@{K}": float(top.sum() / n_relevant),
          f"recall@{DEPTH}": float(hits.sum() / n_relevant)}


def user_metrics(ranked: Sequence[str], relevant: Iterable[str]) -> Optional[Dict[str, float]]:
  """Metrics of one ranked list of ids (best first, history already removed)."""
  relevant = set(relevant)
  return hit_metrics(np.array([item in relevant for item in ranked[:DEPTH]]), len(relevant))


def means(count: float, totals: Dict[str, float]) -> Dict[str, float]:
  """Summed `user_metrics` over `count` users -> their averages, and `user_count`."""
  return {**{name: totals.get(name, 0.0) / max(count, 1.0) for name in metric_names()},
          USER_COUNT: float(count)}


def mean_metrics(values_per_user: Iterable[Optional[Dict[str, float]]]) -> Dict[str, float]:
  """Averages of `hit_metrics` / `user_metrics` results over the users that have any."""
  totals: Dict[str, float] = {}
  count = 0
  for values in values_per_user:
    if values is None:
      continue
    count += 1
    for name, value in values.items():
      totals[name] = totals.get(name, 0.0) + value
  return means(count, totals)
