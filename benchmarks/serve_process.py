"""`python -m serving.serve` in its own process, started as scripts/serve.sh starts it, for the
serving tests and the soak benchmark: they measure the server from outside, as users reach it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

import psutil

from pipeline.config import REPO_ROOT

# scripts/serve.sh's environment.
SERVE_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
READY = "serving: "


class ServeProcess:
  """One serve process on free ports; `start()` waits for its `serving: {...}` line."""

  def __init__(self, args: List[str], log_path: str):
    self.args, self.log_path = args, log_path
    self.process: Optional[subprocess.Popen] = None
    self.addresses: Dict[str, str] = {}

  def start(self, timeout_s: float = 300.0) -> "ServeProcess":
    with open(self.log_path, "ab") as log:
      self.process = subprocess.Popen(  # pylint: disable=consider-using-with
          [sys.executable, "-m", "serving.serve", "--port", "0", "--http_port", "0", *self.args],
          cwd=REPO_ROOT, env={**os.environ, **SERVE_ENV}, stdout=subprocess.PIPE, stderr=log,
          text=True)
    deadline = time.monotonic() + timeout_s
    for line in self.process.stdout:
      if line.startswith(READY):
        self.addresses = json.loads(line[len(READY):])
        return self
      if time.monotonic() > deadline:
        break
    self.stop()
    raise RuntimeError(f"serving.serve did not start; the end of its log:\n{self.log_tail()}")

  def log_tail(self, lines: int = 40) -> str:
    with open(self.log_path, errors="replace") as f:
      return "".join(f.readlines()[-lines:])

  @property
  def pid(self) -> int:
    return self.process.pid

  @property
  def grpc(self) -> str:
    return self.addresses["cascade_grpc"]

  @property
  def http(self) -> str:
    return self.addresses["http"]

  @property
  def model_server(self) -> str:
    return self.addresses["model_server"]

  def port(self, name: str) -> int:
    return int(self.addresses[name].rsplit(":", 1)[1])

  def rss(self) -> int:
    return psutil.Process(self.pid).memory_info().rss

  def stop(self) -> int:
    """SIGTERM (a graceful stop: the feedback file is handed over); returns the exit code."""
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGTERM)
      try:
        self.process.wait(60)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    self.process.stdout.close()
    return self.process.returncode
