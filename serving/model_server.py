"""A local stand-in for TF Serving's model server, behind TF Serving's own gRPC services.

For development and tests where the TF Serving binary cannot be installed. It implements, from
`tensorflow_serving.apis`: PredictionService.Predict and GetModelMetadata (signature_def), and
ModelService.GetModelStatus and HandleReloadConfigRequest; it reads the same `models.config`,
follows new versions without a restart, honours version policies and labels, and batches
concurrent Predict calls. Not implemented (UNIMPLEMENTED): Classify, Regress, MultiInference,
the REST API, request logging, monitoring. Clients cannot tell it from stock TF Serving for the
calls above, which are the only ones the cascade uses.

    python -m serving.model_server --model_config_file outputs/serving/models.config --port 8500
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from typing import Dict, List, Optional, Tuple

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,  # noqa: E402
                                     model_management_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)
from tensorflow_serving.apis import status_pb2  # noqa: E402

from serving.batching import Batcher, BatchingParameters  # noqa: E402
from serving.model_manager import LoadedVersion, ModelManager, ServingError  # noqa: E402

log = logging.getLogger(__name__)
DEFAULT_SIGNATURE = "serving_default"


def _abort(context: grpc.ServicerContext, error: ServingError) -> None:
  context.abort(getattr(grpc.StatusCode, error.code), str(error))


def _input_specs(entry: LoadedVersion, signature: str) -> Dict[str, tf.TensorSpec]:
  function = entry.model.signatures[signature]
  return function.structured_input_signature[1]


def request_inputs(request: predict_pb2.PredictRequest, specs: Dict[str, tf.TensorSpec]
                   ) -> Dict[str, np.ndarray]:
  """The request's tensors as numpy arrays, checked against the signature's inputs."""
  unknown = sorted(set(request.inputs) - set(specs))
  missing = sorted(set(specs) - set(request.inputs))
  if unknown or missing:
    raise ServingError("INVALID_ARGUMENT", f"inputs do not match the signature: unknown "
                                           f"{unknown}, missing {missing}; expected "
                                           f"{sorted(specs)}")
  arrays = {}
  for name, spec in specs.items():
    proto = request.inputs[name]
    if proto.dtype != spec.dtype.as_datatype_enum:
      raise ServingError("INVALID_ARGUMENT", f"input {name!r} has dtype "
                                             f"{tf.dtypes.as_dtype(proto.dtype).name}, the "
                                             f"signature expects {spec.dtype.name}")
    array = tf.make_ndarray(proto)
    if len(array.shape) != len(spec.shape):
      raise ServingError("INVALID_ARGUMENT", f"input {name!r} has rank {len(array.shape)}, the "
                                             f"signature expects shape {spec.shape}")
    arrays[name] = array
  return arrays


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """Predict and GetModelMetadata over the manager's loaded versions."""

  def __init__(self, manager: ModelManager, batching: Optional[BatchingParameters]):
    self._manager = manager
    self._batching = batching
    self._batchers: Dict[Tuple[str, int, str], Batcher] = {}
    self._lock = threading.Lock()

  def _resolve(self, spec) -> LoadedVersion:
    version = spec.version.value if spec.HasField("version") else None
    return self._manager.resolve(spec.name, version, spec.version_label)

  def _batcher(self, name: str, entry: LoadedVersion, signature: str) -> Batcher:
    key = (name, entry.version, signature)
    with self._lock:
      if key not in self._batchers:
        function = entry.model.signatures[signature]
        run = lambda inputs: {k: v.numpy() for k, v in function(  # noqa: E731
            **{n: tf.constant(a) for n, a in inputs.items()}).items()}
        self._batchers[key] = Batcher(run, self._batching)
      return self._batchers[key]

  def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
              ) -> predict_pb2.PredictResponse:
    try:
      entry = self._resolve(request.model_spec)
      signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
      if signature not in entry.model.signatures:
        raise ServingError("INVALID_ARGUMENT", f"model {request.model_spec.name!r} has no "
                                               f"signature {signature!r} (signatures: "
                                               f"{sorted(entry.model.signatures)})")
      inputs = request_inputs(request, _input_specs(entry, signature))
      remaining = context.time_remaining()
      deadline = time.monotonic() + (remaining if remaining is not None else 3600.0)
      if self._batching:
        outputs = self._batcher(request.model_spec.name, entry, signature).submit(
            inputs, deadline).result(timeout=max(0.0, deadline - time.monotonic()))
      else:
        function = entry.model.signatures[signature]
        outputs = {k: v.numpy() for k, v in function(
            **{n: tf.constant(a) for n, a in inputs.items()}).items()}
    except ServingError as error:
      return _abort(context, error)
    except (futures.TimeoutError, TimeoutError) as error:
      return context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(error) or "deadline exceeded")
    except OverflowError as error:
      return context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
    except (tf.errors.InvalidArgumentError, ValueError) as error:
      return context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error).splitlines()[0])
    wanted = set(request.output_filter) or set(outputs)
    unknown = wanted - set(outputs)
    if unknown:
      return context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                           f"output_filter names unknown outputs {sorted(unknown)}")
    response = predict_pb2.PredictResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = entry.version
    response.model_spec.signature_name = signature
    for name in sorted(wanted):
      response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name]))
    return response

  def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
                       context: grpc.ServicerContext
                       ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    if list(request.metadata_field) != ["signature_def"]:
      return context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                           "metadata_field must be ['signature_def'], as in TF Serving")
    try:
      entry = self._resolve(request.model_spec)
    except ServingError as error:
      return _abort(context, error)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in entry.signature_defs.items():
      signature_map.signature_def[name].CopyFrom(signature_def)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.version.value = entry.version
    response.metadata["signature_def"].Pack(signature_map)
    return response

  def Classify(self, request, context):
    context.abort(grpc.StatusCode.UNIMPLEMENTED, "Classify is not implemented by this server")

  def Regress(self, request, context):
    context.abort(grpc.StatusCode.UNIMPLEMENTED, "Regress is not implemented by this server")

  def MultiInference(self, request, context):
    context.abort(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not implemented")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
  """GetModelStatus and HandleReloadConfigRequest."""

  def __init__(self, manager: ModelManager):
    self._manager = manager

  def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest,
                     context: grpc.ServicerContext) -> get_model_status_pb2.GetModelStatusResponse:
    try:
      versions = self._manager.status(request.model_spec.name)
    except ServingError as error:
      return _abort(context, error)
    if request.model_spec.HasField("version"):
      versions = [v for v in versions if v.version == request.model_spec.version.value]
    response = get_model_status_pb2.GetModelStatusResponse()
    for entry in versions:
      status = response.model_version_status.add(version=entry.version, state=entry.state)
      if entry.error:
        status.status.CopyFrom(status_pb2.StatusProto(error_code=13, error_message=entry.error))
    return response

  def HandleReloadConfigRequest(self, request: model_management_pb2.ReloadConfigRequest,
                                context: grpc.ServicerContext
                                ) -> model_management_pb2.ReloadConfigResponse:
    self._manager.reload_config(request.config)
    self._manager.poll()
    return model_management_pb2.ReloadConfigResponse()


class ModelServer:
  """The gRPC server plus the thread that follows models.config and new versions."""

  def __init__(self, config_path: str, port: int = 0, poll_seconds: float = 2.0,
               batching: Optional[BatchingParameters] = BatchingParameters(),
               max_concurrent_rpcs: int = 256, workers: int = 16):
    self.manager = ModelManager(config_path)
    self.manager.reload_config()
    self.manager.poll()
    self.predictions = PredictionServicer(self.manager, batching)
    self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                               maximum_concurrent_rpcs=max_concurrent_rpcs)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self.predictions,
                                                                        self._server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.manager),
                                                              self._server)
    self.port = self._server.add_insecure_port(f"[::]:{port}")
    self._poll_seconds = poll_seconds
    self._stopped = threading.Event()

  def _follow(self) -> None:
    while not self._stopped.wait(self._poll_seconds):
      try:
        self.manager.reload_config()
        self.manager.poll()
      except Exception:  # pylint: disable=broad-except
        log.exception("polling models.config failed; serving what is loaded")

  def start(self) -> "ModelServer":
    self._server.start()
    threading.Thread(target=self._follow, daemon=True).start()
    return self

  def stop(self, grace: float = 1.0) -> None:
    self._stopped.set()
    self._server.stop(grace).wait()


def run_until_interrupted(stop) -> None:
  """Blocks until Ctrl-C or SIGTERM, then calls `stop` (a server's graceful shutdown)."""
  signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
  try:
    while True:
      time.sleep(3600)
  except KeyboardInterrupt:
    stop()


def main(argv: List[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model_config_file", required=True)
  parser.add_argument("--port", type=int, default=8500)
  parser.add_argument("--file_system_poll_wait_seconds", type=float, default=2.0)
  parser.add_argument("--max_batch_size", type=int, default=64)
  parser.add_argument("--batch_timeout_micros", type=int, default=2000)
  parser.add_argument("--enable_batching", action=argparse.BooleanOptionalAction, default=True)
  parser.add_argument("--batching_parameters_file", default=None,
                      help="TF Serving's batching parameters (text proto); overrides the two "
                           "flags above")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  batching = BatchingParameters(args.max_batch_size, args.batch_timeout_micros / 1e6)
  if args.batching_parameters_file:
    with open(args.batching_parameters_file) as f:
      batching = BatchingParameters.from_text(f.read())
  server = ModelServer(args.model_config_file, args.port, args.file_system_poll_wait_seconds,
                       batching if args.enable_batching else None).start()
  log.info("model server on port %d serving %s", server.port, args.model_config_file)
  run_until_interrupted(server.stop)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
