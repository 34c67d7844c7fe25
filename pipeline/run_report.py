"""What a run did, read back from ML Metadata and the evaluators' artifacts, and its text.

Each stage (`pipeline_def.stages`) is found by the ids of its nodes: the evaluator's
ModelEvaluation and ModelBlessing, the pusher's PushedModel. The retriever's outcome sits at the
top level of the run summary; every other stage's under its model name.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata

from pipeline import pipeline_def
from pipeline.config import PipelineConfig
from pipeline.evaluation.report import OVERALL
from pipeline.pipeline_def import CROSS_ENCODER_STAGE, Stage


def _latest_output(store, pipeline_name: str, node_id: str, type_name: str,
                   output_key: Optional[str] = None):
  """The newest artifact of a type that one pipeline node output (under `output_key`, when
  given: the ranker's evaluator writes two ModelBlessings); several nodes write the same
  types: every evaluator writes a ModelBlessing, every pusher a PushedModel."""
  context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node_id}")
  artifact_type = store.get_artifact_type(type_name) if context else None
  if context is None or artifact_type is None:
    return None
  artifacts = [a for a in store.get_artifacts_by_context(context.id)
               if a.type_id == artifact_type.id]
  if output_key is not None and artifacts:
    keyed = {event.artifact_id for event in store.get_events_by_artifact_ids(
        [a.id for a in artifacts])
             if event.type == metadata_store_pb2.Event.OUTPUT
             and event.path.steps and event.path.steps[0].key == output_key}
    artifacts = [a for a in artifacts if a.id in keyed]
  return max(artifacts, key=lambda a: a.id) if artifacts else None


def _property(artifact, name: str):
  value = artifact.custom_properties.get(name)
  if value is None:
    return None
  return value.string_value or value.int_value


def stage_outcome(store, pipeline_name: str, stage: Stage) -> Dict[str, Any]:
  """Evaluation, blessing and push of one stage's model."""
  outcome: Dict[str, Any] = {}
  evaluation = _latest_output(store, pipeline_name, stage.evaluator_id, "ModelEvaluation")
  blessing = _latest_output(store, pipeline_name, stage.evaluator_id, "ModelBlessing",
                            stage.blessing_key)
  pushed = _latest_output(store, pipeline_name, stage.pusher_id, "PushedModel")
  if evaluation is not None:
    with tf.io.gfile.GFile(os.path.join(evaluation.uri, stage.report_json)) as f:
      outcome["evaluation"] = json.load(f)
    outcome["evaluation_report"] = os.path.join(evaluation.uri, stage.report_html)
  if blessing is not None:
    outcome["blessed"] = _property(blessing, "blessed") == 1
    outcome["model"] = _property(blessing, "current_model")
  if pushed is not None:
    outcome["pushed"] = _property(pushed, "pushed") == 1
    outcome["pushed_to"] = _property(pushed, "pushed_destination") if outcome["pushed"] else None
  return outcome


def invalid_rows(store, pipeline_name: str) -> Optional[Dict[str, Any]]:
  """The bad rows the ExampleGen skipped (--invalid_rows skip): counts per kind and the
  report's path (interaction_example_gen.py INVALID_ROWS_REPORT)."""
  examples = _latest_output(store, pipeline_name, "InteractionExampleGen", "Examples")
  path = examples and os.path.join(examples.uri, "invalid_rows.json")
  if not path or not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    found = json.load(f)
  return {"skipped": found["invalid_rows"], "rows_read": found["rows_read"], "report": path,
          "kinds": {kind: entry["count"] for kind, entry in found["kinds"].items()}}


def run_outcome(config: PipelineConfig) -> Dict[str, Any]:
  """The retriever's outcome at the top level; every other stage's under its model name."""
  outcome: Dict[str, Any] = {}
  with metadata.Metadata(metadata.sqlite_metadata_connection_config(config.metadata_path)) as m:
    skipped = invalid_rows(m.store, config.pipeline_name)
    if skipped:
      outcome["invalid_rows"] = skipped
    for stage in pipeline_def.stages(config):
      found = stage_outcome(m.store, config.pipeline_name, stage)
      if stage == pipeline_def.RETRIEVAL_STAGE:
        outcome.update(found)
      else:
        outcome[stage.model_name] = found
  return outcome


def _stage_lines(stage: Stage, outcome: Dict[str, Any]) -> List[str]:
  """A stage's metrics beside its baselines (the cross-encoder's per query kind), the blessing
  with its reasons, and where it was pushed."""
  if "evaluation" not in outcome:
    return []
  name = stage.model_name
  if stage.report is None:  # the bandit: its off-policy evaluation has a report of its own
    lines = ["", f"{name} blessed: {outcome.get('blessed')} "
                 f"({outcome['evaluation']['blessing'].get('reason', '')})",
             f"off-policy report: {outcome['evaluation_report']}"]
  else:
    metrics = outcome["evaluation"]["metrics"]
    slices = sorted(next(iter(metrics.values())), key=lambda s: (s != OVERALL, s))
    shown = slices if stage == CROSS_ENCODER_STAGE else [OVERALL]
    lines = ["", f"{stage.report.title} ({name}):"]
    for slice_name in shown:
      lines += [f"[{slice_name}]", stage.report.table(metrics, slice_name)]
    lines += ["", *outcome["evaluation"]["reasons"], f"report: {outcome['evaluation_report']}",
              f"{name} blessed: {outcome.get('blessed')}"]
  return lines + [f"{name} pushed to: {outcome.get('pushed_to') or 'nothing pushed'}"]


def report(summary: Dict[str, Any], stages: Sequence[Stage] = pipeline_def.ALL_STAGES) -> str:
  """The human-readable end of a run; its last line is the summary JSON's path."""
  lines = [f"run {summary['run_id']}: {summary['status']} in {summary['seconds']} s"]
  if summary["status"] != "succeeded":
    lines.append(summary["error"])
  skipped = summary.get("invalid_rows")
  if skipped and skipped["skipped"]:
    kinds = "; ".join(f"{kind}: {count}" for kind, count in skipped["kinds"].items())
    lines.append(f"skipped {skipped['skipped']} invalid row(s) of {skipped['rows_read']} read "
                 f"(--invalid_rows skip): {kinds}; report: {skipped['report']}")
  for stage in stages:
    lines += _stage_lines(stage, summary if stage == pipeline_def.RETRIEVAL_STAGE
                          else summary.get(stage.model_name, {}))
  lines.append(summary["summary_path"])
  return "\n".join(lines)
