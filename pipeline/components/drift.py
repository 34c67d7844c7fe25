"""Drift between the newest span and the one before it, by TFDV's comparators.

StatisticsGen slices its statistics by the examples' `span` feature (`STATS_OPTIONS`), which
only the rows of the window's two newest spans carry, so the newest span's distribution can be
compared with the previous span's inside each split, at the cost of one statistics pass and two
slices. A categorical feature is compared by TFDV's L-infinity distance (the
largest change in any value's share), a numeric one by its Jensen-Shannon divergence. A distance
past the threshold halts the run (ValidationGate) with this report; spans with too few examples
in a split are not compared there, and say so.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

import tensorflow_data_validation as tfdv
from tensorflow_data_validation import constants
from tensorflow_data_validation.utils import stats_util
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2
from tfx_bsl.public.proto import slicing_spec_pb2

from transform import features as F

# StatisticsGen's options: the default slice (what ExampleValidator checks) and one per span
# that carries its span (the two newest).
STATS_OPTIONS = tfdv.StatsOptions(slicing_config=slicing_spec_pb2.SlicingConfig(
    slicing_specs=[slicing_spec_pb2.SlicingSpec(feature_keys=[F.SPAN])]))
_SLICE_PREFIX = f"{F.SPAN}_"


@dataclasses.dataclass(frozen=True)
class DriftSettings:
  """Which features are compared, the distance past which the run halts, and the fewest
  examples a span needs in a split to be judged there."""
  features: Tuple[str, ...] = (F.ITEM_ID,)
  threshold: float = 0.5
  min_span_rows: int = 500

  @classmethod
  def parse(cls, features: str, threshold: float, min_span_rows: int) -> "DriftSettings":
    return cls(tuple(name.strip() for name in features.split(",") if name.strip()),
               threshold, min_span_rows)


def span_slices(statistics: statistics_pb2.DatasetFeatureStatisticsList
                ) -> Dict[str, statistics_pb2.DatasetFeatureStatistics]:
  """{span date: its statistics}, from a list sliced by STATS_OPTIONS."""
  return {dataset.name[len(_SLICE_PREFIX):]: dataset for dataset in statistics.datasets
          if dataset.name.startswith(_SLICE_PREFIX)}


def _as_list(dataset: statistics_pb2.DatasetFeatureStatistics
             ) -> statistics_pb2.DatasetFeatureStatisticsList:
  result = statistics_pb2.DatasetFeatureStatisticsList()
  result.datasets.add().CopyFrom(dataset)
  result.datasets[0].name = constants.DEFAULT_SLICE_KEY  # validate_statistics wants one
  return result


def _comparing_schema(schema: schema_pb2.Schema, settings: DriftSettings) -> schema_pb2.Schema:
  """The schema with a drift comparator on each compared feature (by its type)."""
  schema = schema_pb2.Schema.FromString(schema.SerializeToString())
  names = {feature.name: feature for feature in schema.feature}
  for name in settings.features:
    if name not in names:
      raise ValueError(f"drift feature {name!r} is not in the schema; features: "
                       f"{', '.join(sorted(names))}")
    comparator = names[name].drift_comparator
    if names[name].type in (schema_pb2.INT, schema_pb2.FLOAT):
      comparator.jensen_shannon_divergence.threshold = settings.threshold
    else:
      comparator.infinity_norm.threshold = settings.threshold
  return schema


def compare_spans(statistics: statistics_pb2.DatasetFeatureStatisticsList, split: str,
                  schema: schema_pb2.Schema, settings: DriftSettings) -> Optional[Dict[str, Any]]:
  """The newest span against the previous one in one split's statistics (None: fewer than two
  spans, nothing to compare)."""
  slices = span_slices(statistics)
  if len(slices) < 2:
    return None
  previous, newest = sorted(slices)[-2:]
  rows = {span: slices[span].num_examples for span in (previous, newest)}
  result: Dict[str, Any] = {"split": split, "newest": newest, "previous": previous,
                            "rows": rows, "features": {}, "drifted": []}
  if min(rows.values()) < settings.min_span_rows:
    result["skipped"] = (f"fewer than {settings.min_span_rows} examples in a span "
                         "(--drift_min_span_rows)")
    return result
  anomalies = tfdv.validate_statistics(
      _as_list(slices[newest]), _comparing_schema(schema, settings),
      previous_statistics=_as_list(slices[previous]))
  for info in anomalies.drift_skew_info:
    name = ".".join(info.path.step)
    for measurement in info.drift_measurements:
      drifted = measurement.value > measurement.threshold
      result["features"][name] = {
          "distance": measurement.value, "threshold": measurement.threshold,
          "measure": type(measurement).Type.Name(measurement.type), "drifted": drifted,
          "detail": anomalies.anomaly_info[name].description
          if drifted and name in anomalies.anomaly_info else ""}
      if drifted:
        result["drifted"].append(name)
  return result


def check(statistics_uri: str, split_names: List[str], schema: schema_pb2.Schema,
          settings: DriftSettings) -> List[Dict[str, Any]]:
  """Every split's comparison (see compare_spans); empty when the data has no spans or no
  feature is compared."""
  if not settings.features:
    return []
  results = []
  for split in split_names:
    statistics = stats_util.load_stats_binary(
        os.path.join(statistics_uri, f"Split-{split}", "FeatureStats.pb"))
    result = compare_spans(statistics, split, schema, settings)
    if result is not None:
      results.append(result)
  return results


def describe(results: List[Dict[str, Any]]) -> str:
  """One line per drifted feature and split, with its distance and the threshold."""
  return "\n".join(
      f"  [{result['split']}] {name}: {result['features'][name]['measure']} distance "
      f"{result['features'][name]['distance']:.3f} between span {result['newest']} "
      f"({result['rows'][result['newest']]} examples) and {result['previous']} "
      f"({result['rows'][result['previous']]}), threshold {result['features'][name]['threshold']}"
      for result in results for name in result["drifted"])
