"""Server-side batching of concurrent Predict calls, as TF Serving's batching does it.

Requests for the same model version and signature queue up; a worker takes up to
`max_batch_size` rows (or whatever arrived within `batch_timeout_s`), concatenates them along
the batch dimension, runs the signature once and splits the outputs back. Inputs whose inner
dimensions differ (a history of 3 items beside one of 20) are padded with the dtype's zero value
("" for strings), like TF Serving's `pad_variable_length_inputs`.
"""
from __future__ import annotations

import dataclasses
import queue
import re
import threading
import time
from concurrent.futures import Future
from typing import Callable, Dict, List, Tuple

import numpy as np

Inputs = Dict[str, np.ndarray]
Outputs = Dict[str, np.ndarray]


@dataclasses.dataclass
class BatchingParameters:
  max_batch_size: int = 64
  batch_timeout_s: float = 0.002
  max_enqueued: int = 1000

  @classmethod
  def from_text(cls, text: str) -> "BatchingParameters":
    """Reads TF Serving's `--batching_parameters_file` (text proto), so one file configures
    both servers. Fields this server does not implement are refused, not ignored."""
    values: Dict[str, str] = {}
    for name, wrapped, plain in re.findall(
        r"(\w+)\s*(?:\{\s*value\s*:\s*([\w.]+)\s*\}|:\s*([\w.]+))", text):
      values[name] = wrapped or plain
    known = {"max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
             "num_batch_threads", "pad_variable_length_inputs"}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"batching parameters not supported by the local server: {unknown}")
    if values.get("pad_variable_length_inputs", "true") != "true":
      raise ValueError("the local server always pads variable-length inputs")
    params = cls()
    if "max_batch_size" in values:
      params.max_batch_size = int(values["max_batch_size"])
    if "batch_timeout_micros" in values:
      params.batch_timeout_s = int(values["batch_timeout_micros"]) / 1e6
    if "max_enqueued_batches" in values:
      params.max_enqueued = int(values["max_enqueued_batches"]) * params.max_batch_size
    return params


def _pad_to(array: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
  if array.shape[1:] == shape:
    return array
  padded = np.zeros((array.shape[0],) + shape, dtype=array.dtype)
  if array.dtype == object:
    padded[...] = b""
  padded[tuple(slice(0, n) for n in array.shape)] = array
  return padded


def concatenate(requests: List[Inputs]) -> Inputs:
  """One batch from several requests' inputs (same names), padding inner dimensions."""
  merged = {}
  for name in requests[0]:
    arrays = [r[name] for r in requests]
    if any(a.ndim == 0 for a in arrays):
      raise ValueError(f"input {name!r} has no batch dimension")
    inner = tuple(max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim))
    merged[name] = np.concatenate([_pad_to(a, inner) for a in arrays], axis=0)
  return merged


def split(outputs: Outputs, sizes: List[int]) -> List[Outputs]:
  """Cuts batched outputs back into per-request outputs."""
  bounds = np.cumsum([0] + sizes)
  return [{name: value[bounds[i]:bounds[i + 1]] for name, value in outputs.items()}
          for i in range(len(sizes))]


@dataclasses.dataclass
class _Task:
  inputs: Inputs
  rows: int
  deadline: float
  future: Future


class Batcher:
  """Runs `run_batch` on merged requests from one queue, in one worker thread."""

  def __init__(self, run_batch: Callable[[Inputs], Outputs], params: BatchingParameters):
    self._run_batch = run_batch
    self._params = params
    self._queue: "queue.Queue[_Task]" = queue.Queue(maxsize=params.max_enqueued)
    self.batches_run = 0
    self.requests_run = 0
    threading.Thread(target=self._work, daemon=True).start()

  def submit(self, inputs: Inputs, deadline: float) -> Future:
    rows = {value.shape[0] if value.ndim else 1 for value in inputs.values()}
    if len(rows) != 1:
      raise ValueError(f"inputs disagree on the batch size: {sorted(rows)}")
    task = _Task(inputs, rows.pop(), deadline, Future())
    try:
      self._queue.put_nowait(task)
    except queue.Full as full:
      raise OverflowError(f"batch queue full ({self._params.max_enqueued} waiting)") from full
    return task.future

  def _collect(self) -> List[_Task]:
    tasks = [self._queue.get()]
    rows = tasks[0].rows
    until = time.monotonic() + self._params.batch_timeout_s
    while rows < self._params.max_batch_size:
      try:
        task = self._queue.get(timeout=max(0.0, until - time.monotonic()))
      except queue.Empty:
        break
      tasks.append(task)
      rows += task.rows
    return tasks

  def _work(self) -> None:
    while True:
      tasks = self._collect()
      now = time.monotonic()
      live = []
      for task in tasks:
        if task.deadline < now:
          task.future.set_exception(TimeoutError("deadline passed while the request was queued"))
        elif set(task.inputs) != set(tasks[0].inputs):
          self._run([task])  # different inputs: a batch of its own
        else:
          live.append(task)
      if live:
        self._run(live)

  def _run(self, tasks: List[_Task]) -> None:
    try:
      outputs = self._run_batch(concatenate([t.inputs for t in tasks]))
      parts = split(outputs, [t.rows for t in tasks])
    except Exception as error:  # pylint: disable=broad-except
      for task in tasks:
        task.future.set_exception(error)
      return
    self.batches_run += 1
    self.requests_run += len(tasks)
    for task, part in zip(tasks, parts):
      task.future.set_result(part)
