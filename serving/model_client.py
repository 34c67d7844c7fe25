"""The cascade's only way to reach models: TF Serving's gRPC API through its official stubs.

Because it uses nothing but PredictionService.Predict / GetModelMetadata and
ModelService.GetModelStatus, the cascade runs unchanged against stock TF Serving or the local
model server (`serving/model_server.py`).
"""
from __future__ import annotations

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

AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE


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


class ModelClient:
  """Predict / status / metadata calls against one TF Serving endpoint."""

  def __init__(self, target: str, timeout_s: float = 2.0, metadata_refresh_s: float = 5.0,
               status_refresh_s: float = 1.0):
    self._channel = grpc.insecure_channel(target)
    self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
    self.timeout_s = timeout_s
    self._refresh_s = metadata_refresh_s
    self._status_refresh_s = status_refresh_s
    self._signatures: Dict[Tuple[str, str, str], Tuple[float, SignatureInfo]] = {}
    self._available: Dict[str, Tuple[float, bool]] = {}
    self._lock = threading.Lock()

  def predict(self, model: str, inputs: Mapping[str, np.ndarray], signature: str = "",
              version_label: str = "", timeout_s: Optional[float] = None
              ) -> Dict[str, np.ndarray]:
    """Runs one signature; returns its outputs and, under "__version__", the version served."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    _version_spec(request.model_spec, version_label)
    for name, value in inputs.items():
      request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    response = self._predict.Predict(request, timeout=timeout_s or self.timeout_s)
    outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
    outputs["__version__"] = np.int64(response.model_spec.version.value)
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
    self._channel.close()
