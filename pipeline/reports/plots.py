"""Plots as inline PNG data URIs (matplotlib's Agg canvas, no display, no files): bars per
group, curves, and values with intervals."""
from __future__ import annotations

import base64
import io
from typing import Dict, Mapping, Optional, Sequence, Tuple

from matplotlib.figure import Figure

_DPI = 80


def _data_uri(figure: Figure) -> str:
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=_DPI)
  return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def grouped_bars(values: Mapping[str, Mapping[str, float]], title: str,
                 horizontal: bool = False, size: Tuple[float, float] = (6.0, 3.0)) -> str:
  """values[series][group]: one bar per series in each group (groups in the first series'
  order, then any others)."""
  groups = list(dict.fromkeys(g for series in values.values() for g in series))
  figure = Figure(figsize=size)
  axes = figure.subplots()
  width = 0.8 / max(1, len(values))
  for index, (series, by_group) in enumerate(values.items()):
    positions = [g + index * width - 0.4 + width / 2 for g in range(len(groups))]
    heights = [by_group.get(group, 0.0) for group in groups]
    (axes.barh if horizontal else axes.bar)(positions, heights, width, label=series)
  if horizontal:
    axes.set_yticks(range(len(groups)), groups, fontsize=7)
    axes.invert_yaxis()
  else:
    axes.set_xticks(range(len(groups)), groups, fontsize=7, rotation=30, ha="right")
  axes.set_title(title, fontsize=9)
  axes.legend(fontsize=7)
  return _data_uri(figure)


def curves(values: Mapping[str, Sequence[Tuple[float, float]]], title: str, x_label: str,
           y_label: str) -> str:
  """values[series] = [(x, y)]: one line with markers per series."""
  figure = Figure(figsize=(5.0, 3.0))
  axes = figure.subplots()
  for series, points in values.items():
    axes.plot([x for x, _ in points], [y for _, y in points], marker="o", label=series)
  axes.set(xlabel=x_label, ylabel=y_label)
  axes.set_title(title, fontsize=9)
  axes.legend(fontsize=7)
  return _data_uri(figure)


def intervals(values: Dict[str, Tuple[float, float, float]], title: str,
              reference: Optional[float] = None) -> str:
  """values[name] = (value, lower, upper): a point with its interval per name, and a
  dashed line at `reference` (e.g. the logging policy's value, or 0 for a lift)."""
  figure = Figure(figsize=(5.0, 2.8))
  axes = figure.subplots()
  names = list(values)
  centre = [values[n][0] for n in names]
  errors = [[values[n][0] - values[n][1] for n in names], [values[n][2] - values[n][0]
                                                           for n in names]]
  axes.errorbar(range(len(names)), centre, yerr=errors, fmt="o", capsize=4)
  if reference is not None:
    axes.axhline(reference, linestyle="--", color="grey")
  axes.set_xticks(range(len(names)), names, fontsize=8)
  axes.set_title(title, fontsize=9)
  return _data_uri(figure)


def histograms(values: Mapping[str, Sequence[Tuple[float, float, float]]], title: str) -> str:
  """values[series] = [(low, high, count)] (contiguous buckets): each series' share of its
  count per bucket, as steps, so series of different sizes compare."""
  figure = Figure(figsize=(4.5, 2.4))
  axes = figure.subplots()
  for series, buckets in values.items():
    total = sum(count for _, _, count in buckets) or 1.0
    edges = [low for low, _, _ in buckets] + [buckets[-1][1]]
    axes.stairs([count / total for _, _, count in buckets], edges, label=series)
  axes.set_ylabel("share", fontsize=8)
  axes.set_title(title, fontsize=9)
  axes.legend(fontsize=7)
  return _data_uri(figure)
