"""The A/B report: per-variant click-through from the serving feedback log, counted in Beam.

Offline: it reads the feedback the cascade logged under a data root (the variants come from the
routing of `serving/experiment.py`), including what a running server has acknowledged so far in
its open `.jsonl.open` file (complete lines only; the pipeline's own readers keep skipping open
files). CTR = clicks / impressions per variant, Wilson 95% intervals, and a pooled
two-proportion z-test of every variant against the control, reported only when both have at
least MIN_IMPRESSIONS impressions and MIN_CLICKS clicks (below that the normal approximation
behind the test does not hold, and a handful of clicks would read as a verdict): "too few".

    python -m pipeline.ab_report --data_root DIR [--output_dir DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from typing import Dict, Iterator, List, Mapping, Optional, Tuple


def parse_args(argv: List[str]) -> argparse.Namespace:
  """Above the imports of Beam and TensorFlow, so that --help and a bad flag answer at once."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_root", required=True,
                      help="the data root whose interactions/ hold the serving feedback log")
  parser.add_argument("--control", default=None,
                      help="the variant every other is tested against (default: the "
                           "experiment's default variant)")
  parser.add_argument("--output_dir", default=None, help="writes ab_report.json and .png here")
  return parser.parse_args(argv)


if __name__ == "__main__":
  parse_args(sys.argv[1:])

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from pipeline.data import contract, parsing  # noqa: E402
from pipeline.data.beam_io import ReadTable  # noqa: E402
from serving.experiment import DEFAULT_VARIANT  # noqa: E402
from serving.feedback_log import acknowledged_rows, open_feedback_files  # noqa: E402

Z_95 = 1.959963984540054
# The minimum sample per variant for a p-value: the usual rule for the normal approximation of a
# proportion (at least 10 successes), over at least 100 trials.
MIN_IMPRESSIONS = 100
MIN_CLICKS = 10
TOO_FEW = "too few"


def wilson_interval(clicks: int, shown: int) -> Tuple[float, float]:
  """The Wilson score 95% interval of a CTR; exact at 0 and 1, where round-off would put the
  bound past the observed rate."""
  if shown == 0:
    return 0.0, 1.0
  p = clicks / shown
  denominator = 1 + Z_95 ** 2 / shown
  centre = (p + Z_95 ** 2 / (2 * shown)) / denominator
  half = Z_95 * math.sqrt(p * (1 - p) / shown + Z_95 ** 2 / (4 * shown ** 2)) / denominator
  low = 0.0 if clicks == 0 else max(0.0, min(p, centre - half))
  high = 1.0 if clicks == shown else min(1.0, max(p, centre + half))
  return low, high


def two_proportion_p_value(clicks_a: int, shown_a: int, clicks_b: int, shown_b: int) -> float:
  """Two-sided p-value of the pooled z-test that both variants have the same CTR."""
  if not shown_a or not shown_b:
    return 1.0
  pooled = (clicks_a + clicks_b) / (shown_a + shown_b)
  se = math.sqrt(pooled * (1 - pooled) * (1 / shown_a + 1 / shown_b))
  if se == 0:
    return 1.0
  z = (clicks_b / shown_b - clicks_a / shown_a) / se
  return math.erfc(abs(z) / math.sqrt(2))


def _impression_outcome(rows) -> Iterator[Tuple[str, Tuple[int, int]]]:
  """(variant, (1, clicked)) for one (request, item) group, if it holds an impression."""
  variant, clicked = None, 0
  for row in rows:
    if row["event"] == contract.IMPRESSION:
      variant = row["variant"] or DEFAULT_VARIANT
    elif row["event"] == contract.CLICK:
      clicked = 1
  if variant is not None:
    yield variant, (1, clicked)


def _has_closed_files(data_root: str) -> bool:
  try:
    return bool(parsing.list_table_files(data_root, contract.INTERACTIONS))
  except contract.ContractError:
    return False


def count_feedback(data_root: str, beam_args: Optional[List[str]] = None
                   ) -> Dict[str, Dict[str, int]]:
  """{variant: {impressions, clicks}} from the feedback rows under the data root, in Beam.

  A click counts when the log holds an impression of that item in the same request. Open
  feedback files are listed first: one rotated meanwhile is read under its new name, possibly
  twice, which the grouping by (request, item) makes harmless.
  """
  open_files = open_feedback_files(data_root)
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "counts")
    with beam.Pipeline(options=PipelineOptions(beam_args or [])) as p:
      sources = [p | "OpenFiles" >> beam.Create(open_files)
                 | "Acknowledged" >> beam.FlatMap(acknowledged_rows)]
      if not open_files or _has_closed_files(data_root):  # else: a root of live feedback only
        sources.append(p | ReadTable(data_root, contract.INTERACTIONS))
      _ = (tuple(sources) | "AllFeedback" >> beam.Flatten()
           | "Logged" >> beam.Filter(lambda row: bool(row["request_id"]))
           | "ByShownItem" >> beam.Map(lambda row: ((row["request_id"], row["item_id"]), row))
           | "Group" >> beam.GroupByKey()
           | "Outcome" >> beam.FlatMap(lambda kv: _impression_outcome(kv[1]))
           | "Sum" >> beam.CombinePerKey(lambda pairs: tuple(map(sum, zip(*pairs))) or (0, 0))
           | "Json" >> beam.Map(lambda kv: json.dumps(
               [kv[0], {"impressions": kv[1][0], "clicks": kv[1][1]}]))
           | "Write" >> beam.io.WriteToText(out, shard_name_template=""))
    with open(out) as f:
      return dict(json.loads(line) for line in f if line.strip())


def enough(counts: Mapping[str, int]) -> bool:
  """Whether a variant's sample is large enough for the z-test."""
  return counts["impressions"] >= MIN_IMPRESSIONS and counts["clicks"] >= MIN_CLICKS


def report(counts: Mapping[str, Mapping[str, int]], control: Optional[str] = None
           ) -> List[Dict[str, object]]:
  """Rows of the A/B table; the control is the named variant or the first in sorted order. A
  variant compared with the control has a p-value only if both have enough data; otherwise
  `p_value_vs_control` is None and `verdict` says "too few"."""
  names = sorted(counts)
  control = control if control in counts else (names[0] if names else None)
  rows = []
  for name in names:
    shown, clicks = counts[name]["impressions"], counts[name]["clicks"]
    low, high = wilson_interval(clicks, shown)
    p_value, verdict = None, "control"
    if name != control:
      verdict = TOO_FEW
      if enough(counts[name]) and enough(counts[control]):
        p_value = two_proportion_p_value(counts[control]["clicks"],
                                         counts[control]["impressions"], clicks, shown)
        verdict = "different" if p_value < 0.05 else "no difference shown"
    rows.append({"variant": name, "impressions": shown, "clicks": clicks,
                 "ctr": clicks / shown if shown else 0.0, "ctr_95_low": low, "ctr_95_high": high,
                 "p_value_vs_control": p_value, "verdict": verdict, "control": name == control,
                 "min_impressions": MIN_IMPRESSIONS, "min_clicks": MIN_CLICKS})
  return rows


def table(rows: List[Dict[str, object]]) -> str:
  lines = [f"{'variant':<14}{'impressions':>12}{'clicks':>8}{'CTR':>8}{'95% CI':>18}{'p vs control':>14}"]
  for r in rows:
    p = (r["verdict"] if r["p_value_vs_control"] is None
         else f"{r['p_value_vs_control']:.4f}")
    lines.append(f"{r['variant']:<14}{r['impressions']:>12}{r['clicks']:>8}{r['ctr']:>8.4f}"
                 f"{'[%.4f, %.4f]' % (r['ctr_95_low'], r['ctr_95_high']):>18}{p:>14}")
  if any(r["verdict"] == TOO_FEW for r in rows):
    lines.append(f"{TOO_FEW}: a p-value needs at least {MIN_IMPRESSIONS} impressions and "
                 f"{MIN_CLICKS} clicks in both the variant and the control")
  return "\n".join(lines)


def plot(rows: List[Dict[str, object]], path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
  figure, axes = pyplot.subplots(figsize=(5, 3))
  ctr = [r["ctr"] for r in rows]
  errors = [[r["ctr"] - r["ctr_95_low"] for r in rows], [r["ctr_95_high"] - r["ctr"] for r in rows]]
  axes.bar([r["variant"] for r in rows], ctr, yerr=errors, capsize=6, color="#4c78a8")
  axes.set_ylabel("click-through rate (95% CI)")
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  pyplot.close(figure)


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  rows = report(count_feedback(args.data_root), args.control)
  print(table(rows))
  if args.output_dir:
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "ab_report.json"), "w") as f:
      json.dump(rows, f, indent=2)
    plot(rows, os.path.join(args.output_dir, "ab_report.png"))
    print(os.path.join(args.output_dir, "ab_report.json"))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
