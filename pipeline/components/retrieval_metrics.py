"""A TFMA metric for retrieval: recall, precision, F1 at k, NDCG@10 and MRR from top-K ids.

TFMA's own top-k metrics need a score for every class; a retrieval model answers with the ids of
its top K items instead. Each eval example has one relevant item (its label): the rank of that
item in the model's `item_ids` output is all these metrics need. Precision@k is hits / k and
recall@k is hits / 1 per example (one relevant item); MRR counts ranks within the model's K.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types

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


@dataclasses.dataclass
class _Accumulator:
  examples: float = 0.0
  hits: Dict[int, float] = dataclasses.field(default_factory=dict)
  dcg: float = 0.0
  reciprocal_rank: float = 0.0


class _RankCombiner(beam.CombineFn):
  """Sums per-example hits, DCG and reciprocal ranks; turns them into the metrics at the end."""

  def __init__(self, keys: Dict[str, metric_types.MetricKey], model_name: str,
               cutoffs: Sequence[int]):
    self._keys = keys
    self._model_name = model_name
    self._cutoffs = tuple(cutoffs)

  def create_accumulator(self) -> _Accumulator:
    return _Accumulator(hits={k: 0.0 for k in self._cutoffs})

  def add_input(self, acc: _Accumulator, element: metric_types.StandardMetricInputs
                ) -> _Accumulator:
    predictions = element.get_predictions(model_name=self._model_name)
    rank = label_rank(element.get_labels(model_name=self._model_name), predictions[IDS_OUTPUT])
    acc.examples += 1
    if rank is not None:
      for k in self._cutoffs:
        acc.hits[k] += rank <= k
      acc.dcg += 1.0 / math.log2(rank + 1) if rank <= NDCG_CUTOFF else 0.0
      acc.reciprocal_rank += 1.0 / rank
    return acc

  def merge_accumulators(self, accumulators: Iterable[_Accumulator]) -> _Accumulator:
    merged = self.create_accumulator()
    for acc in accumulators:
      merged.examples += acc.examples
      merged.dcg += acc.dcg
      merged.reciprocal_rank += acc.reciprocal_rank
      for k in self._cutoffs:
        merged.hits[k] += acc.hits[k]
    return merged

  def extract_output(self, acc: _Accumulator) -> Dict[metric_types.MetricKey, float]:
    n = max(acc.examples, 1.0)
    values = {"example_count": acc.examples, f"ndcg@{NDCG_CUTOFF}": acc.dcg / n,
              "mrr": acc.reciprocal_rank / n}
    for k in self._cutoffs:
      recall, precision = acc.hits[k] / n, acc.hits[k] / (n * k)
      values[f"recall@{k}"] = recall
      values[f"precision@{k}"] = precision
      values[f"f1@{k}"] = (2 * precision * recall / (precision + recall)
                           if precision + recall else 0.0)
    return {self._keys[name]: value for name, value in values.items()}


def per_model_computations(names: Sequence[str],
                           make_combiner: Callable[[Dict[str, metric_types.MetricKey], str],
                                                   beam.CombineFn],
                           model_names: Optional[List[str]]) -> metric_types.MetricComputations:
  """One computation per model, its combiner producing every metric in `names`."""
  computations = []
  for model_name in model_names or [""]:
    keys = {metric: metric_types.MetricKey(name=metric, model_name=model_name)
            for metric in names}
    computations.append(metric_types.MetricComputation(
        keys=list(keys.values()), preprocessors=None, combiner=make_combiner(keys, model_name)))
  return computations


def _computations(cutoffs: Sequence[int] = CUTOFFS, name: str = "retrieval",
                  eval_config: Optional[tfma.EvalConfig] = None,
                  model_names: Optional[List[str]] = None,
                  output_names: Optional[List[str]] = None,
                  **unused) -> metric_types.MetricComputations:
  del name, eval_config, output_names, unused
  return per_model_computations(
      metric_names(cutoffs), lambda keys, model: _RankCombiner(keys, model, cutoffs), model_names)


class RetrievalMetrics(tfma.metrics.Metric):
  """recall@k, precision@k, F1@k for each cutoff, NDCG@10 and MRR of a top-K retrieval model."""

  def __init__(self, cutoffs: Sequence[int] = CUTOFFS, name: str = "retrieval"):
    super().__init__(_computations, cutoffs=list(cutoffs), name=name)
