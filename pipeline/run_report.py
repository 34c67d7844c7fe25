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
from pipeline.components.interaction_example_gen import invalid_rows_report_path
from pipeline.config import PipelineConfig
from pipeline.evaluation.blessing import failed_reasons
from pipeline.evaluation.report import OVERALL
from pipeline.pipeline_def import CROSS_ENCODER_STAGE, Stage


def node_outputs(store, pipeline_name: str, node_id: str, type_name: str,
                 output_key: Optional[str] = None) -> List[Any]:
  """The artifacts of a type that one pipeline node output (under `output_key`, when given:
  the ranker's evaluator writes two ModelBlessings); several nodes write the same types: every
  evaluator writes a ModelBlessing, every pusher a PushedModel."""
  context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node_id}")
  artifact_type = store.get_artifact_type(type_name) if context else None
  if context is None or artifact_type is None:
    return []
  artifacts = [a for a in store.get_artifacts_by_context(context.id)
               if a.type_id == artifact_type.id]
  if output_key is not None and artifacts:
    keyed = {event.artifact_id for event in store.get_events_by_artifact_ids(
        [a.id for a in artifacts])
             if event.type == metadata_store_pb2.Event.OUTPUT
             and event.path.steps and event.path.steps[0].key == output_key}
    artifacts = [a for a in artifacts if a.id in keyed]
  return artifacts


def _latest_output(store, pipeline_name: str, node_id: str, type_name: str,
                   output_key: Optional[str] = None):
  """The newest of `node_outputs` (None: the node has none)."""
  artifacts = node_outputs(store, pipeline_name, node_id, type_name, output_key)
  return max(artifacts, key=lambda a: a.id) if artifacts else None


def _sibling_output(store, artifact, type_name: str):
  """The artifact of a type that the execution which output `artifact` also output."""
  [execution_id] = {e.execution_id for e in store.get_events_by_artifact_ids([artifact.id])
                    if e.type == metadata_store_pb2.Event.OUTPUT}
  artifact_type = store.get_artifact_type(type_name)
  ids = [e.artifact_id for e in store.get_events_by_execution_ids([execution_id])
         if e.type == metadata_store_pb2.Event.OUTPUT]
  return next(a for a in store.get_artifacts_by_id(ids) if a.type_id == artifact_type.id)


def _property(artifact, name: str):
  value = artifact.custom_properties.get(name)
  if value is None:
    return None
  return value.string_value or value.int_value


def _judgement(stage: Stage, evaluation, blessing) -> Dict[str, Any]:
  """The evaluator's verdict on one model: its report and its blessing."""
  outcome: Dict[str, Any] = {}
  if evaluation is not None:
    with tf.io.gfile.GFile(os.path.join(evaluation.uri, stage.report_json)) as f:
      outcome["evaluation"] = json.load(f)
    outcome["evaluation_report"] = os.path.join(evaluation.uri, stage.report_html)
  if blessing is not None:
    outcome["blessed"] = _property(blessing, "blessed") == 1
    outcome["model"] = _property(blessing, "current_model")
  return outcome


def model_judgement(store, pipeline_name: str, stage: Stage, model_uri: str) -> Dict[str, Any]:
  """The stage evaluator's newest verdict on the model at `model_uri` ({}: never judged)."""
  blessings = [b for b in node_outputs(store, pipeline_name, stage.evaluator_id,
                                       "ModelBlessing", stage.blessing_key)
               if _property(b, "current_model") == model_uri]
  if not blessings:
    return {}
  blessing = max(blessings, key=lambda a: a.id)
  return _judgement(stage, _sibling_output(store, blessing, "ModelEvaluation"), blessing)


def stage_outcome(store, pipeline_name: str, stage: Stage) -> Dict[str, Any]:
  """Evaluation, blessing and push of one stage's model."""
  outcome = _judgement(
      stage, _latest_output(store, pipeline_name, stage.evaluator_id, "ModelEvaluation"),
      _latest_output(store, pipeline_name, stage.evaluator_id, "ModelBlessing",
                     stage.blessing_key))
  pushed = _latest_output(store, pipeline_name, stage.pusher_id, "PushedModel")
  if pushed is not None:
    outcome["pushed"] = _property(pushed, "pushed") == 1
    outcome["pushed_to"] = _property(pushed, "pushed_destination") if outcome["pushed"] else None
  return outcome


def invalid_rows(store, pipeline_name: str) -> Optional[Dict[str, Any]]:
  """The bad rows the ExampleGen skipped (--invalid_rows skip): counts per kind and the
  report's path (interaction_example_gen.invalid_rows_report_path)."""
  examples = _latest_output(store, pipeline_name, "InteractionExampleGen", "Examples")
  path = examples and invalid_rows_report_path(examples.uri)
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


def evaluation_lines(stage: Stage, outcome: Dict[str, Any]) -> List[str]:
  """A stage's metrics beside its baselines (the cross-encoder's per query kind) and the
  blessing with its reasons."""
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
  return lines


def _stage_lines(stage: Stage, outcome: Dict[str, Any]) -> List[str]:
  """`evaluation_lines`, and where the model was pushed."""
  if "evaluation" not in outcome:
    return []
  return evaluation_lines(stage, outcome) + [
      f"{stage.model_name} pushed to: {outcome.get('pushed_to') or 'nothing pushed'}"]


def _why_not_blessed(stage: Stage, outcome: Dict[str, Any]) -> str:
  evaluation = outcome["evaluation"]
  if stage.report is None:  # the bandit: one reason
    return evaluation["blessing"].get("reason", "")
  return "; ".join(failed_reasons(evaluation["reasons"])) or "; ".join(evaluation["reasons"])


def _not_pushed(stage: Stage, outcome: Dict[str, Any], summary: Dict[str, Any]) -> str:
  """Why one stage pushed nothing, and what an operator can do about it."""
  name = stage.model_name
  if outcome.get("blessed"):
    return f"{name} was blessed but not pushed (see {summary.get('log')})"
  change = f"change {stage.gate_flags}, or " if stage.gate_flags else ""
  return (f"{name} not blessed ({_why_not_blessed(stage, outcome)}): {change}push it anyway "
          f"with python -m pipeline.push_model --output_root {summary.get('output_root')} "
          f"--stage {name} --run_id {summary['run_id']}")


def outcome_line(summary: Dict[str, Any], stages: Sequence[Stage]) -> str:
  """The run's last line: what was pushed, or why nothing was and what to do."""
  if summary["status"] != "succeeded":
    cause = (summary.get("error") or "").strip().splitlines()
    return (f"nothing pushed: the run failed: {cause[0] if cause else 'no error text'}; "
            f"full log: {summary.get('log')}")
  pushed, held = [], []
  for stage in stages:
    outcome = summary if stage == pipeline_def.RETRIEVAL_STAGE else summary.get(
        stage.model_name, {})
    if "evaluation" not in outcome:
      continue
    if outcome.get("pushed_to"):
      unchanged = (" (unchanged: already there)" if stage.pusher_id in
                   summary.get("cached_components", ()) else "")
      pushed.append(f"{stage.model_name} version {os.path.basename(outcome['pushed_to'])} "
                    f"to {os.path.dirname(outcome['pushed_to'])}{unchanged}")
    else:
      held.append(_not_pushed(stage, outcome, summary))
  parts = ([f"pushed {', '.join(pushed)}"] if pushed else ["nothing pushed"]) + held
  return "; ".join(parts)


def report(summary: Dict[str, Any], stages: Sequence[Stage] = pipeline_def.ALL_STAGES) -> str:
  """The human-readable end of a run: the run page to open, the summary JSON's path, then
  `outcome_line`."""
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
  if summary.get("page"):
    lines.append(f"run page (opens offline): {summary['page']}")
  lines += [summary["summary_path"], outcome_line(summary, stages)]
  return "\n".join(lines)
