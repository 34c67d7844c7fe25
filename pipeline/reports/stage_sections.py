"""A stage's part of the run page: its metrics beside its baselines (tables per slice, the
recall@k curve, per-slice bars of its gate metric), or the bandit's off-policy estimates with
their intervals; its blessing with the reasons, and where it was pushed."""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Mapping, Optional

from pipeline.evaluation.report import OVERALL
from pipeline.pipeline_def import Stage
from pipeline.reports import html, plots

_RECALL = re.compile(r"recall@(\d+)$")


def _verdict(outcome: Mapping[str, Any]) -> str:
  blessed = outcome.get("blessed")
  css, word = ("good", "BLESSED") if blessed else ("bad", "NOT BLESSED")
  pushed = outcome.get("pushed_to") or "nothing pushed"
  return (f'<p><span class="{css}">{word}</span>; pushed to: {html.text(pushed)}</p>')


def _gate_metric(reasons: List[str], metrics: Mapping[str, Mapping[str, Mapping[str, float]]]
                 ) -> Optional[str]:
  """The first metric the gate's reasons name ("recall@100: candidate ... > ...")."""
  names = {name for slices in metrics.values() for values in slices.values() for name in values}
  return next((r.split(":", 1)[0] for r in reasons if r.split(":", 1)[0] in names), None)


def _plots(metrics: Mapping[str, Mapping[str, Mapping[str, float]]], gate_metric: Optional[str],
           title: str) -> str:
  images = []
  overall = {model: slices[OVERALL] for model, slices in metrics.items() if OVERALL in slices}
  curve = {model: sorted((int(_RECALL.match(name).group(1)), value)
                         for name, value in values.items() if _RECALL.match(name))
           for model, values in overall.items()}
  if any(len(points) > 1 for points in curve.values()):
    images.append(html.image(plots.curves(curve, f"{title}: recall@k (overall)", "k", "recall"),
                             "recall at k"))
  if gate_metric:
    by_slice = {model: {s: values[gate_metric] for s, values in slices.items()
                        if gate_metric in values} for model, slices in metrics.items()}
    images.append(html.image(plots.grouped_bars(by_slice, f"{title}: {gate_metric} per slice"),
                             f"{gate_metric} per slice"))
  return "".join(images)


def evaluated(stage: Stage, outcome: Mapping[str, Any]) -> str:
  """An evaluated stage: tables (one per slice, a column per model), plots, verdict, links."""
  evaluation = outcome["evaluation"]
  metrics = evaluation["metrics"]
  models = [m for m in stage.report.models if m in metrics]
  slices = sorted({s for m in models for s in metrics[m]}, key=lambda s: (s != OVERALL, s))
  tables = "".join(
      f"<div class=\"block\"><h4>{html.text(s)}</h4>" + html.table(
          ["metric", *models],
          [[name] + [metrics[m].get(s, {}).get(name, "-") for m in models]
           for name in stage.report.metric_names if any(name in metrics[m].get(s, {})
                                                        for m in models)]) + "</div>"
      for s in slices)
  reasons = "".join(f"<li>{html.text(r)}</li>" for r in evaluation["reasons"])
  report = outcome["evaluation_report"]
  return (f"<h3>{html.text(stage.report.title)} ({html.text(stage.model_name)})</h3>"
          f"{_verdict(outcome)}<ul>{reasons}</ul>"
          f"{_plots(metrics, _gate_metric(evaluation['reasons'], metrics), stage.model_name)}"
          f"{tables}<p>evaluator report: {html.link(report)}; TFMA output: "
          f"{html.link(os.path.dirname(report))}</p>")


def _interval(value: Mapping[str, float]) -> str:
  return f"{value['value']:.5f} [{value['lower']:.5f}, {value['upper']:.5f}]"


def bandit(stage: Stage, outcome: Mapping[str, Any]) -> str:
  """The bandit: each estimator's policy value and lift over the logging policy, with
  intervals, as a table and as plots; the data it was judged on (simulated or logged)."""
  report = outcome["evaluation"]
  ope, data = report["ope"], report["data"]
  estimators: Dict[str, Any] = ope["estimators"]
  level = f"{100 * ope['confidence']:g}% interval"
  rows = [["logging", html.Raw(_interval(ope["logging"])), "-"]] + [
      [name, html.Raw(_interval(value)), html.Raw(_interval(value["lift"]))]
      for name, value in estimators.items()]
  interval = lambda v: (v["value"], v["lower"], v["upper"])  # noqa: E731
  images = (html.image(plots.intervals({n: interval(v) for n, v in estimators.items()},
                                       f"policy value ({level}); dashed: logging policy",
                                       ope["logging"]["value"]), "policy value")
            + html.image(plots.intervals({n: interval(v["lift"]) for n, v in estimators.items()},
                                         f"lift over logging ({level})", 0.0), "lift"))
  source = ("SIMULATED log: " if data["simulated"] else "logged feedback: ") + data["description"]
  return (f"<h3>Bandit policy, off-policy evaluation ({html.text(stage.model_name)})</h3>"
          f"{_verdict(outcome)}<p>{html.text(report['blessing']['reason'])}</p>"
          f"<p>{html.text(source)}</p>{images}"
          + html.table(["estimator", f"value {level}", f"lift {level}"], rows)
          + f"<p>rows {ope['n_rows']}, positive rewards {ope['n_positive_rewards']}, effective "
          f"sample size {ope['effective_sample_size']:.1f}; report: "
          f"{html.link(outcome['evaluation_report'])}</p>")


def section(stage: Stage, outcome: Mapping[str, Any]) -> str:
  """The stage's section ('' when it was not evaluated in this run)."""
  if "evaluation" not in outcome:
    return ""
  return bandit(stage, outcome) if stage.report is None else evaluated(stage, outcome)
