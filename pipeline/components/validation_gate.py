"""Halts the run before Transform when ExampleValidator found anomalies, or the newest span
drifted from the one before.

TFX's ExampleValidator only records anomalies; nothing downstream stops on them. This gate turns
them into an error that names each anomaly, its split, and the raw files the feature comes from,
and writes the statistics and anomalies as HTML (TFDV's renderer) and JSON for a person to open.
"""

import json
import os
from typing import Dict, List

import tensorflow as tf
from tensorflow_data_validation import constants
from tensorflow_data_validation.utils import anomalies_util, display_util, stats_util
from tfx import v1 as tfx
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils

from pipeline.components import drift
from pipeline.components.artifacts import ValidationReport
from pipeline.data import contract, parsing
from transform import features as F


DRIFT_REPORT = "drift.json"


class DataValidationError(RuntimeError):
  """The input data has anomalies against the curated schema; nothing was trained or pushed."""


def split_anomalies(anomalies_uri: str, split_names: List[str]) -> Dict[str, List[Dict[str, str]]]:
  """{split: [{feature, short, description}]} from ExampleValidator's SchemaDiff.pb files."""
  found: Dict[str, List[Dict[str, str]]] = {}
  for split in split_names:
    path = os.path.join(anomalies_uri, f"Split-{split}", "SchemaDiff.pb")
    anomalies = anomalies_util.load_anomalies_binary(path)
    found[split] = [{"feature": name, "short": info.short_description,
                     "description": info.description}
                    for name, info in sorted(anomalies.anomaly_info.items())]
    if anomalies.HasField("dataset_anomaly_info"):
      info = anomalies.dataset_anomaly_info
      found[split].append({"feature": "(dataset)", "short": info.short_description,
                           "description": info.description})
  return found


# Rows quoted for an out-of-scale rating.
MAX_RATING_ROWS = 20


def out_of_scale_ratings(data_root: str, rating_scale: str, limit: int = MAX_RATING_ROWS
                         ) -> List[str]:
  """The first `limit` interaction rows whose rating is outside the scale, by file and line.

  TFDV names the feature, not the rows; this streams the interactions (only on this failure
  path) until it has found `limit` of them."""
  low, high = contract.parse_scale(rating_scale.strip("[]"))
  found: List[str] = []
  for path in parsing.list_table_files(data_root, contract.INTERACTIONS):
    for row in parsing.iter_file_rows(path, contract.INTERACTIONS):
      if isinstance(row, parsing.RowError) or row["rating"] is None:
        continue  # Rows the ExampleGen skipped.
      if not low <= row["rating"] <= high:
        found.append(f"{row[contract.SOURCE_FIELD]}: column 'rating' value {row['rating']:g}")
        if len(found) >= limit:
          return found
  return found


def describe(found: Dict[str, List[Dict[str, str]]], data_root: str,
             rating_scale: str = "") -> str:
  """A message that names every anomaly and the raw files its feature is read from (and, for
  the rating, the configured scale, the flag that sets it, and the first rows outside it)."""
  lines = []
  rating_rows = None
  for split, items in found.items():
    for item in items:
      table = F.SOURCE_TABLE.get(item["feature"])
      files = ", ".join(parsing.list_table_files(data_root, table)) if table else "(derived)"
      lines.append(f"  [{split}] {item['feature']}: {item['short']}: {item['description']} "
                   f"(from {table or 'the join'} files: {files})")
      if item["feature"] == F.RATING and rating_scale:
        lines[-1] += (f"; the configured rating scale is {rating_scale}, set another with "
                      f"{contract.RATING_SCALE_FLAG}")
        if rating_rows is None:  # Once, however many splits report it.
          rating_rows = out_of_scale_ratings(data_root, rating_scale)
          lines.extend(f"      {where}" for where in rating_rows)
  return "\n".join(lines)


@tfx.dsl.components.component
def ValidationGate(  # pylint: disable=invalid-name
    statistics: tfx.dsl.components.InputArtifact[standard_artifacts.ExampleStatistics],
    anomalies: tfx.dsl.components.InputArtifact[standard_artifacts.ExampleAnomalies],
    schema: tfx.dsl.components.InputArtifact[standard_artifacts.Schema],
    report: tfx.dsl.components.OutputArtifact[ValidationReport],
    data_root: tfx.dsl.components.Parameter[str],
    rating_scale: tfx.dsl.components.Parameter[str] = "",
    drift_features: tfx.dsl.components.Parameter[str] = "",
    drift_threshold: tfx.dsl.components.Parameter[float] = 0.5,
    drift_min_span_rows: tfx.dsl.components.Parameter[int] = 500,
) -> None:
  """Writes the reports, then raises DataValidationError if any split has anomalies, or if the
  newest span drifted from the one before (pipeline/components/drift.py)."""
  split_names = artifact_utils.decode_split_names(anomalies.split_names)
  found = split_anomalies(anomalies.uri, split_names)
  tf.io.gfile.makedirs(report.uri)
  stats_splits = artifact_utils.decode_split_names(statistics.split_names)
  for split in stats_splits:
    stats = stats_util.get_slice_stats(stats_util.load_stats_binary(
        os.path.join(statistics.uri, f"Split-{split}", "FeatureStats.pb")),
        constants.DEFAULT_SLICE_KEY)
    with tf.io.gfile.GFile(os.path.join(report.uri, f"statistics_{split}.html"), "w") as f:
      f.write(display_util.get_statistics_html(stats))
  with tf.io.gfile.GFile(os.path.join(report.uri, "anomalies.json"), "w") as f:
    json.dump(found, f, indent=2)
  with tf.io.gfile.GFile(os.path.join(report.uri, "anomalies.html"), "w") as f:
    rows = "".join(f"<tr><td>{s}</td><td>{i['feature']}</td><td>{i['short']}</td>"
                   f"<td>{i['description']}</td></tr>" for s, items in found.items() for i in items)
    rows = rows or "<tr><td colspan=4>none</td></tr>"
    f.write("<html><body><h1>Data anomalies</h1><table border=1><tr><th>split</th>"
            f"<th>feature</th><th>anomaly</th><th>detail</th></tr>{rows}</table></body></html>")
  report.set_int_custom_property("anomaly_count", sum(len(v) for v in found.values()))
  if any(found.values()):
    raise DataValidationError(
        f"input data under {data_root} has anomalies against the curated schema; the run stops "
        f"before Transform and nothing is trained or pushed (report: {report.uri}):\n"
        + describe(found, data_root, rating_scale))
  settings = drift.DriftSettings.parse(drift_features, drift_threshold, drift_min_span_rows)
  curated = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(schema.uri))
  compared = drift.check(statistics.uri, stats_splits, curated, settings)
  with tf.io.gfile.GFile(os.path.join(report.uri, DRIFT_REPORT), "w") as f:
    json.dump(compared, f, indent=2)
  if any(result["drifted"] for result in compared):
    raise DataValidationError(
        f"the newest span under {data_root} drifted from the span before it; the run stops "
        f"before Transform and nothing is trained or pushed (report: "
        f"{os.path.join(report.uri, DRIFT_REPORT)}). If the change is expected, raise "
        f"--drift_threshold or leave the feature out of --drift_features:\n"
        + drift.describe(compared))
