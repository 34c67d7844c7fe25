"""Where one run's reports are, read back from ML Metadata: the statistics StatisticsGen wrote,
the ValidationGate's reports (its copies in the run folder first: a failed gate's artifact is
deleted; a cached gate wrote none there) and each trainer's TensorBoard logs.

Only this run's outputs count (those of its `pipeline_run` context, which TFX also gives the
outputs a cached execution reuses), never an earlier run's that this one did not reach."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
from ml_metadata import errors
from ml_metadata.proto import metadata_store_pb2
from tfx.dsl.compiler import constants
from tfx.orchestration import metadata
from tfx.types import artifact_utils

from pipeline import pipeline_def
from pipeline.components.artifacts import ValidationReport
from pipeline.config import PipelineConfig


@dataclasses.dataclass
class RunFiles:
  """What the run page reads besides the summary (None / empty where the run got no output)."""
  statistics_uri: Optional[str] = None
  statistics_splits: List[str] = dataclasses.field(default_factory=list)
  # Folders with the gate's reports, the first that has a report wins.
  validation_dirs: List[str] = dataclasses.field(default_factory=list)
  tensorboard: Dict[str, str] = dataclasses.field(default_factory=dict)  # stage -> log folder

  def validation_json(self, name: str) -> Optional[Any]:
    """A JSON report of the gate (anomalies, drift), from the first folder that has it."""
    for folder in self.validation_dirs:
      path = os.path.join(folder, name)
      if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
          return json.load(f)
    return None

  def validation_report(self, name: str) -> Optional[str]:
    return next((os.path.join(folder, name) for folder in self.validation_dirs
                 if tf.io.gfile.exists(os.path.join(folder, name))), None)


def _run_output(store, pipeline_name: str, run_id: str, node_id: str, type_name: str):
  """The newest live artifact of a type that a node output in this run (None if none)."""
  run = store.get_context_by_type_and_name(constants.PIPELINE_RUN_CONTEXT_TYPE_NAME, run_id)
  node = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node_id}")
  if run is None or node is None:
    return None
  try:
    artifact_type = store.get_artifact_type(type_name)
  except errors.NotFoundError:  # no run has written one yet (a failed gate publishes nothing)
    return None
  in_run = {a.id for a in store.get_artifacts_by_context(run.id)}
  found = [a for a in store.get_artifacts_by_context(node.id)
           if a.id in in_run and a.type_id == artifact_type.id
           and a.state == metadata_store_pb2.Artifact.LIVE]
  return max(found, key=lambda a: a.id) if found else None


def locate(config: PipelineConfig, run_id: str, run_dir: str) -> RunFiles:
  found = RunFiles(validation_dirs=[run_dir])
  if not tf.io.gfile.exists(config.metadata_path):
    return found
  with metadata.Metadata(metadata.sqlite_metadata_connection_config(config.metadata_path)) as m:
    output = lambda node_id, type_name: _run_output(  # noqa: E731
        m.store, config.pipeline_name, run_id, node_id, type_name)
    statistics = output("StatisticsGen", "ExampleStatistics")
    if statistics is not None:
      found.statistics_uri = statistics.uri
      found.statistics_splits = artifact_utils.decode_split_names(
          statistics.properties["split_names"].string_value)
    report = output("ValidationGate", ValidationReport.TYPE_NAME)
    if report is not None:
      found.validation_dirs.append(report.uri)
    for stage in pipeline_def.stages(config):
      model_run = output(stage.trainer_id, "ModelRun")
      if model_run is not None:
        found.tensorboard[stage.model_name] = model_run.uri
  return found
