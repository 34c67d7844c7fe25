"""A real `redis-server` (Debian's package) in its own process, on a free loopback port, without
persistence, for the user-state tests and benchmark; it can be killed, frozen and restarted on
the same port, as an outage looks to a client."""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Optional

import redis

BINARY = "redis-server"


def available() -> bool:
  return shutil.which(BINARY) is not None


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


class RedisProcess:
  """`start()` waits until it answers PING; `kill()` is SIGKILL, `freeze()` SIGSTOP."""

  def __init__(self, port: Optional[int] = None):
    self.port = port or free_port()
    self._dir = tempfile.mkdtemp(prefix="redis-")
    self.process: Optional[subprocess.Popen] = None

  @property
  def url(self) -> str:
    return f"redis://127.0.0.1:{self.port}/0"

  def start(self, timeout_s: float = 20.0) -> "RedisProcess":
    self.process = subprocess.Popen(  # pylint: disable=consider-using-with
        [BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", self._dir],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(port=self.port, socket_timeout=1)
    deadline = time.monotonic() + timeout_s
    while True:
      try:
        client.ping()
        client.close()
        return self
      except redis.ConnectionError:
        if self.process.poll() is not None or time.monotonic() > deadline:
          raise RuntimeError(f"redis-server did not start on port {self.port} "
                             f"(exit code {self.process.poll()})") from None
        time.sleep(0.05)

  def client(self) -> redis.Redis:
    return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

  def kill(self) -> None:
    if self.process is not None and self.process.poll() is None:
      self.process.kill()
      self.process.wait()

  def freeze(self) -> None:
    self.process.send_signal(signal.SIGSTOP)

  def thaw(self) -> None:
    self.process.send_signal(signal.SIGCONT)

  def stop(self) -> None:
    if self.process is not None and self.process.poll() is None:
      self.thaw()
    self.kill()
    shutil.rmtree(self._dir, ignore_errors=True)
