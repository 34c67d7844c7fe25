"""What a run did, read back from ML Metadata and the evaluators' artifacts, and its text.

Each stage (`pipeline_def.stages`) is found by the ids of its nodes: the evaluator's
ModelEvaluation and ModelBlessing, the pusher's PushedModel. The retriever's outcome sits at the
top level of the run summary; every other stage's under its model name.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import tensorflow as tf
from tfx.orchestration import metadata

from pipeline import pipeline_def
from pipeline.components import cross_encoder_evaluator
from pipeline.components.retrieval_evaluator import REPORT as RETRIEVAL_REPORT
from pipeline.config import PipelineConfig
from pipeline.pipeline_def import BANDIT_STAGE, CROSS_ENCODER_STAGE, Stage


def _latest_output(store, pipeline_name: str, node_id: str, type_name: str):
  """The newest artifact of a type attributed to one pipeline node (several nodes write the
  same types: every evaluator writes a ModelBlessing, every pusher a PushedModel)."""
  context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node_id}")
  artifact_type = store.get_artifact_type(type_name) if context else None
  if context is None or artifact_type is None:
    return None
  artifacts = [a for a in store.get_artifacts_by_context(context.id)
               if a.type_id == artifact_type.id]
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
  blessing = _latest_output(store, pipeline_name, stage.evaluator_id, "ModelBlessing")
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


def run_outcome(config: PipelineConfig) -> Dict[str, Any]:
  """The retriever's outcome at the top level; every other stage's under its model name."""
  outcome: Dict[str, Any] = {}
  with metadata.Metadata(metadata.sqlite_metadata_connection_config(config.metadata_path)) as m:
    for stage in pipeline_def.stages(config):
      found = stage_outcome(m.store, config.pipeline_name, stage)
      if stage == pipeline_def.RETRIEVAL_STAGE:
        outcome.update(found)
      else:
        outcome[stage.model_name] = found
  return outcome


def _cross_encoder_lines(outcome: Dict[str, Any]) -> List[str]:
  if "evaluation" not in outcome:
    return []
  metrics = outcome["evaluation"]["metrics"]
  report = cross_encoder_evaluator.REPORT
  lines = ["", "Cross-encoder metrics on the eval query groups, against the retriever's order:"]
  for slice_name in sorted(metrics[cross_encoder_evaluator.CANDIDATE],
                           key=lambda s: (s != "overall", s)):
    lines += [f"[{slice_name}]", report.table(metrics, slice_name)]
  return lines + ["", *outcome["evaluation"]["reasons"],
                  f"report: {outcome['evaluation_report']}",
                  f"cross_encoder blessed: {outcome.get('blessed')}",
                  f"cross_encoder pushed to: {outcome.get('pushed_to') or 'nothing pushed'}"]


def _bandit_lines(outcome: Dict[str, Any]) -> List[str]:
  if "evaluation" not in outcome:
    return []
  return ["", f"bandit policy blessed: {outcome.get('blessed')} "
              f"({outcome['evaluation']['blessing'].get('reason', '')})",
          f"off-policy report: {outcome['evaluation_report']}",
          f"bandit pushed to: {outcome.get('pushed_to') or 'nothing pushed'}"]


def report(summary: Dict[str, Any]) -> str:
  """The human-readable end of a run; its last line is the summary JSON's path."""
  lines = [f"run {summary['run_id']}: {summary['status']} in {summary['seconds']} s"]
  if summary["status"] != "succeeded":
    lines.append(summary["error"])
  if "evaluation" in summary:
    lines += ["", "Retrieval metrics on the eval split (overall):",
              RETRIEVAL_REPORT.table(summary["evaluation"]["metrics"]), ""]
    lines += summary["evaluation"]["reasons"]
    lines.append(f"report: {summary['evaluation_report']}")
  if "blessed" in summary:
    lines.append(f"blessed: {summary['blessed']}")
    lines.append(f"pushed to: {summary.get('pushed_to') or 'nothing pushed'}")
  lines += _cross_encoder_lines(summary.get(CROSS_ENCODER_STAGE.model_name, {}))
  lines += _bandit_lines(summary.get(BANDIT_STAGE.model_name, {}))
  lines.append(summary["summary_path"])
  return "\n".join(lines)
