"""The run page, `runs/<run id>/index.html`: the whole run in one self-contained file.

Built from the run summary (pipeline/runners/local_runner.py `run`, pipeline/run_report.py
`run_outcome`) and the data reports of this run (run_files.py): the outcome, the error of a
failed run, the data (skipped rows, anomalies, drift, statistics train vs eval), every stage's
metrics beside its baselines, the blessings with their reasons, the pushes, the timings per
component, and where TensorBoard's logs and TFMA's output are.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Tuple

import tensorflow as tf

from pipeline import pipeline_def
from pipeline.components import validation_gate as gate
from pipeline.config import PipelineConfig
from pipeline.reports import anomalies_page, html, plots, run_files, stage_sections, \
    statistics_page
from pipeline.reports.run_files import RunFiles

PAGE = "index.html"


def _outcomes(summary: Mapping[str, Any]) -> List[Tuple[pipeline_def.Stage, Mapping[str, Any]]]:
  """Each stage the summary has, with its outcome (the retriever's is the summary's top level)."""
  return [(stage, summary if stage == pipeline_def.RETRIEVAL_STAGE else summary[stage.model_name])
          for stage in pipeline_def.ALL_STAGES
          if stage == pipeline_def.RETRIEVAL_STAGE or stage.model_name in summary]


def _overview(summary: Mapping[str, Any]) -> str:
  status = summary["status"]
  css = "good" if status == "succeeded" else "bad"
  parts = [f'<p>Status: <span class="{css}">{html.text(status)}</span> in '
           f'{summary["seconds"]} s; data: {html.text(summary["data_root"])}</p>']
  if "error" in summary:
    parts.append(f"<h2>Error</h2><pre>{html.text(summary['error'])}</pre>")
  rows = [[stage.model_name, "yes" if outcome.get("blessed") else "no",
           outcome.get("pushed_to") or "nothing pushed"]
          for stage, outcome in _outcomes(summary) if "blessed" in outcome]
  if rows:
    parts.append("<h2>Blessings and pushes</h2>"
                 + html.table(["model", "blessed", "pushed to"], rows))
  return "".join(parts)


def _drift(compared: List[Dict[str, Any]]) -> str:
  rows = [[c["split"], f"{c['previous']} -> {c['newest']}", name, f["measure"], f["distance"],
           f["threshold"], "DRIFTED" if f["drifted"] else "ok"]
          for c in compared for name, f in c["features"].items()]
  rows += [[c["split"], f"{c['previous']} -> {c['newest']}", "-", "-", "-", "-", c["skipped"]]
           for c in compared if "skipped" in c]
  if not rows:
    return "<p>No spans to compare.</p>"
  return html.table(["split", "spans", "feature", "measure", "distance", "threshold", "verdict"],
                    rows)


def _data(summary: Mapping[str, Any], files: RunFiles) -> str:
  parts = ["<h2>Data</h2>"]
  skipped = summary.get("invalid_rows")
  if skipped:
    parts.append(f"<p>Skipped {skipped['skipped']} invalid row(s) of {skipped['rows_read']} read "
                 f"(report: {html.link(skipped['report'])})</p>"
                 + html.table(["kind", "rows"], sorted(skipped["kinds"].items())))
  found = files.validation_json(gate.ANOMALIES_JSON)
  if found is not None:
    parts.append("<h3>Anomalies</h3>" + anomalies_page.section(found))
  compared = files.validation_json(gate.DRIFT_REPORT)
  if compared is not None:
    parts.append("<h3>Drift between spans</h3>" + _drift(compared))
  reports = [(name, files.validation_report(name)) for name in (
      gate.STATISTICS_REPORT, gate.ANOMALIES_REPORT, gate.ANOMALIES_JSON, gate.DRIFT_REPORT)]
  links = ", ".join(html.link(path, name) for name, path in reports if path)
  if links:
    parts.append(f"<p>Validation reports: {links}</p>")
  if files.statistics_uri:
    parts.append("<h3>Statistics</h3>" + statistics_page.section(
        statistics_page.load_default_slices(files.statistics_uri, files.statistics_splits)))
  return "".join(parts) if len(parts) > 1 else ""


def _timings(summary: Mapping[str, Any]) -> str:
  seconds: Dict[str, float] = summary.get("component_seconds", {})
  if not seconds:
    return ""
  cached = set(summary.get("cached_components", []))
  rows = [[name, f"{value:.1f}", "cached" if name in cached else ""]
          for name, value in seconds.items()]
  return ("<h2>Timings per component</h2>"
          + html.image(plots.grouped_bars({"seconds": seconds}, "seconds per component",
                                          horizontal=True, size=(6.0, 0.25 * len(seconds) + 1)),
                       "seconds per component")
          + html.table(["component", "seconds", ""], rows))


def _files(summary: Mapping[str, Any], files: RunFiles) -> str:
  rows = [["run log", html.Raw(html.link(summary["log"]))],
          ["pipeline root", html.Raw(html.link(summary["pipeline_root"]))],
          ["serving root", html.Raw(html.link(summary["serving_root"]))]]
  rows += [[f"TensorBoard logs ({model})", html.Raw(
      f"{html.link(folder)}: <code>tensorboard --logdir {html.text(folder)}</code>")]
           for model, folder in files.tensorboard.items()]
  return "<h2>Files</h2>" + html.table(["what", "where"], rows)


def render(summary: Mapping[str, Any], files: RunFiles) -> str:
  stages = "".join(stage_sections.section(stage, outcome)
                   for stage, outcome in _outcomes(summary))
  return html.page(f"Run {summary['run_id']}", _overview(summary)
                   + (f"<h2>Models</h2>{stages}" if stages else "") + _data(summary, files)
                   + _timings(summary) + _files(summary, files))


def write(summary: Mapping[str, Any], config: PipelineConfig, run_dir: str) -> str:
  """Writes the run page into the run folder; returns its path."""
  path = os.path.join(run_dir, PAGE)
  page = render(summary, run_files.locate(config, summary["run_id"], run_dir))
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(page)
  return path
