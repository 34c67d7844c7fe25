"""A TFMA metric for re-ranking: NDCG@10, MRR, precision@k and recall@k per query group.

Each evaluated example is one query group (`trainer/ranker_examples.py`): its labels are the
candidates' relevance, the model's prediction is a score per candidate. TFMA's own ranking
metrics want one example per (query, candidate) row and a query key; a group per example keeps
the model's `evaluation` signature batched over whole groups, so the metric is custom, and its
per-group definitions are the ones the trainer's early stopping uses
(`trainer/ranker_group_metrics.py`).
"""
from __future__ import annotations

import functools
from typing import List, Optional, Sequence

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types

from pipeline.components.metric_sums import per_model_computations
from trainer.ranker_group_metrics import CUTOFFS, GROUP_COUNT, group_metrics, means, metric_names


def all_metric_names(cutoffs: Sequence[int] = CUTOFFS) -> List[str]:
  return metric_names(cutoffs) + [GROUP_COUNT]


def _computations(cutoffs: Sequence[int] = CUTOFFS, name: str = "ranking",
                  eval_config: Optional[tfma.EvalConfig] = None,
                  model_names: Optional[List[str]] = None,
                  output_names: Optional[List[str]] = None,
                  **unused) -> metric_types.MetricComputations:
  del name, eval_config, output_names, unused
  # TFMA unwraps a single-output model's dict: the prediction is the scores array itself.
  return per_model_computations(
      all_metric_names(cutoffs), functools.partial(group_metrics, cutoffs=tuple(cutoffs)),
      functools.partial(means, tuple(cutoffs)), model_names)


class RankerMetrics(tfma.metrics.Metric):
  """NDCG@10, MRR, precision@k and recall@k (k = 1, 5, 10) averaged over query groups."""

  def __init__(self, cutoffs: Sequence[int] = CUTOFFS, name: str = "ranking"):
    super().__init__(_computations, cutoffs=list(cutoffs), name=name)
