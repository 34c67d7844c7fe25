"""Runs the pipeline locally with LocalDagRunner and Beam, and reports what it did.

    python -m pipeline.runners.local_runner --movielens            # the demo, end to end
    python -m pipeline.runners.local_runner --data_root DIR        # your own logs
    python -m pipeline.runners.local_runner --data_root DIR --cross_encoder   # ... with it
    python -m pipeline.runners.local_runner --data_root gs://... -- --runner=DataflowRunner ...

Flags after a lone `--` go to every Beam component (runner, project, workers).

Prints per-component progress, then the evaluation tables beside the baselines, the blessings
and where the models were pushed; the same goes to a run summary JSON whose path is the last line.
The cross-encoder stage (a BERT fine-tuned on CPU) and the bandit stage are on by default only
for the MovieLens demo (`--cross_encoder` / `--no_cross_encoder` and `--bandit` / `--no_bandit`
decide otherwise).

TensorFlow, TFX and the pipeline definition are imported inside `run` and `main`, after the
flags are parsed, so that `--help` and a mistyped flag answer at once.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import warnings
from typing import Any, Dict, List

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
warnings.filterwarnings("ignore", category=FutureWarning)  # google-cloud's Python 3.11 notices

from pipeline.config import REPO_ROOT, PipelineConfig  # noqa: E402
from pipeline.data import contract  # noqa: E402
from pipeline.flags import (add_pipeline_arguments, config_from_args,  # noqa: E402
                            parse_pipeline_args)


def parse_args(argv: List[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_root", help="raw data root (interactions/, items/, users/)")
  parser.add_argument("--movielens", action="store_true",
                      help="write MovieLens-100K into --data_root first (default "
                           "outputs/data/movielens-100k) unless it is already there")
  parser.add_argument("--max_users", type=int, default=None,
                      help="with --movielens: keep only the first N users (a small slice)")
  parser.add_argument("--output_root", default=os.path.join(REPO_ROOT, "outputs"),
                      help="pipeline root, ML Metadata, serving root and run folders go here")
  add_pipeline_arguments(parser)
  return parse_pipeline_args(parser, argv)


def run(config: PipelineConfig) -> Dict[str, Any]:
  """Runs the pipeline and returns the run summary (also written as JSON)."""
  import tensorflow as tf

  from pipeline import pipeline_def, run_report
  from pipeline.reports import run_page
  from pipeline.runners.named_run import NamedRunDagRunner
  from pipeline.runners.progress import ComponentProgress, run_logging
  pipeline = pipeline_def.create_pipeline(config)
  run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
  run_dir = os.path.join(config.runs_dir, run_id)
  tf.io.gfile.makedirs(run_dir)
  log_path = os.path.join(run_dir, "pipeline.log")
  progress = ComponentProgress(total=len(pipeline.components))
  summary: Dict[str, Any] = {"run_id": run_id, "data_root": config.data_root, "log": log_path,
                             "pipeline_root": config.pipeline_root,
                             "serving_root": config.serving_root}
  started = time.time()
  with run_logging(progress, None if run_dir.startswith("gs://") else log_path):
    try:
      NamedRunDagRunner(run_id).run(pipeline)
      summary["status"] = "succeeded"
      summary.update(run_report.run_outcome(config))
    except Exception as error:  # pylint: disable=broad-except
      summary["status"] = "failed"
      summary["error"] = f"{type(error).__name__}: {error}"
  summary["seconds"] = round(time.time() - started, 1)
  summary["component_seconds"] = {k: round(v, 1) for k, v in progress.timings.items()}
  summary["cached_components"] = progress.cached
  summary["page"] = run_page.write(summary, config, run_dir)
  path = os.path.join(run_dir, "summary.json")
  with tf.io.gfile.GFile(path, "w") as f:
    json.dump(summary, f, indent=2, sort_keys=True)
  summary["summary_path"] = path
  return summary


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  config = config_from_args(args)
  import tensorflow as tf

  from pipeline import run_report
  from pipeline.data.movielens import convert_movielens_100k
  if args.movielens and not tf.io.gfile.exists(os.path.join(config.data_root,
                                                            contract.INTERACTIONS)):
    counts = convert_movielens_100k(config.data_root, max_users=args.max_users)
    print(f"MovieLens-100K written to {config.data_root}: {counts}", flush=True)
  summary = run(config)
  print(run_report.report(summary), flush=True)
  return 0 if summary["status"] == "succeeded" else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
