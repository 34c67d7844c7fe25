"""Dated spans of the raw tables: which folders, and so which files, a run reads.

A table's folder is either flat (its files read as one, as before) or partitioned into dated span
folders, one per day:

    <data_root>/interactions/span=2026-11-30/*.csv|*.jsonl|*.parquet
    <data_root>/interactions/span=2026-12-01/feedback-....jsonl   (the serving log, rotating in)
    <data_root>/items/span=2026-12-01/catalog.csv

Interactions are an event log: a run reads the window of the latest `SpanWindow.spans` spans
(0: all), less those more than `max_age_days` older than the newest (retention). Items and users
are snapshots: the newest span is the table. A folder with both span folders and data files at
its top is refused, since which of them is current would be a guess.

One home for this choice: the ExampleGen's driver fingerprints exactly `window_files`, its
executor reads exactly them, and every Python-side reader (`parsing.read_table`) sees the same.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from pipeline.data import contract

SPAN_PREFIX = "span="
_SPAN_NAME = re.compile(r"^span=(\d{4}-\d{2}-\d{2})$")
# Tables whose spans accumulate (event logs); the others are snapshots, newest span only.
EVENT_TABLES: Tuple[str, ...] = (contract.INTERACTIONS,)


@dataclasses.dataclass(frozen=True)
class SpanWindow:
  """The rolling window of interaction spans a run trains on.

  `spans`: the latest N spans (0: every span). `max_age_days`: spans older than the newest by
  more than this are ignored (None: no limit); nothing is deleted (see `expired_spans`)."""
  spans: int = 0
  max_age_days: Optional[float] = None

  def __post_init__(self):
    if self.spans < 0:
      raise ValueError(f"the span window must be >= 0 spans (0: all), got {self.spans}")
    if self.max_age_days is not None and self.max_age_days < 0:
      raise ValueError(f"max_age_days must be >= 0, got {self.max_age_days}")


def span_date(folder_name: str, table_folder: str) -> datetime.date:
  """The date a span folder is named for; a malformed name is an error naming the folder."""
  match = _SPAN_NAME.match(folder_name)
  try:
    if match:
      return datetime.date.fromisoformat(match.group(1))
  except ValueError:
    pass
  raise contract.ContractError(
      f"{table_folder}/{folder_name}: a span folder is named {SPAN_PREFIX}YYYY-MM-DD "
      f"(e.g. {SPAN_PREFIX}2026-12-01)")


def span_number(name: str) -> int:
  """A span's number for TFX's Examples artifact (its `span` property): YYYYMMDD."""
  return int(name[len(SPAN_PREFIX):].replace("-", ""))


def span_of(path: str) -> str:
  """The span a file (or a row's "file:line" source) was read from: "YYYY-MM-DD", or "" for a
  flat table."""
  parent = path.rsplit("/", 2)[-2] if path.count("/") >= 1 else ""
  match = _SPAN_NAME.match(parent)
  return match.group(1) if match else ""


def span_name(date: datetime.date) -> str:
  return f"{SPAN_PREFIX}{date.isoformat()}"


def _table_folder(data_root: str, table: str) -> str:
  return f"{data_root.rstrip('/')}/{table}"


def _is_data_file(path: str) -> bool:
  return any(path.lower().endswith(ext) for ext in contract.FILE_FORMATS)


def table_spans(data_root: str, table: str) -> List[str]:
  """The table's span folder names, oldest first ([] for a flat table); a table with both span
  folders and data files at its top is refused."""
  folder = _table_folder(data_root, table)
  if not tf.io.gfile.isdir(folder):
    return []
  names = [name.rstrip("/") for name in tf.io.gfile.listdir(folder)]
  spans = [name for name in names if name.startswith(SPAN_PREFIX)]
  if not spans:
    return []
  loose = sorted(name for name in names if _is_data_file(name))
  if loose:
    raise contract.ContractError(
        f"{folder}/ has span folders ({spans[0]}, ...) and data files at its top "
        f"({', '.join(loose[:5])}): move the files into a span folder")
  return sorted(spans, key=lambda name: span_date(name, folder))


def _within_age(spans: Sequence[str], folder: str, max_age_days: Optional[float]) -> List[str]:
  if max_age_days is None or not spans:
    return list(spans)
  newest = span_date(spans[-1], folder)
  return [name for name in spans
          if (newest - span_date(name, folder)).days <= max_age_days]


def window_spans(data_root: str, table: str, window: SpanWindow = SpanWindow()) -> List[str]:
  """The span folders of `table` a run reads, oldest first ([] for a flat table)."""
  spans = table_spans(data_root, table)
  if table not in EVENT_TABLES:
    return spans[-1:]
  kept = _within_age(spans, _table_folder(data_root, table), window.max_age_days)
  return kept[-window.spans:] if window.spans else kept


def expired_spans(data_root: str, window: SpanWindow) -> List[str]:
  """The interaction span folders (full paths) outside the window's age: what retention
  would delete when asked to."""
  folder = _table_folder(data_root, contract.INTERACTIONS)
  spans = table_spans(data_root, contract.INTERACTIONS)
  kept = set(_within_age(spans, folder, window.max_age_days))
  return [f"{folder}/{name}" for name in spans if name not in kept]


def table_files(data_root: str, table: str, window: SpanWindow = SpanWindow()) -> List[str]:
  """The data files of `table` a run reads: the flat folder's, or its window's span folders',
  sorted so runs are reproducible; other files (an open feedback log) are not data."""
  return _files_in(data_root, table, window_spans(data_root, table, window))


def _files_in(data_root: str, table: str, span_names: Sequence[str]) -> List[str]:
  folder = _table_folder(data_root, table)
  folders = [f"{folder}/{name}" for name in span_names] if span_names else [folder]
  return sorted(path for sub in folders for path in tf.io.gfile.glob(f"{sub}/*")
                if _is_data_file(path))


def current_span_folder(data_root: str, table: str,
                        now: Optional[datetime.datetime] = None) -> Optional[str]:
  """Where new rows of a partitioned table go (today's span, UTC); None for a flat table."""
  if not table_spans(data_root, table):
    return None
  today = (now or datetime.datetime.now(datetime.timezone.utc)).date()
  return f"{_table_folder(data_root, table)}/{span_name(today)}"


@dataclasses.dataclass(frozen=True)
class WindowSnapshot:
  """What a run over `window` reads: per table its spans and files, and a fingerprint that
  changes exactly when one of those files does (path, size, modification time)."""
  spans: Dict[str, List[str]]
  files: Dict[str, List[str]]
  fingerprint: str

  @property
  def latest_span(self) -> int:
    """The newest interaction span's number (0: a flat table)."""
    names = self.spans.get(contract.INTERACTIONS) or []
    return span_number(names[-1]) if names else 0

  def describe(self) -> str:
    names = self.spans.get(contract.INTERACTIONS) or []
    files = sum(len(paths) for paths in self.files.values())
    where = (f"interaction spans {names[0][len(SPAN_PREFIX):]}..{names[-1][len(SPAN_PREFIX):]} "
             f"({len(names)})" if names else "unpartitioned tables")
    return f"{where}, {files} file(s)"


def snapshot(data_root: str, window: SpanWindow = SpanWindow()) -> WindowSnapshot:
  """Lists the window's files once (the driver's fingerprint and the executor's reads agree)."""
  spans = {table: window_spans(data_root, table, window) for table in contract.TABLES}
  files = {table: _files_in(data_root, table, spans[table]) for table in contract.TABLES}
  digest = hashlib.sha256()
  for table in contract.TABLES:
    for path in files[table]:
      stat = tf.io.gfile.stat(path)
      digest.update(json.dumps([path, stat.length, stat.mtime_nsec]).encode())
  return WindowSnapshot(spans, files, f"sha256:{digest.hexdigest()}")
