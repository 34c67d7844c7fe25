"""How an evaluator shows its verdict: a metrics table per slice (printed and in HTML) and a
JSON summary beside the TFMA output, the same layout for the retrieval and cross-encoder evaluators."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Sequence

import tensorflow as tf

OVERALL = "overall"
# metrics[model][slice][metric] = value
Metrics = Dict[str, Dict[str, Dict[str, float]]]


@dataclasses.dataclass(frozen=True)
class EvaluationReport:
  """One evaluator's report: its title, file names, metric rows and model columns."""
  title: str
  json_name: str
  html_name: str
  metric_names: Sequence[str]
  models: Sequence[str]

  def table(self, metrics: Metrics, slice_name: str = OVERALL) -> str:
    """A fixed-width table: one row per metric, one column per model that was evaluated."""
    models = [m for m in self.models if m in metrics]
    width = max([14] + [len(m) + 2 for m in models])
    lines = [f"{'metric':<14}" + "".join(f"{m:>{width}}" for m in models)]
    for name in self.metric_names:
      lines.append(f"{name:<14}" + "".join(
          f"{metrics[m].get(slice_name, {}).get(name, float('nan')):>{width}.4f}" for m in models))
    return "\n".join(lines)

  def html(self, metrics: Metrics, blessed: bool, reasons: Sequence[str]) -> str:
    sections = [f"<h2>{s}</h2><pre>{self.table(metrics, s)}</pre>"
                for s in sorted(metrics[self.models[0]], key=lambda s: (s != OVERALL, s))]
    verdict = "BLESSED" if blessed else "NOT BLESSED"
    return (f"<html><body><h1>{self.title}: {verdict}</h1><ul>"
            + "".join(f"<li>{r}</li>" for r in reasons) + "</ul>" + "".join(sections)
            + "</body></html>")

  def publish(self, output_dir: str, metrics: Metrics, blessed: bool, reasons: Sequence[str]
              ) -> None:
    """Writes the JSON summary and the HTML page into `output_dir`; prints the overall table."""
    summary = {"blessed": blessed, "reasons": list(reasons), "metrics": metrics}
    with tf.io.gfile.GFile(os.path.join(output_dir, self.json_name), "w") as f:
      json.dump(summary, f, indent=2, sort_keys=True)
    with tf.io.gfile.GFile(os.path.join(output_dir, self.html_name), "w") as f:
      f.write(self.html(metrics, blessed, reasons))
    print(self.table(metrics), "\n" + "\n".join(reasons), flush=True)
