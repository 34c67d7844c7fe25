"""Pushes one trained model into the serving root on purpose, past its blessing gate.

    python -m pipeline.push_model --stage retrieval --run_id 20261202T181500          # dry run
    python -m pipeline.push_model --stage retrieval --run_id 20261202T181500 --yes    # push
    python -m pipeline.push_model --stage ranker --model_uri .../RankerTrainer/model/42 --yes

For an operator who has decided that a model should serve although the pipeline did not bless
it (a first run on a small log, a gate set too tight). The model is a stage trainer's Model
artifact: by `--model_uri`, by the run that trained it (`--run_id`, the `runs/<run id>/` folder),
or, with neither, the stage's newest. It prints the model's evaluation beside the baselines and
the last blessed model it was judged against, with the gate's reasons, what the serving root
serves now, and a WARNING. Without `--yes` it only says what it would do and exits 1 (it asks
nothing: it runs in scripts too). With `--yes` the pipeline's own pusher
(pipeline/components/serving_pusher.py) copies the SavedModel as a new numbered version and
refreshes `models.config`; a running `serving.serve` loads it.

TensorFlow and TFX are imported after the flags are parsed, so that `--help` answers at once.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import List

from pipeline.config import REPO_ROOT, PipelineConfig

def parse_args(argv: List[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--output_root", default=os.path.join(REPO_ROOT, "outputs"),
                      help="the pipeline's output root (its ML Metadata and runs/ are read)")
  parser.add_argument("--pipeline_name", default=PipelineConfig(data_root="").pipeline_name,
                      help="the pipeline whose ML Metadata contexts name the model")
  parser.add_argument("--serving_root", default=None,
                      help="the TF Serving model root to push into (default "
                           "<output_root>/serving)")
  parser.add_argument("--stage", default="retrieval",
                      help="the model's stage by its serving model name, also its folder in "
                           "the serving root (default retrieval)")
  which = parser.add_mutually_exclusive_group()
  which.add_argument("--model_uri", default=None,
                     help="the Model artifact's URI (the stage trainer's model/<id> folder)")
  which.add_argument("--run_id", default=None,
                     help="the run whose model of --stage to push (runs/<run id>/summary.json)")
  parser.add_argument("--yes", action="store_true",
                      help="push; without it, only show what would be pushed and exit 1")
  return parser.parse_args(argv)


def _run_model(config: PipelineConfig, run_id: str, stage) -> str:
  """The model of `stage` that run `run_id` judged, from its summary."""
  import tensorflow as tf

  from pipeline import pipeline_def
  path = os.path.join(config.runs_dir, run_id, "summary.json")
  if not tf.io.gfile.exists(path):
    raise SystemExit(f"push_model: no run {run_id}: {path} does not exist")
  with tf.io.gfile.GFile(path) as f:
    summary = json.load(f)
  outcome = summary if stage == pipeline_def.RETRIEVAL_STAGE else summary.get(
      stage.model_name, {})
  if not outcome.get("model"):
    raise SystemExit(f"push_model: run {run_id} has no judged {stage.model_name} model "
                     f"({path}); give --model_uri")
  return outcome["model"]


def _model_artifact(store, pipeline_name: str, stage, model_uri: str):
  """The trainer's Model artifact at `model_uri` (the newest of the trainer's when None)."""
  from tfx.types import artifact_utils

  from pipeline import run_report
  models = run_report.node_outputs(store, pipeline_name, stage.trainer_id, "Model")
  found = [m for m in models if model_uri is None or m.uri.rstrip("/") == model_uri.rstrip("/")]
  if not found:
    raise SystemExit(f"push_model: no Model of {stage.model_name}'s trainer "
                     f"({stage.trainer_id}) {'at ' + model_uri if model_uri else ''} in "
                     f"pipeline {pipeline_name}'s ML Metadata")
  newest = max(found, key=lambda m: m.id)
  [artifact_type] = store.get_artifact_types_by_id([newest.type_id])
  return artifact_utils.deserialize_artifact(artifact_type, newest)


def _serving_now(model_dir: str) -> str:
  """The newest version in a model's serving folder, and which model it is."""
  from pipeline.components.serving_pusher import read_push_log
  from serving.models_config import available_versions
  versions = available_versions(model_dir)
  if not versions:
    return f"serving now: nothing in {model_dir}"
  latest = str(max(versions))
  model = next((uri for uri, version in read_push_log(model_dir).items() if version == latest),
               "a model pushed by hand")
  return f"serving now: {os.path.join(model_dir, latest)} ({model})"


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  config = PipelineConfig(data_root="", output_root=args.output_root,
                          pipeline_name=args.pipeline_name)
  serving_root = args.serving_root or config.serving_root
  os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
  import tensorflow as tf
  from tfx.orchestration import metadata

  from pipeline import pipeline_def, run_report
  from pipeline.components.serving_pusher import push_without_blessing
  stages = {s.model_name: s for s in pipeline_def.ALL_STAGES}
  if args.stage not in stages:
    raise SystemExit(f"push_model: --stage {args.stage!r} is not one of {sorted(stages)}")
  stage = stages[args.stage]
  model_uri = _run_model(config, args.run_id, stage) if args.run_id else args.model_uri
  if not tf.io.gfile.exists(config.metadata_path):
    raise SystemExit(f"push_model: no ML Metadata at {config.metadata_path}")
  with metadata.Metadata(metadata.sqlite_metadata_connection_config(config.metadata_path)) as m:
    model = _model_artifact(m.store, config.pipeline_name, stage, model_uri)
    judgement = run_report.model_judgement(m.store, config.pipeline_name, stage, model.uri)
  print(f"{stage.model_name} model: {model.uri}")
  print("\n".join(run_report.evaluation_lines(stage, judgement))
        or f"{stage.model_name} model was never evaluated: no metrics to show")
  model_dir = os.path.join(serving_root, stage.model_name)
  print(_serving_now(model_dir))
  verdict = ("was NOT blessed" if judgement.get("blessed") is False else
             "was blessed" if judgement.get("blessed") else "was never judged")
  print(f"WARNING: this push bypasses the blessing gate; the model {verdict}.", flush=True)
  if not args.yes:
    print(f"would push {model.uri} to {model_dir}/<new version>; nothing pushed: add --yes "
          "to push")
    return 1
  with tempfile.TemporaryDirectory(prefix="push_model_") as archive:
    destination = push_without_blessing(model, serving_root, stage.model_name,
                                        os.path.join(archive, "pushed_model"))
  print(f"pushed {stage.model_name} version {os.path.basename(destination)} to "
        f"{os.path.dirname(destination)} (models.config refreshed)")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
