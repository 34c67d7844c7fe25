"""One loaded model version: its SavedModel, its batchers, and the requests using it right now.

A version that the policy retires must give back everything it holds (the model's ~50 MB for
retrieval, a batcher thread per signature), or every reload leaks them; and it must not go while
a request is running on it, or hot reloads would fail requests. So requests hold a version
(`acquire` / `release`, as TF Serving's servable handles do) and `unload` waits for the last one
before it stops the batchers and drops the model.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Dict, Optional

import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_status_pb2

from serving.batching import Batcher, BatchingParameters, Inputs, Outputs

State = get_model_status_pb2.ModelVersionStatus.State
log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class LoadedVersion:
  """A version's state as GetModelStatus reports it, and while AVAILABLE its model."""
  name: str
  version: int
  path: str
  model: Optional[object] = None
  signature_defs: Dict[str, meta_graph_pb2.SignatureDef] = dataclasses.field(default_factory=dict)
  state: int = State.START
  error: str = ""
  failures: int = 0  # consecutive failed loads, for the retry back-off
  retry_at: float = 0.0  # monotonic time of the next load attempt after a failure
  _in_flight: int = 0
  _batchers: Dict[str, Batcher] = dataclasses.field(default_factory=dict)
  _idle: threading.Condition = dataclasses.field(default_factory=threading.Condition)

  def acquire(self) -> None:
    with self._idle:
      self._in_flight += 1

  def release(self) -> None:
    with self._idle:
      self._in_flight -= 1
      self._idle.notify_all()

  def input_specs(self, signature: str) -> Dict[str, tf.TensorSpec]:
    return self.model.signatures[signature].structured_input_signature[1]

  def run(self, signature: str, inputs: Inputs) -> Outputs:
    function = self.model.signatures[signature]
    return {k: v.numpy() for k, v in function(
        **{n: tf.constant(a) for n, a in inputs.items()}).items()}

  def batcher(self, signature: str, params: BatchingParameters) -> Batcher:
    """The batcher of one signature, started on first use (under a request's hold)."""
    with self._idle:
      if signature not in self._batchers:
        self._batchers[signature] = Batcher(
            lambda inputs: self.run(signature, inputs), params,
            name=f"batcher-{self.name}-{self.version}-{signature}")
      return self._batchers[signature]

  def unload(self, timeout_s: float = 60.0) -> None:
    """Waits for the requests holding this version, then frees it (state END)."""
    with self._idle:
      if not self._idle.wait_for(lambda: self._in_flight == 0, timeout_s):
        log.warning("%s version %d: %d requests still running after %.0f s; unloading anyway",
                    self.name, self.version, self._in_flight, timeout_s)
      batchers, self._batchers = list(self._batchers.values()), {}
    for batcher in batchers:
      batcher.close()
    self.model, self.signature_defs, self.state = None, {}, State.END
    log.info("unloaded %s version %d", self.name, self.version)

