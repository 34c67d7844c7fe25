"""A flat data root rewritten as dated spans: the interactions in one span per UTC day of their
timestamps, the catalog and users as one snapshot span. What a simulated schedule (the
continuous-training benchmark, its tests) replays day by day.

Rows stream from the source tables to one open writer per day, so memory holds the writers, not
the log.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Any, Dict, List, Mapping

import tensorflow as tf

from pipeline.data import contract, parsing, spans

PART_FILE = "part.jsonl"


def json_line(row: Mapping[str, Any]) -> str:
  """A parsed row as the contract's JSONL (no provenance field, empty fields left out)."""
  return json.dumps({key: value for key, value in row.items()
                     if key != contract.SOURCE_FIELD and value not in (None, "", [])}) + "\n"


def day_of(timestamp: int) -> datetime.date:
  return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).date()


def write_daily_interactions(source_root: str, target_root: str) -> List[datetime.date]:
  """Writes the source's interactions into `<target>/interactions/span=<day>/part.jsonl`;
  returns the days, oldest first."""
  writers: Dict[datetime.date, Any] = {}
  try:
    for row in parsing.read_table(source_root, contract.INTERACTIONS):
      day = day_of(row["timestamp"])
      if day not in writers:
        folder = os.path.join(target_root, contract.INTERACTIONS, spans.span_name(day))
        tf.io.gfile.makedirs(folder)
        writers[day] = tf.io.gfile.GFile(os.path.join(folder, PART_FILE), "w")
      writers[day].write(json_line(row))
  finally:
    for writer in writers.values():
      writer.close()
  return sorted(writers)


def write_snapshots(source_root: str, target_root: str, day: datetime.date) -> None:
  """Writes the source's catalog and users as the snapshot span of `day`."""
  for table in (contract.ITEMS, contract.USERS):
    folder = os.path.join(target_root, table, spans.span_name(day))
    tf.io.gfile.makedirs(folder)
    with tf.io.gfile.GFile(os.path.join(folder, PART_FILE), "w") as f:
      for row in parsing.read_table(source_root, table):
        f.write(json_line(row))
