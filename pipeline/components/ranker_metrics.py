"""A TFMA metric for re-ranking: NDCG@10, MRR, precision@k and recall@k per query group.

Each evaluated example is one query group (`trainer/ranker_examples.py`): its labels are the
candidates' relevance, the model's prediction is a score per candidate. TFMA's own ranking
metrics want one example per (query, candidate) row and a query key; a group per example keeps
the model's `evaluation` signature batched over whole groups, so the metric is custom, and its
per-group definitions are the ones the trainer's early stopping uses
(`trainer/ranker_group_metrics.py`).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Optional, Sequence

import apache_beam as beam
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types

from pipeline.components.retrieval_metrics import per_model_computations
from trainer.ranker_group_metrics import CUTOFFS, GROUP_COUNT, group_metrics, metric_names



def all_metric_names(cutoffs: Sequence[int] = CUTOFFS) -> List[str]:
  return metric_names(cutoffs) + [GROUP_COUNT]


@dataclasses.dataclass
class _Accumulator:
  groups: float = 0.0
  totals: Dict[str, float] = dataclasses.field(default_factory=dict)


class _GroupCombiner(beam.CombineFn):
  """Sums per-group metrics over groups that have a relevant candidate; averages at the end."""

  def __init__(self, keys: Dict[str, metric_types.MetricKey], model_name: str,
               cutoffs: Sequence[int]):
    self._keys = keys
    self._model_name = model_name
    self._cutoffs = tuple(cutoffs)

  def create_accumulator(self) -> _Accumulator:
    return _Accumulator(totals=dict.fromkeys(metric_names(self._cutoffs), 0.0))

  def add_input(self, acc: _Accumulator, element: metric_types.StandardMetricInputs
                ) -> _Accumulator:
    # TFMA unwraps a single-output model's dict: the prediction is the scores array itself.
    values = group_metrics(element.get_labels(model_name=self._model_name),
                           element.get_predictions(model_name=self._model_name), self._cutoffs)
    if values is not None:
      acc.groups += 1
      for name, value in values.items():
        acc.totals[name] += value
    return acc

  def merge_accumulators(self, accumulators: Iterable[_Accumulator]) -> _Accumulator:
    merged = self.create_accumulator()
    for acc in accumulators:
      merged.groups += acc.groups
      for name, value in acc.totals.items():
        merged.totals[name] += value
    return merged

  def extract_output(self, acc: _Accumulator) -> Dict[metric_types.MetricKey, float]:
    values = {name: total / max(acc.groups, 1.0) for name, total in acc.totals.items()}
    values[GROUP_COUNT] = acc.groups
    return {self._keys[name]: value for name, value in values.items()}


def _computations(cutoffs: Sequence[int] = CUTOFFS, name: str = "ranking",
                  eval_config: Optional[tfma.EvalConfig] = None,
                  model_names: Optional[List[str]] = None,
                  output_names: Optional[List[str]] = None,
                  **unused) -> metric_types.MetricComputations:
  del name, eval_config, output_names, unused
  return per_model_computations(
      all_metric_names(cutoffs), lambda keys, model: _GroupCombiner(keys, model, cutoffs),
      model_names)


class RankerMetrics(tfma.metrics.Metric):
  """NDCG@10, MRR, precision@k and recall@k (k = 1, 5, 10) averaged over query groups."""

  def __init__(self, cutoffs: Sequence[int] = CUTOFFS, name: str = "ranking"):
    super().__init__(_computations, cutoffs=list(cutoffs), name=name)
