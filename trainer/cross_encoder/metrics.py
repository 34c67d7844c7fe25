"""Ranking metrics of one query group, in numpy: the one definition the trainer's early stopping,
the TFMA metric and the benchmarks share.

Binary relevance (label > 0). NDCG@10 normalises by the ideal order of the group's own relevant
candidates; precision@k divides by k, recall@k by the group's relevant count; MRR is 1 / rank of
the first relevant candidate. Ties keep the group's candidate order (the miner shuffles it).
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

CUTOFFS: Sequence[int] = (1, 5, 10)
NDCG_CUTOFF = 10
GROUP_COUNT = "group_count"


def metric_names(cutoffs: Sequence[int] = CUTOFFS) -> List[str]:
  """Every per-group metric, in display order (group_count is added by the averages)."""
  return ([f"ndcg@{NDCG_CUTOFF}", "mrr"] + [f"precision@{k}" for k in cutoffs]
          + [f"recall@{k}" for k in cutoffs])


def group_metrics(labels: np.ndarray, scores: np.ndarray, cutoffs: Sequence[int] = CUTOFFS
                  ) -> Optional[Dict[str, float]]:
  """Metrics of one group; None when it has no relevant candidate (nothing to rank).

  `scores` may be longer than `labels` (padding of a batched model output): it is cut.
  """
  labels = np.asarray(labels, np.float64).reshape(-1)
  scores = np.asarray(scores, np.float64).reshape(-1)[:labels.size]
  relevant = labels > 0
  n_relevant = int(relevant.sum())
  if not n_relevant:
    return None
  hits = relevant[np.argsort(-scores, kind="stable")].astype(np.float64)
  discounts = 1.0 / np.log2(np.arange(2, hits.size + 2))
  ideal = discounts[:min(n_relevant, NDCG_CUTOFF)].sum()
  values = {f"ndcg@{NDCG_CUTOFF}": float((hits[:NDCG_CUTOFF] * discounts[:NDCG_CUTOFF]).sum()
                                         / ideal),
            "mrr": float(1.0 / (np.flatnonzero(hits)[0] + 1))}
  for k in cutoffs:
    values[f"precision@{k}"] = float(hits[:k].sum() / k)
    values[f"recall@{k}"] = float(hits[:k].sum() / n_relevant)
  return values


def all_metric_names(cutoffs: Sequence[int] = CUTOFFS) -> List[str]:
  """`metric_names` and the group count, what the TFMA metric reports."""
  return metric_names(cutoffs) + [GROUP_COUNT]


def means(cutoffs: Sequence[int], count: float, totals: Mapping[str, float]) -> Dict[str, float]:
  """Per-group metrics summed over `count` groups -> their averages, and `group_count`."""
  return {**{name: totals.get(name, 0.0) / max(count, 1) for name in metric_names(cutoffs)},
          GROUP_COUNT: float(count)}


def mean_metrics(groups: Iterable[Tuple[np.ndarray, np.ndarray]],
                 cutoffs: Sequence[int] = CUTOFFS) -> Dict[str, float]:
  """Averages over the groups that have a relevant candidate; `group_count` says how many."""
  totals: Dict[str, float] = {}
  count = 0
  for labels, scores in groups:
    values = group_metrics(labels, scores, cutoffs)
    if values is None:
      continue
    count += 1
    for name, value in values.items():
      totals[name] = totals.get(name, 0.0) + value
  return means(cutoffs, count, totals)
