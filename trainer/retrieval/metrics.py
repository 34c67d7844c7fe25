"""Retrieval metrics from a model's top-K ids: recall, precision, F1 at k, NDCG@10 and MRR.

Each eval example has one relevant item (its label): the rank of that item in the model's
`item_ids` output is all these metrics need. Precision@k is hits / k and recall@k is hits / 1
per example (one relevant item); MRR counts ranks within the model's K. The TFMA metric
(`pipeline/evaluation/tfma_metrics.py`) sums `example_values` and calls `finish`.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from trainer.retrieval.signature import ITEM_IDS

CUTOFFS: Sequence[int] = (10, 50, 100)
NDCG_CUTOFF = 10
EXAMPLE_COUNT = "example_count"


def metric_names(cutoffs: Sequence[int] = CUTOFFS) -> List[str]:
  """Every metric this computes, in display order."""
  names = []
  for k in cutoffs:
    names += [f"recall@{k}", f"precision@{k}", f"f1@{k}"]
  return names + [f"ndcg@{NDCG_CUTOFF}", "mrr", EXAMPLE_COUNT]


def label_rank(label: np.ndarray, item_ids: np.ndarray) -> Optional[int]:
  """1-based rank of the label in the ranked ids, None if it is not among them."""
  target = np.asarray(label).reshape(-1)[0]
  ids = np.asarray(item_ids).reshape(-1)
  hits = np.flatnonzero(ids == target)
  return int(hits[0]) + 1 if hits.size else None


def example_values(cutoffs: Sequence[int], label: np.ndarray,
                   predictions: Mapping[str, np.ndarray]) -> Dict[str, float]:
  """Hits at each cutoff, DCG and reciprocal rank of one example's single relevant item."""
  rank = label_rank(label, predictions[ITEM_IDS])
  values = {f"hits@{k}": float(rank is not None and rank <= k) for k in cutoffs}
  values["dcg"] = 1.0 / math.log2(rank + 1) if rank is not None and rank <= NDCG_CUTOFF else 0.0
  values["reciprocal_rank"] = 1.0 / rank if rank is not None else 0.0
  return values


def finish(cutoffs: Sequence[int], examples: float, totals: Mapping[str, float]
           ) -> Dict[str, float]:
  """Summed `example_values` over `examples` examples -> the metrics of `metric_names`."""
  n = max(examples, 1.0)
  values = {EXAMPLE_COUNT: examples, f"ndcg@{NDCG_CUTOFF}": totals.get("dcg", 0.0) / n,
            "mrr": totals.get("reciprocal_rank", 0.0) / n}
  for k in cutoffs:
    hits = totals.get(f"hits@{k}", 0.0)
    recall, precision = hits / n, hits / (n * k)
    values[f"recall@{k}"] = recall
    values[f"precision@{k}"] = precision
    values[f"f1@{k}"] = (2 * precision * recall / (precision + recall)
                         if precision + recall else 0.0)
  return values
