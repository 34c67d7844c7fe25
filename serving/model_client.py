"""The cascade's only way to reach models: TF Serving's gRPC API through its official stubs.

Because it uses nothing but PredictionService.Predict / GetModelMetadata and
ModelService.GetModelStatus, the cascade runs unchanged against stock TF Serving or the local
model server (`serving/model_server.py`).

With `batching`, concurrent Predicts of one model, signature and version label (the cascade's
requests, each on its own thread) are merged into one call and the answer split back
(`serving/batching.py`, the model server's own batcher, here on the client's side): each
Predict costs the client and the server their fixed share once per batch instead of once per
request, and the server's batch is the cascade's. A merged call's failure fails each of its
requests with the same status.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Dict, Mapping, Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from serving.batching import Batcher, BatchingParameters, QueueFull

AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE
VERSION = "__version__"  # the served version, beside a Predict's outputs
# Batchers kept at once (one thread each), the least recently used closed beyond: pinned
# versions come and go with pushes.
MAX_BATCHERS = 32


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
  """A served signature as GetModelMetadata declares it: the version that answered, and each
  input and output tensor's static dims (-1 where any size)."""
  version: int
  inputs: Dict[str, Tuple[int, ...]]
  outputs: Dict[str, Tuple[int, ...]]


def _version_spec(spec, version_label: str) -> None:
  """A numeric label is a version number, anything else a version label."""
  if version_label.isdigit():
    spec.version.value = int(version_label)
  elif version_label:
    spec.version_label = version_label


class BatchFailed(grpc.RpcError):
  """A batched Predict that never reached the server: its deadline passed in the queue
  (DEADLINE_EXCEEDED) or the queue was full (UNAVAILABLE); shaped like the RpcError a
  direct call raises, so callers handle both alike."""

  def __init__(self, code: grpc.StatusCode, details: str):
    super().__init__(details)
    self._code, self._details = code, details

  def code(self) -> grpc.StatusCode:
    return self._code

  def details(self) -> str:
    return self._details


class ModelClient:
  """Predict / status / metadata calls against one TF Serving endpoint."""

  def __init__(self, target: str, timeout_s: float = 2.0, metadata_refresh_s: float = 5.0,
               status_refresh_s: float = 1.0, batching: Optional[BatchingParameters] = None):
    self._channel = grpc.insecure_channel(target)
    self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
    self.timeout_s = timeout_s
    self._refresh_s = metadata_refresh_s
    self._status_refresh_s = status_refresh_s
    self._signatures: Dict[Tuple[str, str, str], Tuple[float, SignatureInfo]] = {}
    self._available: Dict[str, Tuple[float, bool]] = {}
    self._lock = threading.Lock()
    self._batching = batching
    self._batchers: "collections.OrderedDict[Tuple[str, str, str], Batcher]" = (
        collections.OrderedDict())

  def predict(self, model: str, inputs: Mapping[str, np.ndarray], signature: str = "",
              version_label: str = "", timeout_s: Optional[float] = None,
              mergeable: bool = True) -> Dict[str, np.ndarray]:
    """Runs one signature; returns its outputs and, under VERSION, the version served.
    `mergeable=False` sends it alone even when batching: a call whose size or failure must
    not be shared (images, which can bring a merged call past gRPC's message limit)."""
    timeout_s = timeout_s or self.timeout_s
    if self._batching is None or not mergeable:
      return self._predict_now(model, inputs, signature, version_label, timeout_s)
    deadline = time.monotonic() + timeout_s
    try:
      future = self._batcher(model, signature, version_label, timeout_s).submit(
          dict(inputs), deadline)
    except QueueFull as error:
      raise BatchFailed(grpc.StatusCode.UNAVAILABLE, str(error)) from error
    try:
      outputs = future.result(max(deadline - time.monotonic(), 0.0) + 1.0)
    except TimeoutError as error:  # the deadline passed before the batch ran
      raise BatchFailed(grpc.StatusCode.DEADLINE_EXCEEDED, f"{model}: {error}") from error
    outputs[VERSION] = outputs[VERSION][0]
    return outputs

  def _batcher(self, model: str, signature: str, version_label: str, timeout_s: float
               ) -> Batcher:
    key = (model, signature, version_label)
    with self._lock:
      batcher = self._batchers.get(key)
      if batcher is None:
        def run(inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
          outputs = self._predict_now(model, inputs, signature, version_label, timeout_s)
          rows = len(next(iter(inputs.values())))
          outputs[VERSION] = np.full(rows, outputs[VERSION])  # split back with the rest
          return outputs
        batcher = self._batchers[key] = Batcher(run, self._batching,
                                                name=f"client-batcher-{'-'.join(key)}")
        while len(self._batchers) > MAX_BATCHERS:
          _, evicted = self._batchers.popitem(last=False)
          threading.Thread(target=evicted.close, daemon=True).start()
      self._batchers.move_to_end(key)
      return batcher

  def _predict_now(self, model: str, inputs: Mapping[str, np.ndarray], signature: str,
                   version_label: str, timeout_s: float) -> Dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    _version_spec(request.model_spec, version_label)
    for name, value in inputs.items():
      request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    response = self._predict.Predict(request, timeout=timeout_s)
    outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
    outputs[VERSION] = np.int64(response.model_spec.version.value)
    return outputs

  def is_available(self, model: str) -> bool:
    """Whether TF Serving has a version of this model AVAILABLE (not configured: False),
    asked at most every `status_refresh_s`: the cascade asks for every stage of every request,
    and a status call costs as much as a small Predict."""
    with self._lock:
      cached = self._available.get(model)
    if cached and time.monotonic() - cached[0] < self._status_refresh_s:
      return cached[1]
    available = self._status(model)
    with self._lock:
      self._available[model] = (time.monotonic(), available)
    return available

  def _status(self, model: str) -> bool:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    try:
      response = self._models.GetModelStatus(request, timeout=self.timeout_s)
    except grpc.RpcError as error:
      if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
        return False
      raise
    return any(s.state == AVAILABLE for s in response.model_version_status)

  def signature_info(self, model: str, signature: str = "serving_default",
                     version_label: str = "") -> SignatureInfo:
    """What a served signature declares (GetModelMetadata), re-read at most every
    `metadata_refresh_s`, so a newly loaded version with other widths is picked up. Pin calls
    to `SignatureInfo.version` to send exactly what that version declared."""
    key = (model, signature, version_label)
    with self._lock:
      cached = self._signatures.get(key)
    if cached and time.monotonic() - cached[0] < self._refresh_s:
      return cached[1]
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = model
    _version_spec(request.model_spec, version_label)
    response = self._predict.GetModelMetadata(request, timeout=self.timeout_s)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    if signature not in signatures.signature_def:
      raise KeyError(f"model {model!r} version {response.model_spec.version.value} has no "
                     f"signature {signature!r} (signatures: {sorted(signatures.signature_def)})")
    definition = signatures.signature_def[signature]
    dims = lambda tensors: {name: tuple(d.size for d in info.tensor_shape.dim)  # noqa: E731
                            for name, info in tensors.items()}
    info = SignatureInfo(int(response.model_spec.version.value), dims(definition.inputs),
                         dims(definition.outputs))
    with self._lock:
      self._signatures[key] = (time.monotonic(), info)
    return info

  def forget(self, model: str) -> None:
    """Drops what is cached of a model's signatures and status (a pinned version went
    away)."""
    with self._lock:
      self._available.pop(model, None)
      for key in [k for k in self._signatures if k[0] == model]:
        del self._signatures[key]

  def close(self) -> None:
    with self._lock:
      batchers, self._batchers = list(self._batchers.values()), collections.OrderedDict()
    for batcher in batchers:
      batcher.close()
    self._channel.close()
