"""The append-only feedback log: impressions and clicks, in the pipeline's raw data format.

Rows are contract interaction rows (JSONL) written under `<data_root>/interactions/` (into the
current day's span folder when the table is partitioned, pipeline/data/spans.py), so the next
pipeline run ingests them. The file being written ends in `.jsonl.open`, which the pipeline's
readers skip; on rotation (size or age) or at the next start after a crash it is renamed to
`.jsonl` (a torn last line from a crash is dropped first). Every write is flushed and fsynced
before it is acknowledged, so every complete line of an open file is acknowledged feedback
(`acknowledged_rows` reads them, for reports on a running server).

One writer per file: each process holds an exclusive `flock` on its own open file for as long as
it writes it, and start-up recovery only closes the open files whose lock it can take, i.e.
those of a writer that is gone. Two servers on one data root each write their own file.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import uuid
from typing import IO, Any, Dict, Iterator, List, Mapping, Optional

import tensorflow as tf

from pipeline.data import contract, parsing, spans

OPEN_SUFFIX = ".jsonl.open"
FEEDBACK_PREFIX = "feedback-"
log = logging.getLogger(__name__)


def _try_lock(f: IO[bytes]) -> bool:
  """An exclusive lock on the open file, if no other open file description holds one."""
  try:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True
  except BlockingIOError:
    return False


def _hand_over(f: IO[bytes], path: str) -> Optional[str]:
  """Drops a torn last line, renames `*.jsonl.open` to `*.jsonl` and closes `f` (its lock goes
  with it, after the rename); returns the new path (None: the file held no complete line)."""
  try:
    keep = _complete_length(f)
    if keep != f.seek(0, os.SEEK_END):
      f.truncate(keep)
    if keep == 0:
      os.remove(path)
      return None
    closed = path[:-len(".open")]
    os.replace(path, closed)
    return closed
  finally:
    f.close()


def _complete_length(f: IO[bytes], chunk: int = 1 << 16) -> int:
  """Bytes up to and including the last newline, read backwards (files are up to 64 MiB)."""
  end = f.seek(0, os.SEEK_END)
  while end > 0:
    start = max(0, end - chunk)
    f.seek(start)
    newline = f.read(end - start).rfind(b"\n")
    if newline >= 0:
      return start + newline + 1
    end = start
  return 0


def _recover(path: str) -> Optional[str]:
  """Hands over an open file whose writer is gone; leaves a live writer's file alone."""
  try:
    f = open(path, "rb+")  # pylint: disable=consider-using-with
  except FileNotFoundError:  # its writer rotated it meanwhile
    return None
  if not _try_lock(f) or os.fstat(f.fileno()).st_ino != _inode(path):
    f.close()
    log.info("feedback file %s has a live writer; left alone", path)
    return None
  return _hand_over(f, path)


def _inode(path: str) -> int:
  try:
    return os.stat(path).st_ino
  except FileNotFoundError:
    return -1


def feedback_folders(data_root: str) -> List[str]:
  """Where feedback files are: the interactions folder, and for a partitioned one its two
  newest span folders (today's, and yesterday's until its last file rotates)."""
  folder = f"{data_root.rstrip('/')}/{contract.INTERACTIONS}"
  return [folder] + [f"{folder}/{name}"
                     for name in spans.table_spans(data_root, contract.INTERACTIONS)[-2:]]


def open_feedback_files(data_root: str) -> List[str]:
  """The open (being written) feedback files under a data root."""
  return sorted(path for folder in feedback_folders(data_root)
                for path in tf.io.gfile.glob(f"{folder}/*{OPEN_SUFFIX}"))


def acknowledged_rows(path: str) -> Iterator[Dict[str, Any]]:
  """The complete lines of an open feedback file, parsed as contract rows (the last line may be
  a write in progress). If the file was rotated meanwhile, its closed successor is read."""
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      data = f.read()
  except tf.errors.NotFoundError:
    closed = path[:-len(".open")]
    if not tf.io.gfile.exists(closed):
      return
    with tf.io.gfile.GFile(closed, "rb") as f:
      data = f.read()
  complete = data[:data.rfind(b"\n") + 1].decode("utf-8")
  for number, line in enumerate(complete.splitlines(), start=1):
    if line.strip():
      yield parsing.parse_row(contract.INTERACTIONS, json.loads(line), f"{path}:{number}")


def recent_feedback_rows(data_root: str, max_age_s: float, max_bytes: int
                         ) -> Iterator[Dict[str, Any]]:
  """Rows of the newest feedback files (open or closed) written in the last `max_age_s`, at most
  about `max_bytes` of them, oldest file first: what a restarted server needs to know what it
  issued, read in bounded time."""
  since = time.time() - max_age_s
  paths = [os.path.join(folder, name) for folder in feedback_folders(data_root)
           if os.path.isdir(folder) for name in os.listdir(folder)
           if name.startswith(FEEDBACK_PREFIX) and (name.endswith(".jsonl")
                                                    or name.endswith(OPEN_SUFFIX))]
  chosen, total = [], 0
  for path in sorted((p for p in paths if _mtime(p) >= since), key=_mtime, reverse=True):
    if total >= max_bytes:
      break
    chosen.append(path)
    total += os.path.getsize(path) if os.path.exists(path) else 0
  for path in reversed(chosen):
    yield from acknowledged_rows(path)


def _mtime(path: str) -> float:
  try:
    return os.path.getmtime(path)
  except FileNotFoundError:
    return -1.0


class FeedbackLog:
  """Thread-safe, durable appender of contract interaction rows, one locked file at a time.

  Group commit: an append returns once its rows are fsynced, but concurrent appends share one
  fsync (whoever syncs flushes everything written so far, then syncs outside the write lock,
  while the next rows are written), so a disk's fsync time bounds the latency of an append,
  not the server's request rate."""

  def __init__(self, data_root: str, max_bytes: int = 64 << 20, max_age_s: float = 3600.0):
    self.data_root = data_root
    self._dir = os.path.join(data_root, contract.INTERACTIONS)
    os.makedirs(self._dir, exist_ok=True)
    self._max_bytes = max_bytes
    self._max_age_s = max_age_s
    self._lock = threading.Lock()
    self._sync_lock = threading.Lock()  # one fsync at a time; taken before _lock, never after
    self._written = 0  # appends written (to the buffer) so far
    self._synced = 0  # appends known to be on disk
    self._file: Optional[IO[bytes]] = None
    self._path = ""
    self._opened = 0.0
    self._opened_day = time.gmtime()[:3]
    self.recovered = [p for p in (_recover(path) for path in open_feedback_files(data_root))
                      if p]

  @property
  def path(self) -> str:
    """The file being written ("" before the first row)."""
    return self._path

  def _open(self) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    folder = spans.current_span_folder(self.data_root, contract.INTERACTIONS) or self._dir
    os.makedirs(folder, exist_ok=True)
    self._path = os.path.join(
        folder, f"{FEEDBACK_PREFIX}{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}{OPEN_SUFFIX}")
    self._file = open(self._path, "xb+")  # pylint: disable=consider-using-with
    if not _try_lock(self._file):  # a fresh, unique name: nobody else can hold it
      raise RuntimeError(f"could not lock the new feedback file {self._path}")
    self._opened = time.monotonic()
    self._opened_day = time.gmtime()[:3]

  def _rotate_if_due(self) -> None:
    """Rotates past the size or age limit, and when the day's span changed (UTC midnight), so
    that each file lies in the span its rows belong to."""
    if self._file is not None and (
        self._file.tell() >= self._max_bytes
        or time.monotonic() - self._opened >= self._max_age_s
        or (os.path.dirname(self._path) != self._dir and time.gmtime()[:3] != self._opened_day)):
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
      self._written += 1
      mine = self._written
    self._sync(mine)
    return len(lines)

  def _sync(self, mine: int) -> None:
    """Returns once append number `mine` is on disk: synced by an fsync that started after
    it was written (this call's, or a concurrent one's), or by the file's close."""
    with self._sync_lock:
      if self._synced >= mine:
        return
      with self._lock:
        target = self._written
        if self._file is None:  # closed since: closing synced it
          self._synced = target
          return
        self._file.flush()
        fd = os.dup(self._file.fileno())  # still valid if a rotation closes the file meanwhile
      try:
        os.fsync(fd)
      finally:
        os.close(fd)
      self._synced = target

  def close(self) -> Optional[str]:
    """Closes the open file and hands it to the pipeline; returns its final path."""
    with self._lock:
      return self._close_locked()

  def _close_locked(self) -> Optional[str]:
    if self._file is None:
      return None
    f, self._file = self._file, None
    f.flush()
    os.fsync(f.fileno())  # the rows written since the last group fsync
    return _hand_over(f, self._path)


def logged_user(user_id: str, request_id: str) -> str:
  """The user id written to the log: anonymous traffic gets a per-request id, since the raw
  data contract requires one."""
  return user_id or f"anonymous-{request_id}"


def anonymous(logged_user_id: str, request_id: str) -> bool:
  """Whether a logged row's user is a request's stand-in (no user state is kept for it)."""
  return logged_user_id == logged_user("", request_id)


def feedback_row(request_id: str, user_id: str, item_id: str, event: str, position: int,
                 propensity: float, variant: str, rating: Optional[float] = None,
                 timestamp: Optional[int] = None) -> Dict[str, Any]:
  """One contract row for a shown or clicked item."""
  return {"user_id": user_id, "item_id": item_id, "event": event,
          "timestamp": int(timestamp if timestamp is not None else time.time()),
          "rating": rating, "request_id": request_id, "position": position,
          "propensity": propensity, "variant": variant}
