"""One retraining cycle, safe to call from cron or a systemd timer.

    python -m pipeline.runners.cycle --data_root DIR --output_root DIR [pipeline flags]
        [--span_window 28] [--max_span_age_days 90 [--delete_expired_spans]] [--force]

Takes a lock (`<output_root>/cycle.lock`) so two cycles never overlap; looks at the files the
pipeline would read (the span window, pipeline/data/spans.py) and exits cleanly when none changed
since the last successful cycle; otherwise runs the pipeline (validate, train, evaluate against
the last blessed model, push only if blessed) and records the cycle in
`<output_root>/cycles/history.jsonl`. A running `serving.serve` loads a pushed version by itself.

Exit status: 0 the cycle ran and succeeded, or there was no new data; 1 the run failed (the
report says why; nothing unblessed was pushed); 2 bad flags; 3 another cycle holds the lock.
"""
from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import sys
from typing import IO, Any, Dict, List, Optional

from pipeline.config import REPO_ROOT, PipelineConfig
from pipeline.flags import add_pipeline_arguments, config_from_args, parse_pipeline_args

OK, FAILED, BUSY = 0, 1, 3
LOCK_FILE = "cycle.lock"
CYCLES_DIR = "cycles"


def parse_args(argv: List[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_root", required=True,
                      help="raw data root (interactions/, items/, users/; flat or in spans)")
  parser.add_argument("--output_root", default=os.path.join(REPO_ROOT, "outputs"),
                      help="pipeline root, ML Metadata, serving root, run and cycle records")
  add_pipeline_arguments(parser)
  parser.add_argument("--force", action="store_true",
                      help="run even when no file in the window changed since the last cycle")
  parser.add_argument("--delete_expired_spans", action="store_true",
                      help="with --max_span_age_days: delete the interaction span folders "
                           "older than that (without this flag nothing is ever deleted)")
  args = parse_pipeline_args(parser, argv)
  if args.delete_expired_spans and args.max_span_age_days is None:
    parser.error("--delete_expired_spans needs --max_span_age_days")
  return args


def acquire_lock(output_root: str) -> Optional[IO[str]]:
  """The cycle lock, held while the returned file stays open (None: another cycle has it). An
  OS lock, so a cycle that dies (kill -9, power loss) leaves no stale lock behind."""
  os.makedirs(output_root, exist_ok=True)
  f = open(os.path.join(output_root, LOCK_FILE), "a+")  # pylint: disable=consider-using-with
  try:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().strip()
    f.close()
    print(f"cycle: another cycle holds {os.path.join(output_root, LOCK_FILE)} ({holder}); "
          "this one exits without running", file=sys.stderr, flush=True)
    return None
  f.seek(0)
  f.truncate()
  f.write(f"pid {os.getpid()} since {_now()}\n")
  f.flush()
  return f


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _state_path(output_root: str) -> str:
  return os.path.join(output_root, CYCLES_DIR, "state.json")


def last_cycle(output_root: str) -> Dict[str, Any]:
  """The last successful cycle's record ({} before the first)."""
  import tensorflow as tf
  path = _state_path(output_root)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def _record(output_root: str, record: Dict[str, Any], succeeded: bool) -> None:
  import tensorflow as tf
  folder = os.path.join(output_root, CYCLES_DIR)
  tf.io.gfile.makedirs(folder)
  history = os.path.join(folder, "history.jsonl")
  previous = ""
  if tf.io.gfile.exists(history):
    with tf.io.gfile.GFile(history) as f:
      previous = f.read()
  with tf.io.gfile.GFile(history, "w") as f:  # gfile has no append on object stores
    f.write(previous + json.dumps(record, sort_keys=True) + "\n")
  if succeeded:
    with tf.io.gfile.GFile(_state_path(output_root), "w") as f:
      json.dump(record, f, indent=2, sort_keys=True)


def delete_expired(config: PipelineConfig) -> List[str]:
  """Deletes the span folders retention leaves out; returns them."""
  import tensorflow as tf

  from pipeline.data import spans
  expired = spans.expired_spans(config.data_root, config.window)
  for folder in expired:
    print(f"cycle: deleting expired span {folder} (--delete_expired_spans)", flush=True)
    tf.io.gfile.rmtree(folder)
  return expired


def pushed(summary: Dict[str, Any]) -> Dict[str, Any]:
  """{model name: where this run pushed it, or None}, from the run summary."""
  from pipeline import pipeline_def
  return {stage.model_name: (summary if stage == pipeline_def.RETRIEVAL_STAGE
                             else summary.get(stage.model_name) or {}).get("pushed_to")
          for stage in pipeline_def.ALL_STAGES
          if stage == pipeline_def.RETRIEVAL_STAGE or stage.model_name in summary}


def run_cycle(config: PipelineConfig, force: bool = False,
              delete_expired_spans: bool = False) -> int:
  """One cycle under the lock; the exit status (see the module docstring)."""
  lock = acquire_lock(config.output_root)
  if lock is None:
    return BUSY
  try:
    from pipeline import run_report
    from pipeline.data import spans
    from pipeline.runners.local_runner import run
    deleted = delete_expired(config) if delete_expired_spans else []
    window = spans.snapshot(config.data_root, config.window)
    last = last_cycle(config.output_root)
    if not force and last.get("fingerprint") == window.fingerprint:
      print(f"cycle: no new data since cycle {last.get('run_id')} ({window.describe()}); "
            "nothing to do", flush=True)
      return OK
    print(f"cycle: {window.describe()}; running the pipeline", flush=True)
    summary = run(config)
    print(run_report.report(summary), flush=True)
    succeeded = summary["status"] == "succeeded"
    _record(config.output_root, {
        "run_id": summary["run_id"], "finished": _now(), "status": summary["status"],
        "fingerprint": window.fingerprint, "window": window.describe(),
        "latest_span": window.latest_span, "deleted_spans": deleted,
        "seconds": summary.get("seconds"), "cached_components": summary.get("cached_components"),
        "pushed": pushed(summary), "summary": summary.get("summary_path")}, succeeded)
    if not succeeded:
      print(f"cycle: FAILED: {summary.get('error')}", file=sys.stderr, flush=True)
    return OK if succeeded else FAILED
  finally:
    lock.close()


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  return run_cycle(config_from_args(args), args.force, args.delete_expired_spans)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
