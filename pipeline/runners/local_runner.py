"""Runs the pipeline locally with LocalDagRunner and Beam, and reports what it did.

    python -m pipeline.runners.local_runner --movielens            # the demo, end to end
    python -m pipeline.runners.local_runner --data_root DIR        # your own logs
    python -m pipeline.runners.local_runner --data_root DIR --ranker   # ... with the ranker
    python -m pipeline.runners.local_runner --data_root gs://... -- --runner=DataflowRunner ...

Flags after a lone `--` go to every Beam component (runner, project, workers).

Prints per-component progress, then the evaluation tables beside the baselines, the blessings
and where the models were pushed; the same goes to a run summary JSON whose path is the last line.
The ranker stage (a BERT cross-encoder fine-tuned on CPU) is on by default only for the
MovieLens demo (`--ranker` / `--no_ranker` decide otherwise).
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import time
import warnings
from typing import Any, Dict, List, Optional

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
warnings.filterwarnings("ignore", category=FutureWarning)  # google-cloud's Python 3.11 notices

import tensorflow as tf  # noqa: E402
from absl import logging as absl_logging  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx.orchestration import metadata  # noqa: E402

from pipeline import pipeline_def  # noqa: E402
from pipeline.components import ranker_evaluator  # noqa: E402
from pipeline.components.retrieval_evaluator import REPORT as RETRIEVAL_REPORT  # noqa: E402
from pipeline.config import (BANDIT_MODEL_NAME, RANKER_MODEL_NAME, REPO_ROOT,  # noqa: E402
                             RETRIEVAL_MODEL_NAME, PipelineConfig, RankerStage)
from pipeline.data.movielens import convert_movielens_100k  # noqa: E402


class ComponentProgress(logging.Handler):
  """Turns LocalDagRunner's log lines into one progress line per component start and finish."""

  def __init__(self, total: int):
    super().__init__(logging.INFO)
    self._total = total
    self._done = 0
    self._started: Dict[str, float] = {}
    self.timings: Dict[str, float] = {}
    self.cached: List[str] = []
    self._current: Optional[str] = None

  def emit(self, record: logging.LogRecord) -> None:
    message, args = record.msg, record.args
    if message == "Component %s is running.":
      self._current = args[0]
      self._started[args[0]] = time.time()
      print(f"[{self._done + 1}/{self._total}] {args[0]} ...", flush=True)
    elif message == "Component %s is finished.":
      self._done += 1
      self.timings[args[0]] = time.time() - self._started.get(args[0], time.time())
      note = " (cached)" if args[0] in self.cached else ""
      print(f"[{self._done}/{self._total}] {args[0]} done in {self.timings[args[0]]:.1f} s{note}",
            flush=True)
    elif message == "A cached execution %d is used." and self._current:
      self.cached.append(self._current)


def _latest_output(store, pipeline_name: str, node_id: str, type_name: str):
  """The newest artifact of a type attributed to one pipeline node (several nodes write the
  same types: both evaluators write a ModelBlessing, both pushers a PushedModel)."""
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


def _stage_outcome(store, pipeline_name: str, evaluator_id: str, model_name: str,
                   metrics_file: str, report_file: str) -> Dict[str, Any]:
  """Evaluation, blessing and push of one model, read back from MLMD and the artifacts."""
  outcome: Dict[str, Any] = {}
  evaluation = _latest_output(store, pipeline_name, evaluator_id, "ModelEvaluation")
  blessing = _latest_output(store, pipeline_name, evaluator_id, "ModelBlessing")
  pushed = _latest_output(store, pipeline_name, f"{model_name}_pusher", "PushedModel")
  if evaluation is not None:
    with tf.io.gfile.GFile(os.path.join(evaluation.uri, metrics_file)) as f:
      outcome["evaluation"] = json.load(f)
    outcome["evaluation_report"] = os.path.join(evaluation.uri, report_file)
  if blessing is not None:
    outcome["blessed"] = _property(blessing, "blessed") == 1
    outcome["model"] = _property(blessing, "current_model")
  if pushed is not None:
    outcome["pushed"] = _property(pushed, "pushed") == 1
    outcome["pushed_to"] = _property(pushed, "pushed_destination") if outcome["pushed"] else None
  return outcome


def run_outcome(config: PipelineConfig) -> Dict[str, Any]:
  """The retriever's outcome at the top level; the ranker's, when it ran, under "ranker"."""
  with metadata.Metadata(metadata.sqlite_metadata_connection_config(config.metadata_path)) as m:
    outcome = _stage_outcome(m.store, config.pipeline_name, pipeline_def.RETRIEVAL_EVALUATOR,
                             RETRIEVAL_MODEL_NAME, RETRIEVAL_REPORT.json_name,
                             RETRIEVAL_REPORT.html_name)
    if config.ranker is not None:
      outcome["ranker"] = _stage_outcome(
          m.store, config.pipeline_name, ranker_evaluator.RankerEvaluator.__name__,
          RANKER_MODEL_NAME, ranker_evaluator.REPORT.json_name,
          ranker_evaluator.REPORT.html_name)
    if config.bandit:
      outcome["bandit"] = _stage_outcome(m.store, config.pipeline_name, "BanditPolicyTrainer",
                                         BANDIT_MODEL_NAME, "bandit_ope.json", "bandit_ope.html")
  return outcome


def _bandit_report(bandit: Dict[str, Any]) -> List[str]:
  if "evaluation" not in bandit:
    return []
  return ["", f"bandit policy blessed: {bandit.get('blessed')} "
              f"({bandit['evaluation']['blessing'].get('reason', '')})",
          f"off-policy report: {bandit['evaluation_report']}",
          f"bandit pushed to: {bandit.get('pushed_to') or 'nothing pushed'}"]


def run(config: PipelineConfig) -> Dict[str, Any]:
  """Runs the pipeline and returns the run summary (also written as JSON)."""
  pipeline = pipeline_def.create_pipeline(config)
  run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
  run_dir = os.path.join(config.runs_dir, run_id)
  tf.io.gfile.makedirs(run_dir)
  progress = ComponentProgress(total=len(pipeline.components))
  # The console gets progress lines and warnings; the whole INFO log goes to the run's folder.
  absl_logging.set_verbosity(absl_logging.INFO)
  absl_logging.get_absl_handler().setLevel(logging.WARNING)
  log_file = logging.FileHandler(os.path.join(run_dir, "pipeline.log")) if not run_dir.startswith(
      "gs://") else logging.NullHandler()
  handlers = [progress, log_file]
  absl_logger = logging.getLogger("absl")
  absl_logger.propagate = False
  for handler in handlers:
    absl_logger.addHandler(handler)
  summary: Dict[str, Any] = {"run_id": run_id, "data_root": config.data_root,
                             "log": os.path.join(run_dir, "pipeline.log"),
                             "pipeline_root": config.pipeline_root,
                             "serving_root": config.serving_root}
  started = time.time()
  try:
    tfx.orchestration.LocalDagRunner().run(pipeline)
    summary["status"] = "succeeded"
    summary.update(run_outcome(config))
  except Exception as error:  # pylint: disable=broad-except
    summary["status"] = "failed"
    summary["error"] = f"{type(error).__name__}: {error}"
  finally:
    for handler in handlers:
      absl_logger.removeHandler(handler)
  summary["seconds"] = round(time.time() - started, 1)
  summary["component_seconds"] = {k: round(v, 1) for k, v in progress.timings.items()}
  summary["cached_components"] = progress.cached
  path = os.path.join(run_dir, "summary.json")
  with tf.io.gfile.GFile(path, "w") as f:
    json.dump(summary, f, indent=2, sort_keys=True)
  summary["summary_path"] = path
  return summary


def _ranker_report(ranker: Dict[str, Any]) -> List[str]:
  if "evaluation" not in ranker:
    return []
  metrics = ranker["evaluation"]["metrics"]
  lines = ["", "Ranker metrics on the eval query groups, against the retriever's own order:"]
  for slice_name in sorted(metrics[ranker_evaluator.CANDIDATE],
                           key=lambda s: (s != "overall", s)):
    lines += [f"[{slice_name}]", ranker_evaluator.REPORT.table(metrics, slice_name)]
  lines += ["", *ranker["evaluation"]["reasons"], f"report: {ranker['evaluation_report']}",
            f"ranker blessed: {ranker.get('blessed')}",
            f"ranker pushed to: {ranker.get('pushed_to') or 'nothing pushed'}"]
  return lines


def report(summary: Dict[str, Any]) -> str:
  """The human-readable end of a run."""
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
  lines += _ranker_report(summary.get("ranker", {}))
  lines += _bandit_report(summary.get("bandit", {}))
  lines.append(summary["summary_path"])
  return "\n".join(lines)


def parse_args(argv: List[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_root", help="raw data root (interactions/, items/, users/)")
  parser.add_argument("--movielens", action="store_true",
                      help="write MovieLens-100K into --data_root first (default "
                           "outputs/data/movielens-100k) unless it is already there")
  parser.add_argument("--max_users", type=int, default=None,
                      help="with --movielens: keep only the first N users (a small slice)")
  parser.add_argument("--output_root", default=os.path.join(REPO_ROOT, "outputs"))
  add_pipeline_arguments(parser)
  return parse_pipeline_args(parser, argv)


def _add_stage_switch(parser: argparse.ArgumentParser, stage: str, what: str) -> None:
  """--STAGE / --no_STAGE; neither leaves the default (on for the MovieLens demo)."""
  parser.add_argument(f"--{stage}", dest=stage, action="store_const", const=True, default=None,
                      help=f"add {what} (default: on with --movielens)")
  parser.add_argument(f"--no_{stage}", dest=stage, action="store_const", const=False,
                      help=f"leave {what} out, also with --movielens")


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
  """The flags of the pipeline itself, the same for every runner (local, Kubeflow)."""
  parser.add_argument("--pipeline_name", default="recsys")
  parser.add_argument("--schema_path", default=None, help="curated schema (schema.pbtxt)")
  parser.add_argument("--history_scope", choices=("earlier", "all_training"), default="earlier",
                      help="each example's history: items from strictly earlier timestamps, or "
                           "the user's other training items (logs whose order means nothing)")
  parser.add_argument("--eval_fraction", type=float, default=0.1,
                      help="the latest fraction of each user's interactions held out for eval")
  parser.add_argument("--epochs", type=int, default=None)
  parser.add_argument("--batch_size", type=int, default=None)
  parser.add_argument("--strategy", default=None, help="default, mirrored or tpu")
  parser.add_argument("--retrieval_settings", type=json.loads, default={},
                      help="more retrieval trainer settings as JSON (TrainingSettings and "
                           "TowerConfig fields), e.g. '{\"item_bias\": true}'")
  parser.add_argument("--gate_metrics", default=None,
                      help="comma-separated metrics the model must win on (default "
                           "recall@100,ndcg@10)")
  parser.add_argument("--regression_tolerance", type=float, default=None,
                      help="how far below the last blessed model a gate metric may fall")
  _add_stage_switch(parser, "ranker", "the cross-encoder ranker stage")
  parser.add_argument("--ranker_scale", type=float, default=1.0,
                      help="query groups mined and trained on, as a multiple of the CPU demo's "
                           "bounded sample (600 train / 64 validation / 300 eval groups)")
  parser.add_argument("--ranker_checkpoint_dir", default=None,
                      help="a Hugging Face BERT folder (config.json, vocab.txt, "
                           "model.safetensors); default all-MiniLM-L6-v2")
  parser.add_argument("--ranker_layers", type=int, default=None,
                      help="keep only the checkpoint's first N layers")
  parser.add_argument("--ranker_sequence_length", type=int, default=None, help="default 64")
  parser.add_argument("--ranker_loss", choices=("pointwise", "listwise"), default=None)
  parser.add_argument("--ranker_lora_rank", type=int, default=None,
                      help="fine-tune LoRA adapters of this rank instead of every weight")
  parser.add_argument("--ranker_precision", choices=("float32", "bfloat16"), default=None)
  parser.add_argument("--ranker_gate_slices", default=None,
                      help="slices the ranker must beat the retrieval order in (default "
                           "overall,query_kind=*: overall and in each query kind)")
  _add_stage_switch(parser, "bandit", "the bandit policy stage")
  parser.add_argument("--no_cache", action="store_true")


def parse_pipeline_args(parser: argparse.ArgumentParser, argv: List[str]) -> argparse.Namespace:
  """Parses `argv`; what follows a lone "--" becomes `beam_pipeline_args` (Beam's flags start
  with "--" themselves, so argparse could not take them as values)."""
  split = argv.index("--") if "--" in argv else len(argv)
  args = parser.parse_args(argv[:split])
  args.beam_pipeline_args = argv[split + 1:] if split < len(argv) else None
  return args


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
  """The config the flags name; with --movielens (local runs) the ranker and bandit are on
  unless turned off."""
  movielens = getattr(args, "movielens", False)
  data_root = args.data_root or os.path.join(args.output_root, "data", "movielens-100k")
  training = dict(args.retrieval_settings, **{
      k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size,
                        "strategy": args.strategy}.items() if v is not None})
  config = PipelineConfig(data_root=data_root, output_root=args.output_root,
                          pipeline_name=args.pipeline_name, retrieval_training=training,
                          eval_fraction=args.eval_fraction, history_scope=args.history_scope,
                          enable_cache=not args.no_cache)
  if args.schema_path:
    config.schema_path = args.schema_path
  if args.gate_metrics:
    config.gate_metrics = args.gate_metrics
  if args.regression_tolerance is not None:
    config.regression_tolerance = args.regression_tolerance
  if args.beam_pipeline_args is not None:
    config.beam_pipeline_args = args.beam_pipeline_args
  if movielens if args.ranker is None else args.ranker:
    config.ranker = ranker_stage(args)
  config.bandit = movielens if args.bandit is None else args.bandit
  return config


def ranker_stage(args: argparse.Namespace) -> RankerStage:
  training = {name: value for name, value in {
      "checkpoint_dir": args.ranker_checkpoint_dir, "num_layers": args.ranker_layers,
      "sequence_length": args.ranker_sequence_length, "loss": args.ranker_loss,
      "lora_rank": args.ranker_lora_rank, "precision": args.ranker_precision}.items()
              if value is not None}
  stage = RankerStage(training=training).scaled(args.ranker_scale)
  if args.ranker_gate_slices:
    stage.gate_slices = args.ranker_gate_slices
  return stage


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  config = config_from_args(args)
  if args.movielens and not tf.io.gfile.exists(os.path.join(config.data_root, "interactions")):
    counts = convert_movielens_100k(config.data_root, max_users=args.max_users)
    print(f"MovieLens-100K written to {config.data_root}: {counts}", flush=True)
  summary = run(config)
  print(report(summary), flush=True)
  return 0 if summary["status"] == "succeeded" else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
