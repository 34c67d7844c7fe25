"""The anomalies ExampleValidator found, per split, as a table (HTML fragment and page)."""
from __future__ import annotations

from typing import Dict, List

from pipeline.reports import html

# {split: [{feature, short, description}]}, as validation_gate.split_anomalies reads them.
Anomalies = Dict[str, List[Dict[str, str]]]


def section(found: Anomalies) -> str:
  rows = [(split, item["feature"], item["short"], item["description"])
          for split, items in found.items() for item in items]
  if not rows:
    return "<p class=\"good\">No anomalies against the curated schema.</p>"
  return html.table(["split", "feature", "anomaly", "detail"], rows)


def page(found: Anomalies) -> str:
  return html.page("Data anomalies", section(found))
