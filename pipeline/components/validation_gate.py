"""Halts the run before Transform when ExampleValidator found anomalies, or the newest span
drifted from the one before.

TFX's ExampleValidator only records anomalies; nothing downstream stops on them. This gate turns
them into an error that names each anomaly, its split, and the raw files the feature comes from,
and writes the statistics and anomalies as self-contained HTML (pipeline/reports/) and JSON for a
person to open, into the run folder too, where they outlive the failure they describe.
"""

import json
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
from tensorflow_data_validation.utils import anomalies_util
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils

from pipeline.components import drift
from pipeline.components.artifacts import ValidationReport
from pipeline.data import contract, parsing
from pipeline.reports import anomalies_page, statistics_page
from transform import features as F

# The reports, in the gate's artifact and in the run folder.
STATISTICS_REPORT = "statistics.html"
ANOMALIES_REPORT = "anomalies.html"
ANOMALIES_JSON = "anomalies.json"
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


def _write(folders: List[str], name: str, content: str) -> None:
  for folder in folders:
    with tf.io.gfile.GFile(os.path.join(folder, name), "w") as f:
      f.write(content)


def validate(statistics: types.Artifact, anomalies: types.Artifact, schema: types.Artifact,
             report: types.Artifact, run_folder: Optional[str], data_root: str,
             rating_scale: str, drift_features: str, drift_threshold: float,
             drift_min_span_rows: int) -> None:
  """Writes the reports into the report artifact and the run folder (when given: the one the
  errors name), then raises DataValidationError if any split has anomalies, or if the newest
  span drifted from the one before (pipeline/components/drift.py)."""
  folders = [report.uri] + ([run_folder] if run_folder else [])
  for folder in folders:
    tf.io.gfile.makedirs(folder)
  found = split_anomalies(anomalies.uri, artifact_utils.decode_split_names(anomalies.split_names))
  report.set_int_custom_property("anomaly_count", sum(len(v) for v in found.values()))
  stats_splits = artifact_utils.decode_split_names(statistics.split_names)
  _write(folders, STATISTICS_REPORT,
         statistics_page.page(statistics_page.load_default_slices(statistics.uri, stats_splits)))
  _write(folders, ANOMALIES_JSON, json.dumps(found, indent=2))
  _write(folders, ANOMALIES_REPORT, anomalies_page.page(found))
  if any(found.values()):
    raise DataValidationError(
        f"input data under {data_root} has anomalies against the curated schema; the run stops "
        f"before Transform and nothing is trained or pushed (report: "
        f"{os.path.join(folders[-1], ANOMALIES_REPORT)}):\n"
        + describe(found, data_root, rating_scale))
  settings = drift.DriftSettings.parse(drift_features, drift_threshold, drift_min_span_rows)
  curated = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(schema.uri))
  compared = drift.check(statistics.uri, stats_splits, curated, settings)
  _write(folders, DRIFT_REPORT, json.dumps(compared, indent=2))
  if any(result["drifted"] for result in compared):
    raise DataValidationError(
        f"the newest span under {data_root} drifted from the span before it; the run stops "
        f"before Transform and nothing is trained or pushed (report: "
        f"{os.path.join(folders[-1], DRIFT_REPORT)}). If the change is expected, raise "
        f"--drift_threshold or leave the feature out of --drift_features:\n"
        + drift.describe(compared))


class ValidationGateSpec(types.ComponentSpec):
  PARAMETERS = {
      "data_root": ExecutionParameter(type=str),
      # Where the run folders are (config.runs_dir); "" writes the reports only into the artifact.
      "runs_dir": ExecutionParameter(type=str),
      "rating_scale": ExecutionParameter(type=str),
      "drift_features": ExecutionParameter(type=str),
      "drift_threshold": ExecutionParameter(type=float),
      "drift_min_span_rows": ExecutionParameter(type=int),
  }
  INPUTS = {
      "statistics": ChannelParameter(type=standard_artifacts.ExampleStatistics),
      "anomalies": ChannelParameter(type=standard_artifacts.ExampleAnomalies),
      "schema": ChannelParameter(type=standard_artifacts.Schema),
  }
  OUTPUTS = {"report": ChannelParameter(type=ValidationReport)}


class Executor(base_executor.BaseExecutor):
  """Runs `validate` with the reports also in the run folder, `runs_dir/<pipeline run id>`.

  TFX deletes a failed component's outputs, so the artifact's copy is gone exactly when the
  gate fails; the run folder's stays. The run id comes from the executor's context, not from an
  exec property, so it does not enter the cache key: an identical re-run is still cached."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    run_id = self._context.pipeline_run_id if self._context else None
    runs_dir = exec_properties["runs_dir"]
    validate(*(artifact_utils.get_single_instance(input_dict[key])
               for key in ("statistics", "anomalies", "schema")),
             artifact_utils.get_single_instance(output_dict["report"]),
             os.path.join(runs_dir, run_id) if runs_dir and run_id else None,
             **{key: exec_properties[key] for key in ValidationGateSpec.PARAMETERS
                if key != "runs_dir"})


class ValidationGate(base_component.BaseComponent):
  """Halts the run on anomalies or drift (see the module docstring)."""

  SPEC_CLASS = ValidationGateSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

  def __init__(self, statistics: types.BaseChannel, anomalies: types.BaseChannel,
               schema: types.BaseChannel, data_root: str, runs_dir: str = "",
               rating_scale: str = "", drift_features: str = "", drift_threshold: float = 0.5,
               drift_min_span_rows: int = 500):
    super().__init__(spec=ValidationGateSpec(
        statistics=statistics, anomalies=anomalies, schema=schema, data_root=data_root,
        runs_dir=runs_dir, rating_scale=rating_scale, drift_features=drift_features,
        drift_threshold=drift_threshold, drift_min_span_rows=drift_min_span_rows,
        report=types.Channel(type=ValidationReport)))
