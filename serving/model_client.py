"""The cascade's only way to reach models: TF Serving's gRPC API through its official stubs.

Because it uses nothing but PredictionService.Predict / GetModelMetadata and
ModelService.GetModelStatus, the cascade runs unchanged against stock TF Serving or the local
model server (`serving/model_server.py`).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE


class ModelClient:
  """Predict / status / metadata calls against one TF Serving endpoint."""

  def __init__(self, target: str, timeout_s: float = 2.0):
    self._channel = grpc.insecure_channel(target)
    self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
    self.timeout_s = timeout_s

  def predict(self, model: str, inputs: Mapping[str, np.ndarray], signature: str = "",
              version_label: str = "", timeout_s: Optional[float] = None
              ) -> Dict[str, np.ndarray]:
    """Runs one signature; returns its outputs and, under "__version__", the version served."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version_label.isdigit():
      request.model_spec.version.value = int(version_label)
    elif version_label:
      request.model_spec.version_label = version_label
    for name, value in inputs.items():
      request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    response = self._predict.Predict(request, timeout=timeout_s or self.timeout_s)
    outputs = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
    outputs["__version__"] = np.int64(response.model_spec.version.value)
    return outputs

  def is_available(self, model: str) -> bool:
    """Whether TF Serving has a version of this model AVAILABLE (not configured: False)."""
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    try:
      response = self._models.GetModelStatus(request, timeout=self.timeout_s)
    except grpc.RpcError as error:
      if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
        return False
      raise
    return any(s.state == AVAILABLE for s in response.model_version_status)

  def signatures(self, model: str) -> get_model_metadata_pb2.SignatureDefMap:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = model
    response = self._predict.GetModelMetadata(request, timeout=self.timeout_s)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    return signatures

  def close(self) -> None:
    self._channel.close()
