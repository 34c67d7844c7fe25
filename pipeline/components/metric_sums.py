"""What the retrieval and ranker TFMA metrics share: per-model computations whose combiner sums
per-example values and turns the sums into metrics at the end.

TFMA's stock metrics cannot read a retrieval model's top-K ids or a ranker's query groups, so
both metrics are custom; only what each sums per example, and how sums become metrics, differ.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import apache_beam as beam
from tensorflow_model_analysis.metrics import metric_types

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
