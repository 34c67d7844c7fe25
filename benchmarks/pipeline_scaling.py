"""The pipeline's cost as the log grows, on SYNTHETIC logs; prints JSON.

For each size, pipeline/data/synthetic_logs.py writes a SYNTHETIC log of that many rows (the
same catalog every time, so only the log grows), then the pipeline runs on it exactly as README
says (`python -m pipeline.runners.local_runner --data_root ...`, its own process, retrieval
only: `--no_ranker --no_bandit`, fresh output root). While it runs, the resident memory of its
process tree is sampled every `--sample_s` seconds; its progress lines say which component each
sample belongs to. Per size and component: seconds and peak RSS (MiB: the tree's sum, and its
largest single process, the one a bigger log would break first). Across sizes: the fitted
growth exponent b of seconds ~ a * rows^b per component and overall (1 is linear), and of peak
RSS (0: memory does not grow with the log). Beam flags after a lone `--`
go to the pipeline (e.g. `-- --direct_running_mode=multi_processing --direct_num_workers=2`).

    python -m benchmarks.pipeline_scaling [--sizes 100000,1000000,5000000] [--items 20000]
        [--epochs E] [--output_root DIR] [-- BEAM_FLAGS]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

_START = re.compile(r"^\[\d+/\d+\] (\S+) \.\.\.$")
_DONE = re.compile(r"^\[\d+/\d+\] (\S+) done in ([\d.]+) s")


def parse_args(argv: List[str]) -> argparse.Namespace:
  """Nothing heavy is imported before this, so that --help and a bad flag answer at once."""
  split = argv.index("--") if "--" in argv else len(argv)
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="100000,1000000,5000000",
                      help="interaction rows per run, comma-separated (default %(default)s)")
  parser.add_argument("--items", type=int, default=20000,
                      help="catalog size, the same at every size (default %(default)s)")
  parser.add_argument("--epochs", type=int, default=None,
                      help="retrieval epochs (default: the trainer's)")
  parser.add_argument("--sample_s", type=float, default=0.5,
                      help="seconds between memory samples (default %(default)s)")
  parser.add_argument("--output_root", default=os.path.join("outputs", "pipeline_scaling"),
                      help="data roots, pipeline outputs and the JSON go here (default "
                           "%(default)s)")
  args = parser.parse_args(argv[:split])
  args.beam_args = argv[split + 1:]
  args.sizes = [int(s) for s in args.sizes.split(",")]
  return args


def tree_rss(pid: int) -> Tuple[int, int]:
  """Resident bytes of a process and all its descendants (Beam's worker processes too): their
  sum and the largest single process."""
  import psutil
  try:
    root = psutil.Process(pid)
    processes = [root] + root.children(recursive=True)
  except psutil.NoSuchProcess:
    return 0, 0
  sizes = []
  for process in processes:
    try:
      sizes.append(process.memory_info().rss)
    except psutil.NoSuchProcess:
      pass
  return sum(sizes), max(sizes, default=0)


class MemoryByComponent:
  """Peak RSS per component (the tree's sum and its largest process), from samples tagged with
  the component running then."""

  def __init__(self, pid: int, interval_s: float):
    self.peaks: Dict[str, int] = {}
    self.largest: Dict[str, int] = {}
    self.current = "startup"
    self._pid, self._interval = pid, interval_s
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _run(self) -> None:
    while not self._stop.is_set():
      (total, largest), name = tree_rss(self._pid), self.current
      self.peaks[name] = max(self.peaks.get(name, 0), total)
      self.largest[name] = max(self.largest.get(name, 0), largest)
      self._stop.wait(self._interval)

  def stop(self) -> None:
    self._stop.set()
    self._thread.join()


def run_pipeline(data_root: str, output_root: str, args: argparse.Namespace
                 ) -> Dict[str, Any]:
  """One pipeline run in its own process, as README runs it; its seconds and peak RSS per
  component."""
  command = [sys.executable, "-m", "pipeline.runners.local_runner", "--data_root", data_root,
             "--output_root", output_root, "--no_ranker", "--no_bandit"]
  if args.epochs:
    command += ["--epochs", str(args.epochs)]
  if args.beam_args:
    command += ["--", *args.beam_args]
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
  started = time.time()
  process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=env)
  memory = MemoryByComponent(process.pid, args.sample_s)
  seconds: Dict[str, float] = {}
  tail: List[str] = []
  for line in process.stdout:
    line = line.rstrip("\n")
    print(f"  {line}", file=sys.stderr, flush=True)
    tail = (tail + [line])[-20:]
    if _START.match(line):
      memory.current = _START.match(line).group(1)
    elif _DONE.match(line):
      name, value = _DONE.match(line).groups()
      seconds[name] = float(value)
      memory.current = "between components"
  status = process.wait()
  memory.stop()
  mib = {name: round(peak / 2**20) for name, peak in memory.peaks.items()}
  largest = {name: round(peak / 2**20) for name, peak in memory.largest.items()}
  return {"exit_status": status, "seconds": round(time.time() - started, 1),
          "component_seconds": seconds, "peak_rss_mib": mib,
          "peak_rss_mib_overall": max(mib.values(), default=0),
          "largest_process_peak_rss_mib": largest,
          "largest_process_peak_rss_mib_overall": max(largest.values(), default=0),
          **({"log_tail": tail} if status else {})}


def growth_exponent(points: List[Tuple[float, float]]) -> Optional[float]:
  """Least-squares slope of log(y) on log(x): y ~ a * x^b; None with fewer than 2 sizes."""
  points = [(x, y) for x, y in points if x > 0 and y > 0]
  if len({x for x, _ in points}) < 2:
    return None
  xs, ys = [math.log(x) for x, _ in points], [math.log(y) for _, y in points]
  mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
  slope = (sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
           / sum((x - mean_x) ** 2 for x in xs))
  return round(slope, 3)


def exponents(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
  """Growth exponents of seconds and peak RSS, overall and per component, over the runs that
  succeeded."""
  done = [r for r in runs if r["pipeline"]["exit_status"] == 0]
  components = sorted({c for r in done for c in r["pipeline"]["component_seconds"]})

  def fit(value) -> Optional[float]:
    return growth_exponent([(r["rows"], value(r["pipeline"])) for r in done
                            if value(r["pipeline"]) is not None])
  return {
      "seconds": fit(lambda p: p["seconds"]),
      "peak_rss": fit(lambda p: p["peak_rss_mib_overall"]),
      "largest_process_peak_rss": fit(lambda p: p.get("largest_process_peak_rss_mib_overall")),
      "component_seconds": {c: fit(lambda p, c=c: p["component_seconds"].get(c))
                            for c in components},
      "component_peak_rss": {c: fit(lambda p, c=c: p["peak_rss_mib"].get(c))
                             for c in components}}


def table(runs: List[Dict[str, Any]]) -> str:
  """The terminal view: a line per component, a column pair (s, MiB) per size."""
  components = sorted({c for r in runs for c in r["pipeline"]["component_seconds"]},
                      key=lambda c: -max(r["pipeline"]["component_seconds"].get(c, 0)
                                         for r in runs))
  header = f"{'component (SYNTHETIC logs)':<34}" + "".join(
      f"{r['rows']:>12,} rows    " for r in runs)
  lines = [header, f"{'':<34}" + "".join(f"{'s':>10} {'MiB':>8}    " for _ in runs)]
  for c in ["total"] + components:
    cells = []
    for r in runs:
      p = r["pipeline"]
      s = p["seconds"] if c == "total" else p["component_seconds"].get(c)
      m = p["peak_rss_mib_overall"] if c == "total" else p["peak_rss_mib"].get(c)
      cells.append(f"{s if s is not None else '-':>10} {m if m is not None else '-':>8}    ")
    lines.append(f"{c:<34}" + "".join(cells))
  return "\n".join(lines)


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  import shutil
  from pipeline.data.synthetic_logs import write_synthetic_logs
  runs: List[Dict[str, Any]] = []
  for index, rows in enumerate(args.sizes):
    root = os.path.join(args.output_root, f"rows-{rows}")
    shutil.rmtree(root, ignore_errors=True)
    print(f"[{index + 1}/{len(args.sizes)}] {rows:,} rows: writing the SYNTHETIC log",
          file=sys.stderr, flush=True)
    started = time.time()
    counts = write_synthetic_logs(os.path.join(root, "data"), rows, args.items)
    generated_s = round(time.time() - started, 1)
    print(f"[{index + 1}/{len(args.sizes)}] {rows:,} rows: the pipeline", file=sys.stderr,
          flush=True)
    runs.append({"rows": rows, "tables": counts, "generate_seconds": generated_s,
                 "pipeline": run_pipeline(os.path.join(root, "data"), os.path.join(root, "out"),
                                          args)})
  result = {"benchmark": "pipeline_scaling", "data": "SYNTHETIC (pipeline/data/synthetic_logs.py)",
            "items": args.items, "stages": "retrieval only (--no_ranker --no_bandit)",
            "beam_args": args.beam_args or "the pipeline's default", "runs": runs,
            "growth_exponents": exponents(runs)}
  print(table(runs), file=sys.stderr)
  os.makedirs(args.output_root, exist_ok=True)
  with open(os.path.join(args.output_root, "pipeline_scaling.json"), "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result, indent=2))
  return 0 if all(r["pipeline"]["exit_status"] == 0 for r in runs) else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
