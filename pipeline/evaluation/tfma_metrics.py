"""The project's TFMA metrics: retrieval (top-K ids against one relevant item), cross-encoder
re-ranking (scores over a query group's candidates) and the cascade's per-user lists.

TFMA's stock metrics cannot read a retrieval model's top-K ids, a cross-encoder's query groups
or a user's ranked list, so all are custom, and all have the same shape: one computation per model whose
combiner sums per-example values and turns the sums into metrics at the end. The definitions
live with their models (`trainer/retrieval/metrics.py`, `trainer/cross_encoder/metrics.py`);
this module only adapts them to TFMA.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types

from trainer.cross_encoder import metrics as group_metrics
from trainer.ranker import metrics as user_list_metrics
from trainer.retrieval import metrics as retrieval_metrics

Values = Mapping[str, float]
# (labels, predictions) of one example -> the values to sum, or None to skip the example.
ExampleValues = Callable[[Any, Any], Optional[Values]]
# (examples counted, sums) -> {metric name: value}.
Finish = Callable[[float, Dict[str, float]], Dict[str, float]]


@dataclasses.dataclass
class Sums:
  count: float = 0.0
  totals: Dict[str, float] = dataclasses.field(default_factory=dict)


class SumCombiner(beam.CombineFn):
  """Sums `example_values` over one model's examples; `finish` makes the metrics."""

  def __init__(self, keys: Dict[str, metric_types.MetricKey], model_name: str,
               example_values: ExampleValues, finish: Finish):
    self._keys = keys
    self._model_name = model_name
    self._example_values = example_values
    self._finish = finish

  def create_accumulator(self) -> Sums:
    return Sums()

  def add_input(self, acc: Sums, element: metric_types.StandardMetricInputs) -> Sums:
    values = self._example_values(element.get_labels(model_name=self._model_name),
                                  element.get_predictions(model_name=self._model_name))
    if values is not None:
      acc.count += 1
      for name, value in values.items():
        acc.totals[name] = acc.totals.get(name, 0.0) + value
    return acc

  def merge_accumulators(self, accumulators: Iterable[Sums]) -> Sums:
    merged = Sums()
    for acc in accumulators:
      merged.count += acc.count
      for name, value in acc.totals.items():
        merged.totals[name] = merged.totals.get(name, 0.0) + value
    return merged

  def extract_output(self, acc: Sums) -> Dict[metric_types.MetricKey, float]:
    return {self._keys[name]: value for name, value in self._finish(acc.count, acc.totals).items()}


def per_model_computations(names: Sequence[str], example_values: ExampleValues, finish: Finish,
                           model_names: Optional[List[str]]) -> metric_types.MetricComputations:
  """One computation per model, its combiner producing every metric in `names`."""
  computations = []
  for model_name in model_names or [""]:
    keys = {metric: metric_types.MetricKey(name=metric, model_name=model_name)
            for metric in names}
    computations.append(metric_types.MetricComputation(
        keys=list(keys.values()), preprocessors=None,
        combiner=SumCombiner(keys, model_name, example_values, finish)))
  return computations


def _retrieval_computations(cutoffs: Sequence[int] = retrieval_metrics.CUTOFFS,
                            model_names: Optional[List[str]] = None,
                            **unused) -> metric_types.MetricComputations:
  del unused  # name, eval_config, output_names: TFMA passes them to every metric
  cutoffs = tuple(cutoffs)
  return per_model_computations(retrieval_metrics.metric_names(cutoffs),
                                functools.partial(retrieval_metrics.example_values, cutoffs),
                                functools.partial(retrieval_metrics.finish, cutoffs), model_names)


class RetrievalMetrics(tfma.metrics.Metric):
  """recall@k, precision@k, F1@k for each cutoff, NDCG@10 and MRR of a top-K retrieval model."""

  def __init__(self, cutoffs: Sequence[int] = retrieval_metrics.CUTOFFS,
               name: str = "retrieval"):
    super().__init__(_retrieval_computations, cutoffs=list(cutoffs), name=name)


def _group_computations(cutoffs: Sequence[int] = group_metrics.CUTOFFS,
                        model_names: Optional[List[str]] = None,
                        **unused) -> metric_types.MetricComputations:
  del unused
  cutoffs = tuple(cutoffs)
  # TFMA unwraps a single-output model's dict: the prediction is the scores array itself.
  return per_model_computations(
      group_metrics.all_metric_names(cutoffs),
      functools.partial(group_metrics.group_metrics, cutoffs=cutoffs),
      functools.partial(group_metrics.means, cutoffs), model_names)


class GroupRankingMetrics(tfma.metrics.Metric):
  """NDCG@10, MRR, precision@k and recall@k (k = 1, 5, 10) averaged over query groups."""

  def __init__(self, cutoffs: Sequence[int] = group_metrics.CUTOFFS, name: str = "ranking"):
    super().__init__(_group_computations, cutoffs=list(cutoffs), name=name)


def _stored_list_values(labels: Any, ranked: Any) -> Optional[Dict[str, float]]:
  """One user's metrics from the relevant ids (labels) and a ranked id list (prediction)."""
  decode = lambda values: [v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
                           for v in np.asarray(values).reshape(-1)]
  return user_list_metrics.user_metrics([i for i in decode(ranked) if i], set(decode(labels)))


def _user_list_computations(model_names: Optional[List[str]] = None,
                            **unused) -> metric_types.MetricComputations:
  del unused
  return per_model_computations(user_list_metrics.metric_names() + [user_list_metrics.USER_COUNT],
                                _stored_list_values, user_list_metrics.means, model_names)


class UserListMetrics(tfma.metrics.Metric):
  """MAP, NDCG@10, precision@10, recall@10 and recall@100 of one ranked list per user (the
  cascade's or a single source's), averaged over users."""

  def __init__(self, name: str = "user_lists"):
    super().__init__(_user_list_computations, name=name)
