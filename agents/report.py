"""The OPE table as text, JSON-ready dicts and HTML."""
from __future__ import annotations

import dataclasses
import html
from typing import Any, Dict, Mapping

from agents.ope import OPETable


def table_dict(table: OPETable) -> Dict[str, Any]:
  return {
      "n_rows": table.n_rows,
      "n_positive_rewards": table.n_positive_rewards,
      "confidence": table.confidence,
      "n_bootstrap": table.n_bootstrap,
      "effective_sample_size": table.effective_sample_size,
      "positive_rewards_matched": table.positive_rewards_matched,
      "logging": dataclasses.asdict(table.logging),
      "estimators": {name: {**dataclasses.asdict(value),
                            "lift": dataclasses.asdict(table.lift[name])}
                     for name, value in table.policy.items()},
  }


def table_text(table: OPETable) -> str:
  """Fixed-width: value [interval] of the policy and of its lift over the logging policy."""
  level = f"{100 * table.confidence:g}%"
  lines = [f"{'estimator':<10}{'value':>10}  {level + ' interval':<24}{'lift':>10}  "
           f"{level + ' interval':<24}",
           f"{'logging':<10}{table.logging.value:>10.5f}  "
           f"[{table.logging.lower:.5f}, {table.logging.upper:.5f}]"]
  for name, value in table.policy.items():
    lift = table.lift[name]
    lines.append(f"{name:<10}{value.value:>10.5f}  {f'[{value.lower:.5f}, {value.upper:.5f}]':<24}"
                 f"{lift.value:>+10.5f}  [{lift.lower:+.5f}, {lift.upper:+.5f}]")
  lines.append(f"rows {table.n_rows}, positive rewards {table.n_positive_rewards} "
               f"({table.positive_rewards_matched} where the policy agrees with the log), "
               f"effective sample size {table.effective_sample_size:.1f}, {table.n_bootstrap} "
               "bootstrap redraws")
  return "\n".join(lines)


def report_html(report: Mapping[str, Any], table: OPETable) -> str:
  verdict = "BLESSED" if report["blessing"]["blessed"] else "NOT BLESSED"
  data = report["data"]
  banner = (f"<p style='color:#b00'><b>SIMULATED DATA:</b> {html.escape(data['description'])}</p>"
            if data["simulated"] else f"<p>Logged feedback: {html.escape(data['description'])}</p>")
  truth = report.get("simulated_truth")
  truth_html = (f"<p>Simulated truth (known only in simulation): policy {truth['policy']:.5f}, "
                f"logging {truth['logging']:.5f}, lift {truth['lift']:+.5f}</p>" if truth else "")
  return ("<html><body>"
          f"<h1>Bandit policy off-policy evaluation: {verdict}</h1>{banner}"
          f"<p>{html.escape(report['blessing']['reason'])}</p>"
          f"<pre>{html.escape(table_text(table))}</pre>{truth_html}"
          f"<p>Validation: {html.escape(data['validation'])}</p>"
          "</body></html>")
