"""A run's terminal: one progress line per component start and finish (from LocalDagRunner's
own log lines) and the run's report on stdout, while the whole INFO log and the libraries'
noise on stderr (TensorFlow's C++ log, CUDA plugin registration errors, Gym's and Python's
warnings) go to the run folder's `pipeline.log`."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Dict, Iterator, List, Optional

from absl import logging as absl_logging


class ComponentProgress(logging.Handler):
  """Turns LocalDagRunner's log lines into one progress line per component start and finish."""

  def __init__(self, total: int):
    super().__init__(logging.INFO)
    self._total = total
    self._done = 0
    self._started: Dict[str, float] = {}
    self.timings: Dict[str, float] = {}
    self.cached: List[str] = []
    self._current: Optional[str] = None

  def emit(self, record: logging.LogRecord) -> None:
    message, args = record.msg, record.args
    if message == "Component %s is running.":
      self._current = args[0]
      self._started[args[0]] = time.time()
      print(f"[{self._done + 1}/{self._total}] {args[0]} ...", flush=True)
    elif message == "Component %s is finished.":
      self._done += 1
      self.timings[args[0]] = time.time() - self._started.get(args[0], time.time())
      note = " (cached)" if args[0] in self.cached else ""
      print(f"[{self._done}/{self._total}] {args[0]} done in {self.timings[args[0]]:.1f} s{note}",
            flush=True)
    elif message == "A cached execution %d is used." and self._current:
      self.cached.append(self._current)


@contextlib.contextmanager
def run_logging(progress: ComponentProgress, log_path: Optional[str]) -> Iterator[None]:
  """Routes absl's log to `progress` and to `log_path` (None: no file, e.g. on gs://); the
  console keeps warnings only."""
  absl_logging.set_verbosity(absl_logging.INFO)
  absl_logging.get_absl_handler().setLevel(logging.WARNING)
  handlers = [progress, logging.FileHandler(log_path) if log_path else logging.NullHandler()]
  absl_logger = logging.getLogger("absl")
  absl_logger.propagate = False
  for handler in handlers:
    absl_logger.addHandler(handler)
  try:
    yield
  finally:
    for handler in handlers:
      absl_logger.removeHandler(handler)
      handler.close()


@contextlib.contextmanager
def stderr_to(log_path: Optional[str]) -> Iterator[None]:
  """Points file descriptor 2 at `log_path` (appending; None: leaves it), so that what the
  libraries write to stderr, C++ included, lands in the log and not on the terminal."""
  if log_path is None:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  os.dup2(log, 2)
  os.close(log)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
