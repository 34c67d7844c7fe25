"""A simulated week of retraining cycles on MovieLens-100K in daily spans; prints JSON.

MovieLens-100K in the raw data contract is rewritten as one span per UTC day of its timestamps
(pipeline/data/span_split.py). The spans before the last `--days` days are there at the start;
then, day by day, the next day's span arrives and one retraining cycle runs, exactly as cron runs
it (`pipeline.runners.cycle`: its lock, its no-new-data check, the pipeline with the DEFAULT gates
and the window flags, evaluation against the last blessed model, push only if blessed). Every
cycle runs twice, in two output roots that see the same days: `warm` (`--warm_start`: the
retriever starts from the last blessed retriever's weights) and `cold` (the default).
The ranking stage and the bandit are off (`--no_ranker --no_bandit`): the warm start is the
retriever's, and a week of the whole pipeline does not fit a CPU benchmark's time.

Per cycle and variant: wall time, the components served from cache, the interactions read,
blessed or not, the version pushed, the retriever's metrics on the pipeline's eval split beside
the popularity baseline's (the RetrievalEvaluator's report: TFMA over what the pipeline will
push), the Trainer's seconds, the warm start (vocabulary rows kept and new), and the per-epoch
eval curve (top-10 hit rate over the whole catalog, the Trainer's validation). Per day, warm
against cold: the epoch (and seconds of training) at which the warm run reached the cold run's
final hit rate. The quality protocol against EASE is benchmarks/movielens_protocol.py; this one
measures the schedule.

    python -m benchmarks.continuous_training [--days 7] [--max_users N] [--epochs E]
        [--warm_start_epochs W] [--output_root DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Any, Dict, List, Optional

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

VARIANTS = {"warm": ["--warm_start"], "cold": []}
METRICS = ("recall@10", "recall@100", "ndcg@10")
CURVE_METRIC = "val_sampled_top_10_hit_rate"


def parse_args(argv: List[str]) -> argparse.Namespace:
  """The pipeline (TensorFlow, TFX) is imported inside main and cycle_record, after this, so
  that --help and a bad flag answer at once."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--days", type=int, default=7,
                      help="cycles: one per arriving day, the last DAYS days of the data "
                           "(default %(default)s)")
  parser.add_argument("--max_users", type=int, default=None,
                      help="only the first N MovieLens users (a smaller, faster week; default: "
                           "all)")
  parser.add_argument("--epochs", type=int, default=None,
                      help="retrieval epochs (default: the trainer's)")
  parser.add_argument("--warm_start_epochs", type=int, default=None,
                      help="epochs of the warm runs (the retriever's warm_start_epochs; "
                           "default: as many as the cold runs)")
  parser.add_argument("--output_root", default=os.path.join("outputs", "continuous_training"),
                      help="data roots, pipeline outputs and the JSON go here, emptied first "
                           "(default %(default)s)")
  return parser.parse_args(argv)


def _overall(evaluation: Dict[str, Any], model: str) -> Dict[str, float]:
  values = evaluation.get("metrics", {}).get(model, {}).get("overall", {})
  return {name: round(values[name], 4) for name in METRICS if name in values}


def cycle_record(output_root: str, day: str, exit_status: int) -> Dict[str, Any]:
  """What one cycle did, from its history record, its run summary and its Trainer's report."""
  from pipeline.runners import cycle
  last = cycle.last_cycle(output_root)
  record: Dict[str, Any] = {"day": day, "exit_status": exit_status,
                            "status": last.get("status"), "seconds": last.get("seconds")}
  if not last.get("summary"):
    return record
  with open(last["summary"]) as f:
    summary = json.load(f)
  evaluation = summary.get("evaluation", {})
  record.update({
      "cached_components": summary.get("cached_components", []),
      "interactions_read": summary.get("invalid_rows", {}).get("rows_read"),
      "blessed": summary.get("blessed"), "pushed_to": summary.get("pushed_to"),
      "metrics": _overall(evaluation, "candidate"),
      "popularity": _overall(evaluation, "popularity"),
      "trainer_seconds": summary.get("component_seconds", {}).get("Trainer")})
  report = os.path.join(summary.get("model", ""), "training.json")
  if os.path.exists(report):
    with open(report) as f:
      training = json.load(f)
    record["warm_start"] = training["warm_start"]
    record["curve"] = [{"epoch": e["epoch"], "seconds": e["seconds"],
                        CURVE_METRIC: round(e.get(CURVE_METRIC, 0.0), 4)}
                       for e in training["epochs"]]
  return record


def time_to_cold_metric(warm: Dict[str, Any], cold: Dict[str, Any]) -> Optional[Dict[str, Any]]:
  """The epoch, and the training seconds, at which the warm run's eval hit rate first reached
  the cold run's final one (None: it never did, or a curve is missing)."""
  if not warm.get("curve") or not cold.get("curve"):
    return None
  target = cold["curve"][-1][CURVE_METRIC]
  elapsed = 0.0
  for epoch in warm["curve"]:
    elapsed += epoch["seconds"]
    if epoch[CURVE_METRIC] >= target:
      return {"cold_final": target, "warm_epoch": epoch["epoch"],
              "cold_epochs": len(cold["curve"]), "warm_seconds": round(elapsed, 1),
              "cold_seconds": round(sum(e["seconds"] for e in cold["curve"]), 1)}
  return {"cold_final": target, "warm_epoch": None, "cold_epochs": len(cold["curve"])}


def table(days: List[Dict[str, Any]]) -> str:
  """The terminal view: a line per day and variant."""
  lines = [f"{'day':<11} {'variant':<5} {'secs':>6} {'cached':>6} {'read':>7} {'blessed':>7} "
           f"{'r@10':>6} {'r@100':>6} {'pop r@100':>9} {'warm':>5} {'reach':>9}"]
  for day in days:
    for variant in VARIANTS:
      r = day[variant]
      reach = day.get("warm_reaches_cold") or {}
      lines.append(
          f"{day['day']:<11} {variant:<5} {r.get('seconds') or 0:>6.0f} "
          f"{len(r.get('cached_components', [])):>6} {r.get('interactions_read') or 0:>7} "
          f"{str(r.get('blessed')):>7} {r.get('metrics', {}).get('recall@10', 0):>6.3f} "
          f"{r.get('metrics', {}).get('recall@100', 0):>6.3f} "
          f"{r.get('popularity', {}).get('recall@100', 0):>9.3f} "
          f"{str(r.get('warm_start', {}).get('warm', '')):>5} "
          + (f"{reach.get('warm_epoch')}/{reach.get('cold_epochs')}" if variant == "warm"
             and reach else ""))
  return "\n".join(lines)


def main(argv: List[str]) -> int:
  args = parse_args(argv)

  from pipeline.data import contract, span_split, spans
  from pipeline.data.movielens import convert_movielens_100k
  from pipeline.runners import cycle
  shutil.rmtree(args.output_root, ignore_errors=True)
  source = os.path.join(args.output_root, "movielens-100k")
  convert_movielens_100k(source, max_users=args.max_users)
  all_spans = os.path.join(args.output_root, "all_spans")
  days = span_split.write_daily_interactions(source, all_spans)
  history, week = days[:-args.days], days[-args.days:]
  roots = {variant: os.path.join(args.output_root, variant) for variant in VARIANTS}
  for root in roots.values():
    data = os.path.join(root, "data")
    for day in history:
      name = spans.span_name(day)
      shutil.copytree(os.path.join(all_spans, contract.INTERACTIONS, name),
                      os.path.join(data, contract.INTERACTIONS, name))
    span_split.write_snapshots(source, data, history[-1])

  results: List[Dict[str, Any]] = []
  started = time.time()
  for index, day in enumerate(week):
    name = spans.span_name(day)
    entry: Dict[str, Any] = {"day": day.isoformat()}
    for variant, flags in VARIANTS.items():
      data = os.path.join(roots[variant], "data")
      shutil.copytree(os.path.join(all_spans, contract.INTERACTIONS, name),
                      os.path.join(data, contract.INTERACTIONS, name))
      print(f"[{index + 1}/{len(week)}] {day} {variant}: cycle "
            f"({time.time() - started:.0f} s so far)", file=sys.stderr, flush=True)
      argv_cycle = ["--data_root", data, "--output_root", os.path.join(roots[variant], "out"),
                    "--no_ranker", "--no_bandit", *flags]
      if args.epochs:
        argv_cycle += ["--epochs", str(args.epochs)]
      if args.warm_start_epochs and variant == "warm":
        argv_cycle += ["--retrieval_settings",
                       json.dumps({"warm_start_epochs": args.warm_start_epochs})]
      entry[variant] = cycle_record(os.path.join(roots[variant], "out"), day.isoformat(),
                                    cycle.main(argv_cycle))
    entry["warm_reaches_cold"] = time_to_cold_metric(entry["warm"], entry["cold"])
    results.append(entry)

  result = {"benchmark": "continuous_training", "dataset": "MovieLens-100K",
            "max_users": args.max_users, "history_days": len(history),
            "warm_start_epochs": args.warm_start_epochs,
            "week": [d.isoformat() for d in week], "cycles": results,
            "seconds": round(time.time() - started, 1)}
  print(table(results), file=sys.stderr)
  with open(os.path.join(args.output_root, "continuous_training.json"), "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
