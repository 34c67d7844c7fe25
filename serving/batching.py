"""Server-side batching of concurrent Predict calls, as TF Serving's batching does it.

Requests for the same model version and signature queue up; a worker takes up to
`max_batch_size` rows (or whatever arrived within `batch_timeout_s`), concatenates them along
the batch dimension, runs the signature once and splits the outputs back. Inputs whose inner
dimensions differ (a history of 3 items beside one of 20) are padded with the dtype's zero value
("" for strings), like TF Serving's `pad_variable_length_inputs`; a batch is cut where padding
would make any input larger than `max_padded_elements`, so one request with a long inner
dimension cannot make a whole batch that wide. As in TF Serving, a request of more rows than
`max_batch_size` is refused (INVALID_ARGUMENT) and a full queue answers UNAVAILABLE. A batcher
belongs to one loaded version and stops with it (`close`).
"""
from __future__ import annotations

import dataclasses
import queue
import re
import threading
import time
from concurrent.futures import Future
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

Inputs = Dict[str, np.ndarray]
Outputs = Dict[str, np.ndarray]


def request_rows(inputs: Inputs, max_batch_size: int) -> int:
  """The rows of one Predict; more than `max_batch_size` is refused, batched or not, so no
  request can make the server run a batch larger than it is sized for."""
  rows = {value.shape[0] if value.ndim else 1 for value in inputs.values()}
  if len(rows) != 1:
    raise ValueError(f"inputs disagree on the batch size: {sorted(rows)}")
  size = rows.pop()
  if size > max_batch_size:  # TF Serving's words
    raise ValueError(f"Task size {size} is larger than maximum input batch size "
                     f"{max_batch_size}")
  return size


@dataclasses.dataclass
class BatchingParameters:
  # At least the widest Predict the cascade sends: item_embeddings for the bandit's candidates,
  # up to the retrieval top-K (100).
  max_batch_size: int = 128
  batch_timeout_s: float = 0.002
  max_enqueued: int = 1000
  max_padded_elements: int = 1 << 20

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


class QueueFull(Exception):
  """The batch queue holds `max_enqueued` requests already (TF Serving: UNAVAILABLE)."""


_STOP = None  # queued by close(): the worker finishes what is ahead of it, then exits


def _inner_shapes(inputs: Inputs) -> Dict[str, Tuple[int, ...]]:
  return {name: value.shape[1:] for name, value in inputs.items()}


class Batcher:
  """Runs `run_batch` on merged requests from one queue, in one worker thread."""

  def __init__(self, run_batch: Callable[[Inputs], Outputs], params: BatchingParameters,
               name: str = "batcher"):
    self._run_batch = run_batch
    self._params = params
    self._queue: "queue.Queue[Optional[_Task]]" = queue.Queue(maxsize=params.max_enqueued)
    self._held: Optional[_Task] = None  # taken from the queue, left for the next batch
    self.batches_run = 0
    self.requests_run = 0
    self._closed = False
    self.thread = threading.Thread(target=self._work, name=name, daemon=True)
    self.thread.start()

  def submit(self, inputs: Inputs, deadline: float) -> Future:
    size = request_rows(inputs, self._params.max_batch_size)
    if self._closed:
      raise QueueFull("this version is being unloaded; retry")
    task = _Task(inputs, size, deadline, Future())
    try:
      self._queue.put_nowait(task)
    except queue.Full as full:
      raise QueueFull(f"The batch scheduling queue to which this task was submitted is full "
                      f"({self._params.max_enqueued} waiting)") from full
    return task.future

  def close(self, timeout_s: float = 30.0) -> None:
    """Stops the worker once the requests already queued are answered."""
    self._closed = True
    self._queue.put(_STOP)
    self.thread.join(timeout_s)

  def _fits(self, tasks: List[_Task], rows: int, task: _Task) -> bool:
    """Whether `task` joins the batch without padding any input past max_padded_elements."""
    if set(task.inputs) != set(tasks[0].inputs):
      return False
    shapes = [_inner_shapes(t.inputs) for t in tasks + [task]]
    for name in task.inputs:
      inner = [max(s[name][d] for s in shapes) for d in range(len(shapes[0][name]))]
      if (rows + task.rows) * int(np.prod(inner, dtype=np.int64)) > max(
          self._params.max_padded_elements, sum(t.inputs[name].size for t in tasks + [task])):
        return False
    return True

  def _collect(self) -> Optional[List[_Task]]:
    first = self._held or self._queue.get()
    self._held = None
    if first is _STOP:
      return None
    tasks, rows = [first], first.rows
    until = time.monotonic() + self._params.batch_timeout_s
    while rows < self._params.max_batch_size:
      try:
        task = self._queue.get(timeout=max(0.0, until - time.monotonic()))
      except queue.Empty:
        break
      if task is _STOP or rows + task.rows > self._params.max_batch_size or not self._fits(
          tasks, rows, task):
        self._held = task  # the first of the next batch
        break
      tasks.append(task)
      rows += task.rows
    return tasks

  def _work(self) -> None:
    while True:
      tasks = self._collect()
      if tasks is None:
        return
      now = time.monotonic()
      live = []
      for task in tasks:
        if task.deadline < now:
          task.future.set_exception(TimeoutError("deadline passed while the request was queued"))
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
