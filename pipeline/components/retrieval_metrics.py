"""A TFMA metric for retrieval: recall, precision, F1 at k, NDCG@10 and MRR from top-K ids.

TFMA's own top-k metrics need a score for every class; a retrieval model answers with the ids of
its top K items instead. Each eval example has one relevant item (its label): the rank of that
item in the model's `item_ids` output is all these metrics need. Precision@k is hits / k and
recall@k is hits / 1 per example (one relevant item); MRR counts ranks within the model's K.
"""
from __future__ import annotations

import functools
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types

from pipeline.components.metric_sums import per_model_computations

CUTOFFS: Sequence[int] = (10, 50, 100)
NDCG_CUTOFF = 10
IDS_OUTPUT = "item_ids"


def metric_names(cutoffs: Sequence[int] = CUTOFFS) -> List[str]:
  """Every metric this computes, in display order."""
  names = []
  for k in cutoffs:
    names += [f"recall@{k}", f"precision@{k}", f"f1@{k}"]
  return names + [f"ndcg@{NDCG_CUTOFF}", "mrr", "example_count"]


def label_rank(label: np.ndarray, item_ids: np.ndarray) -> Optional[int]:
  """1-based rank of the label in the ranked ids, None if it is not among them."""
  target = np.asarray(label).reshape(-1)[0]
  ids = np.asarray(item_ids).reshape(-1)
  hits = np.flatnonzero(ids == target)
  return int(hits[0]) + 1 if hits.size else None


def _example_values(cutoffs: Sequence[int], label, predictions) -> Dict[str, float]:
  """Hits at each cutoff, DCG and reciprocal rank of one example's single relevant item."""
  rank = label_rank(label, predictions[IDS_OUTPUT])
  values = {f"hits@{k}": float(rank is not None and rank <= k) for k in cutoffs}
  values["dcg"] = 1.0 / math.log2(rank + 1) if rank is not None and rank <= NDCG_CUTOFF else 0.0
  values["reciprocal_rank"] = 1.0 / rank if rank is not None else 0.0
  return values


def _metrics(cutoffs: Sequence[int], examples: float, totals: Dict[str, float]
             ) -> Dict[str, float]:
  n = max(examples, 1.0)
  values = {"example_count": examples, f"ndcg@{NDCG_CUTOFF}": totals.get("dcg", 0.0) / n,
            "mrr": totals.get("reciprocal_rank", 0.0) / n}
  for k in cutoffs:
    hits = totals.get(f"hits@{k}", 0.0)
    recall, precision = hits / n, hits / (n * k)
    values[f"recall@{k}"] = recall
    values[f"precision@{k}"] = precision
    values[f"f1@{k}"] = (2 * precision * recall / (precision + recall)
                         if precision + recall else 0.0)
  return values


def _computations(cutoffs: Sequence[int] = CUTOFFS, name: str = "retrieval",
                  eval_config: Optional[tfma.EvalConfig] = None,
                  model_names: Optional[List[str]] = None,
                  output_names: Optional[List[str]] = None,
                  **unused) -> metric_types.MetricComputations:
  del name, eval_config, output_names, unused
  return per_model_computations(metric_names(cutoffs),
                                functools.partial(_example_values, tuple(cutoffs)),
                                functools.partial(_metrics, tuple(cutoffs)), model_names)


class RetrievalMetrics(tfma.metrics.Metric):
  """recall@k, precision@k, F1@k for each cutoff, NDCG@10 and MRR of a top-K retrieval model."""

  def __init__(self, cutoffs: Sequence[int] = CUTOFFS, name: str = "retrieval"):
    super().__init__(_computations, cutoffs=list(cutoffs), name=name)
