"""The few HTML pieces every report is made of: escaped text, tables, inline images, and a page
with its style inline, so a report is one file that opens offline."""
from __future__ import annotations

import html
from typing import Any, Iterable, Optional, Sequence

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 0.5em; white-space: pre-wrap; }
.bad { color: #b00; font-weight: bold; } .good { color: #070; font-weight: bold; }
img { max-width: 100%; }
.block { display: inline-block; vertical-align: top; margin-right: 1.5em; }
"""


def text(value: Any) -> str:
  return html.escape(str(value))


def number(value: Any) -> str:
  """A metric as the tables show it: 4 decimals for fractions, integers as they are."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return text(value)
  if isinstance(value, int):
    return str(value)
  return f"{value:.0f}" if value.is_integer() and abs(value) >= 1 else f"{value:.4f}"


class Raw:
  """Markup that a table cell takes as is (an image, a link)."""

  def __init__(self, markup: str):
    self.markup = markup


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
  """Cells are escaped (numbers formatted by `number`); a cell that is `Raw` goes in as is."""
  cell = lambda value: value.markup if isinstance(value, Raw) else number(value)  # noqa: E731
  head = "".join(f"<th>{cell(h)}</th>" for h in header)
  body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
  return f"<table><tr>{head}</tr>{body}</table>"


def image(data_uri: str, alt: str) -> str:
  return f'<img src="{data_uri}" alt="{text(alt)}">'


def link(path: str, label: Optional[str] = None) -> str:
  """A link to a local file or folder (the path as written, no network)."""
  return f'<a href="{text(path)}">{text(label or path)}</a>'


def page(title: str, body: str) -> str:
  return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{text(title)}</title>"
          f"<style>{_STYLE}</style></head><body><h1>{text(title)}</h1>{body}</body></html>")
