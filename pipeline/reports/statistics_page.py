"""The data statistics of each split, side by side, rendered here rather than by TFDV's
`get_statistics_html`, whose page loads Facets from a CDN and is blank offline.

Per feature: its type, and per split the examples that have it, the share that miss it, and one
plot over the splits (a numeric feature's histogram, a categorical one's top values, as shares so
that a small eval split compares with a large train split). Statistics are sliced by span
(`pipeline/components/drift.py` STATS_OPTIONS); this shows the default, unsliced slice.
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, Mapping

from tensorflow_data_validation import constants
from tensorflow_data_validation.utils import stats_util
from tensorflow_metadata.proto.v0 import statistics_pb2

from pipeline.reports import html, plots

SplitStatistics = Mapping[str, statistics_pb2.DatasetFeatureStatistics]
# Categorical values shown per feature (by their share in the first split).
TOP_VALUES = 10
_NO_NUMBERS = statistics_pb2.NumericStatistics()


def load_default_slices(statistics_uri: str, split_names: List[str]
                        ) -> Dict[str, statistics_pb2.DatasetFeatureStatistics]:
  """{split: its unsliced statistics} from a StatisticsGen artifact."""
  return {split: stats_util.get_slice_stats(stats_util.load_stats_binary(
      os.path.join(statistics_uri, f"Split-{split}", "FeatureStats.pb")),
      constants.DEFAULT_SLICE_KEY).datasets[0] for split in split_names}


def _name(feature: statistics_pb2.FeatureNameStatistics) -> str:
  return ".".join(feature.path.step) or feature.name


def _features(splits: SplitStatistics) -> Dict[str, Dict[str, stats_util.FeatureView]]:
  """{feature: {split: its view}}, features in the first split's order."""
  found: Dict[str, Dict[str, stats_util.FeatureView]] = {}
  for split, dataset in splits.items():
    for feature in dataset.features:
      found.setdefault(_name(feature), {})[split] = stats_util.FeatureView(feature)
  return found


def _plot(name: str, views: Mapping[str, stats_util.FeatureView]) -> str:
  """The feature's histogram or top values over the splits ('' when it has neither)."""
  numeric = {}
  for split, view in views.items():
    standard = [h for h in (view.numeric_statistics() or _NO_NUMBERS).histograms
                if h.type == statistics_pb2.Histogram.STANDARD]
    buckets = [(b.low_value, b.high_value, b.sample_count) for h in standard[:1]
               for b in h.buckets if math.isfinite(b.low_value) and math.isfinite(b.high_value)]
    if buckets:
      numeric[split] = buckets
  if numeric:
    return html.image(plots.histograms(numeric, name), f"{name} histogram")
  shares: Dict[str, Dict[str, float]] = {}
  for split, view in views.items():
    strings = view.string_statistics()
    if strings is None or not strings.top_values:
      continue
    total = strings.common_stats.tot_num_values or sum(v.frequency for v in strings.top_values)
    shares[split] = {v.value: v.frequency / total for v in strings.top_values}
  if not shares:
    return ""
  shown = list(next(iter(shares.values())))[:TOP_VALUES]
  return html.image(plots.grouped_bars(
      {split: {value: found.get(value, 0.0) for value in shown} for split, found in shares.items()},
      f"{name}: top values (share)", horizontal=True, size=(4.5, 2.8)), f"{name} top values")


def section(splits: SplitStatistics) -> str:
  """The statistics as an HTML fragment (a table, one row per feature)."""
  names = list(splits)
  header = ["feature", "type"] + [f"{s} {c}" for s in names for c in ("count", "missing")] + [
      "distribution"]
  rows = []
  for feature, views in _features(splits).items():
    cells: List[object] = [feature, statistics_pb2.FeatureNameStatistics.Type.Name(
        next(iter(views.values())).proto().type)]
    for split in names:
      common = views[split].common_statistics() if split in views else None
      if common is None:
        cells += ["-", "-"]
        continue
      total = common.num_non_missing + common.num_missing
      cells += [common.num_non_missing,
                f"{100 * common.num_missing / total:.1f}%" if total else "-"]
    rows.append(cells + [html.Raw(_plot(feature, views))])
  examples = ", ".join(f"{split}: {dataset.num_examples} examples"
                       for split, dataset in splits.items())
  return f"<p>{html.text(examples)}</p>" + html.table(header, rows)


def page(splits: SplitStatistics) -> str:
  return html.page("Data statistics", section(splits))
