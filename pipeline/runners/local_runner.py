"""Runs the pipeline locally with LocalDagRunner and Beam, and reports what it did.

    python -m pipeline.runners.local_runner --movielens            # the demo, end to end
    python -m pipeline.runners.local_runner --data_root DIR        # your own logs
    python -m pipeline.runners.local_runner --data_root DIR --cross_encoder   # ... with it
    python -m pipeline.runners.local_runner --data_root gs://... -- --runner=DataflowRunner ...

Flags after a lone `--` go to every Beam component (runner, project, workers).

Prints per-component progress, then the evaluation tables beside the baselines, the blessings
and where the models were pushed; the same goes to a run summary JSON, whose path is the
line before the last. The last line says what was pushed, or why nothing was and what to do.
The cross-encoder stage (a BERT fine-tuned on CPU) and the bandit stage are on by default only
for the MovieLens demo (`--cross_encoder` / `--no_cross_encoder` and `--bandit` / `--no_bandit`
decide otherwise).

TensorFlow, TFX and the pipeline definition are imported inside `run`, after the flags are
parsed, so that `--help` and a mistyped flag answer at once; from there on the libraries'
stderr noise goes to the run's `pipeline.log`, and the terminal shows our progress and report.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional

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
  args = parse_pipeline_args(parser, argv)
  if args.max_users is not None and not args.movielens:
    parser.error("--max_users only takes effect with --movielens (it slices the MovieLens "
                 "data the runner writes; your own --data_root is read whole)")
  return args


def new_run_id(runs_dir: str) -> str:
  """The UTC time to the second; a run that starts in the same second as the one before it (a
  fully cached cycle takes less) gets a suffix, so no run's folder is another's. Local folders
  are checked without TensorFlow, whose import sends its noise to the terminal."""
  if "://" in runs_dir:
    import tensorflow as tf
    exists = tf.io.gfile.exists
  else:
    exists = os.path.exists
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
  run_id, count = stamp, 1
  while exists(os.path.join(runs_dir, run_id)):
    count += 1
    run_id = f"{stamp}-{count}"
  return run_id


def run(config: PipelineConfig, setup: Optional[Callable[[], None]] = None) -> Dict[str, Any]:
  """Runs the pipeline (after `setup`, e.g. writing the demo's data) and returns the run
  summary (also written as JSON) after writing the run page. TFX's pipeline run id is the run
  folder's name, so a component finds the folder from its context. The libraries' stderr goes
  to the run's log from the first TensorFlow import on; our progress lines stay on stdout."""
  from pipeline.runners.progress import ComponentProgress, run_logging, stderr_to
  run_id = new_run_id(config.runs_dir)
  run_dir = os.path.join(config.runs_dir, run_id)
  log_path = os.path.join(run_dir, "pipeline.log")
  local = "://" not in run_dir
  if local:
    os.makedirs(run_dir, exist_ok=True)
  summary: Dict[str, Any] = {"run_id": run_id, "data_root": config.data_root, "log": log_path,
                             "output_root": config.output_root,
                             "pipeline_root": config.pipeline_root,
                             "serving_root": config.serving_root}
  started = time.time()
  with stderr_to(log_path if local else None):
    import tensorflow as tf

    from pipeline import pipeline_def, run_report
    from pipeline.reports import run_page
    from pipeline.runners.named_run import NamedRunDagRunner
    tf.io.gfile.makedirs(run_dir)
    if setup is not None:
      setup()
    pipeline = pipeline_def.create_pipeline(config)
    progress = ComponentProgress(total=len(pipeline.components))
    with run_logging(progress, log_path if local else None):
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
    summary["page"] = run_page.write(summary, config, run_dir)  # matplotlib's noise to the log
  path = os.path.join(run_dir, "summary.json")
  with tf.io.gfile.GFile(path, "w") as f:
    json.dump(summary, f, indent=2, sort_keys=True)
  summary["summary_path"] = path
  return summary


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  config = config_from_args(args)

  def write_movielens() -> None:
    import tensorflow as tf

    from pipeline.data.movielens import convert_movielens_100k
    if not tf.io.gfile.exists(os.path.join(config.data_root, contract.INTERACTIONS)):
      counts = convert_movielens_100k(config.data_root, max_users=args.max_users)
      print(f"MovieLens-100K written to {config.data_root}: {counts}", flush=True)

  summary = run(config, write_movielens if args.movielens else None)
  from pipeline import run_report
  print(run_report.report(summary), flush=True)
  return 0 if summary["status"] == "succeeded" else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
