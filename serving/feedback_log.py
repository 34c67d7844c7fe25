"""The append-only feedback log: impressions and clicks, in the pipeline's raw data format.

Rows are contract interaction rows (JSONL) written under `<data_root>/interactions/`, so the next
pipeline run ingests them. The file being written ends in `.jsonl.open`, which the readers skip;
on rotation (size or age) or at the next start after a crash it is renamed to `.jsonl` (a torn
last line from a crash is dropped first). Every write is flushed and fsynced before it is
acknowledged.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from typing import Any, Dict, List, Mapping, Optional

from pipeline.data import contract

OPEN_SUFFIX = ".jsonl.open"


def _close_file(path: str) -> Optional[str]:
  """Drops a torn last line, then renames `*.jsonl.open` to `*.jsonl`; returns the new path."""
  with open(path, "rb+") as f:
    data = f.read()
    keep = data.rfind(b"\n") + 1
    if keep != len(data):
      f.truncate(keep)
  if keep == 0:
    os.remove(path)
    return None
  closed = path[:-len(".open")]
  os.replace(path, closed)
  return closed


class FeedbackLog:
  """Thread-safe, durable appender of contract interaction rows."""

  def __init__(self, data_root: str, max_bytes: int = 64 << 20, max_age_s: float = 3600.0):
    self._dir = os.path.join(data_root, contract.INTERACTIONS)
    os.makedirs(self._dir, exist_ok=True)
    self._max_bytes = max_bytes
    self._max_age_s = max_age_s
    self._lock = threading.Lock()
    self._file = None
    self._path = ""
    self._opened = 0.0
    self.recovered = [p for p in (_close_file(os.path.join(self._dir, name))
                                  for name in sorted(os.listdir(self._dir))
                                  if name.endswith(OPEN_SUFFIX)) if p]

  def _open(self) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    self._path = os.path.join(self._dir, f"feedback-{stamp}-{uuid.uuid4().hex[:8]}{OPEN_SUFFIX}")
    self._file = open(self._path, "ab")
    self._opened = time.monotonic()

  def _rotate_if_due(self) -> None:
    if self._file is not None and (self._file.tell() >= self._max_bytes
                                   or time.monotonic() - self._opened >= self._max_age_s):
      self._close_locked()

  def append(self, rows: List[Mapping[str, Any]]) -> int:
    """Writes rows (validated against the contract) durably; returns how many."""
    lines = []
    for row in rows:
      unknown = set(row) - {c.name for c in contract.INTERACTION_COLUMNS}
      if unknown:
        raise ValueError(f"feedback row has fields outside the contract: {sorted(unknown)}")
      lines.append(json.dumps({k: v for k, v in row.items() if v not in (None, "")},
                              sort_keys=True).encode() + b"\n")
    with self._lock:
      self._rotate_if_due()
      if self._file is None:
        self._open()
      self._file.write(b"".join(lines))
      self._file.flush()
      os.fsync(self._file.fileno())
    return len(lines)

  def close(self) -> Optional[str]:
    """Closes the open file and hands it to the pipeline; returns its final path."""
    with self._lock:
      return self._close_locked()

  def _close_locked(self) -> Optional[str]:
    if self._file is None:
      return None
    self._file.close()
    self._file = None
    return _close_file(self._path)


def feedback_row(request_id: str, user_id: str, item_id: str, event: str, position: int,
                 propensity: float, variant: str, rating: Optional[float] = None,
                 timestamp: Optional[int] = None) -> Dict[str, Any]:
  """One contract row for a shown or clicked item."""
  return {"user_id": user_id, "item_id": item_id, "event": event,
          "timestamp": int(timestamp if timestamp is not None else time.time()),
          "rating": rating, "request_id": request_id, "position": position,
          "propensity": propensity, "variant": variant}
