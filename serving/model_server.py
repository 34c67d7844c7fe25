"""A local stand-in for TF Serving's model server, behind TF Serving's own gRPC services.

For development and tests where the TF Serving binary cannot be installed. It implements, from
`tensorflow_serving.apis`: PredictionService.Predict and GetModelMetadata (signature_def), and
ModelService.GetModelStatus and HandleReloadConfigRequest; it reads the same `models.config`,
follows new versions without a restart, honours version policies and labels, and batches
concurrent Predict calls. Not implemented (UNIMPLEMENTED): Classify, Regress, MultiInference,
the REST API, request logging, monitoring. Clients cannot tell it from stock TF Serving for the
calls above, which are the only ones the cascade uses; the errors carry TF Serving's texts.

Like stock TF Serving it links the TF Text ops in (the cross-encoder's tokenizer uses them).
Unlike it, it binds 127.0.0.1 unless `--host` says otherwise, and HandleReloadConfigRequest is
refused (PERMISSION_DENIED) unless `--enable_admin_api`: nothing here authenticates a caller.
Which config wins: as in TF Serving, a config-file poll (`--model_config_file_poll_wait_seconds`
above 0) re-applies the file, replacing what an admin reload set; with 0 the file is read once
at start and an admin reload stands until the next one.

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
from typing import List, Optional, Sequence

from serving.batching import BatchingParameters, QueueFull, request_rows
from serving.bind import LOOPBACK, grpc_address
from serving.model_server_flags import add_model_server_flags


def parse_args(argv: List[str]) -> argparse.Namespace:
  """Above the imports of TensorFlow, gRPC and TF Serving's APIs, so that --help and a bad flag
  answer at once."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model_config_file", required=True,
                      help="the models.config to serve (text-format ModelServerConfig), e.g. "
                           "outputs/serving/models.config")
  parser.add_argument("--port", type=int, default=8500,
                      help="gRPC port to listen on (0: any free one; default %(default)s)")
  parser.add_argument("--host", default=LOOPBACK,
                      help="address to bind (0.0.0.0: all interfaces, as stock TF Serving)")
  add_model_server_flags(parser)
  parser.add_argument("--enable_admin_api", action="store_true",
                      help="accept HandleReloadConfigRequest (unauthenticated: anyone who can "
                           "reach the port can then change what is served)")
  parser.add_argument("--max_batch_size", type=int, default=BatchingParameters.max_batch_size,
                      help="rows per Predict and per batch; a larger Predict is refused")
  parser.add_argument("--batch_timeout_micros", type=int, default=2000,
                      help="microseconds a batch waits for more calls before it runs (default "
                           "%(default)s)")
  parser.add_argument("--enable_batching", action=argparse.BooleanOptionalAction, default=True,
                      help="merge concurrent Predict calls into batches (--no-enable_batching: "
                           "each call runs alone)")
  parser.add_argument("--batching_parameters_file", default=None,
                      help="TF Serving's batching parameters (text proto); overrides the two "
                           "flags above")
  return parser.parse_args(argv)


if __name__ == "__main__":
  parse_args(sys.argv[1:])

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402,F401  (registers the TF Text ops, as TF Serving links them)
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,  # noqa: E402
                                     model_management_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)
from tensorflow_serving.apis import status_pb2  # noqa: E402

from serving.model_manager import ModelManager, ServingError  # noqa: E402
from serving.predict_inputs import request_inputs  # noqa: E402

log = logging.getLogger(__name__)
DEFAULT_SIGNATURE = "serving_default"
# GetModelStatus reports a failed load with this code (TF Serving: the loader's own status).
_LOAD_ERROR_CODE = grpc.StatusCode.INTERNAL.value[0]


def _abort(context: grpc.ServicerContext, error: ServingError) -> None:
  context.abort(getattr(grpc.StatusCode, error.code), str(error))


def _version(spec) -> Optional[int]:
  return spec.version.value if spec.HasField("version") else None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """Predict and GetModelMetadata over the manager's loaded versions."""

  def __init__(self, manager: ModelManager, batching: Optional[BatchingParameters],
               max_batch_size: int):
    self._manager = manager
    self._batching = batching
    self._max_batch_size = max_batch_size

  def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
              ) -> predict_pb2.PredictResponse:
    spec = request.model_spec
    try:
      with self._manager.serving(spec.name, _version(spec), spec.version_label) as entry:
        signature = spec.signature_name or DEFAULT_SIGNATURE
        if signature not in entry.model.signatures:
          raise ServingError("INVALID_ARGUMENT", f"Serving signature key {signature[:64]!r} "
                                                 f"not found (model {spec.name!r} signatures: "
                                                 f"{sorted(entry.model.signatures)})")
        inputs = request_inputs(request, entry.input_specs(signature))
        names = set(entry.model.signatures[signature].structured_outputs)
        unknown = set(request.output_filter) - names
        if unknown:
          raise ServingError("INVALID_ARGUMENT", f"output_filter names unknown outputs "
                                                 f"{sorted(unknown)[:5]} (outputs: "
                                                 f"{sorted(names)})")
        remaining = context.time_remaining()
        deadline = time.monotonic() + (remaining if remaining is not None else 3600.0)
        if self._batching:
          outputs = entry.batcher(signature, self._batching).submit(inputs, deadline).result(
              timeout=max(0.0, deadline - time.monotonic()))
        else:
          request_rows(inputs, self._max_batch_size)
          outputs = entry.run(signature, inputs)
        version = entry.version
    except ServingError as error:
      return _abort(context, error)
    except (futures.TimeoutError, TimeoutError) as error:
      return context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(error) or "deadline exceeded")
    except QueueFull as error:
      return context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
    except (tf.errors.InvalidArgumentError, ValueError) as error:
      return context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error).splitlines()[0])
    response = predict_pb2.PredictResponse()
    response.model_spec.name = spec.name
    response.model_spec.version.value = version
    response.model_spec.signature_name = signature
    for name in sorted(set(request.output_filter) or set(outputs)):
      response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name]))
    return response

  def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
                       context: grpc.ServicerContext
                       ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    if list(request.metadata_field) != ["signature_def"]:
      return context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                           "metadata_field must be ['signature_def'], as in TF Serving")
    spec = request.model_spec
    try:
      with self._manager.serving(spec.name, _version(spec), spec.version_label) as entry:
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in entry.signature_defs.items():
          signature_map.signature_def[name].CopyFrom(signature_def)
        version = entry.version
    except ServingError as error:
      return _abort(context, error)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = spec.name
    response.model_spec.version.value = version
    response.metadata["signature_def"].Pack(signature_map)
    return response

  def Classify(self, request, context):
    context.abort(grpc.StatusCode.UNIMPLEMENTED, "Classify is not implemented by this server")

  def Regress(self, request, context):
    context.abort(grpc.StatusCode.UNIMPLEMENTED, "Regress is not implemented by this server")

  def MultiInference(self, request, context):
    context.abort(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not implemented")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
  """GetModelStatus, and HandleReloadConfigRequest when the admin API is enabled."""

  def __init__(self, manager: ModelManager, enable_admin_api: bool):
    self._manager = manager
    self._admin = enable_admin_api

  def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest,
                     context: grpc.ServicerContext) -> get_model_status_pb2.GetModelStatusResponse:
    try:
      versions = self._manager.status(request.model_spec.name, _version(request.model_spec))
    except ServingError as error:
      return _abort(context, error)
    response = get_model_status_pb2.GetModelStatusResponse()
    for entry in versions:
      status = response.model_version_status.add(version=entry.version, state=entry.state)
      if entry.error:
        status.status.CopyFrom(status_pb2.StatusProto(error_code=_LOAD_ERROR_CODE,
                                                      error_message=entry.error))
    return response

  def HandleReloadConfigRequest(self, request: model_management_pb2.ReloadConfigRequest,
                                context: grpc.ServicerContext
                                ) -> model_management_pb2.ReloadConfigResponse:
    if not self._admin:
      return context.abort(grpc.StatusCode.PERMISSION_DENIED,
                           "HandleReloadConfigRequest is disabled on this server: start it "
                           "with --enable_admin_api to reconfigure it over gRPC")
    try:
      self._manager.apply(request.config)
    except ServingError as error:
      return _abort(context, error)
    log.info("config reloaded over the admin API: %s",
             [c.name for c in request.config.model_config_list.config])
    return model_management_pb2.ReloadConfigResponse(status=status_pb2.StatusProto())


class ModelServer:
  """The gRPC server plus the thread that follows models.config and new versions.

  `poll_seconds` is TF Serving's --file_system_poll_wait_seconds (new versions);
  `config_poll_seconds` its --model_config_file_poll_wait_seconds (the file itself; 0 = read
  once), here by default the same interval, since the pipeline adds models to the file.
  `max_batch_size` bounds the rows of one Predict whether or not `batching` is on (by default
  the batching's own bound)."""

  def __init__(self, config_path: str, port: int = 0, poll_seconds: float = 2.0,
               batching: Optional[BatchingParameters] = BatchingParameters(),
               max_concurrent_rpcs: int = 256, workers: int = 16, host: str = LOOPBACK,
               config_poll_seconds: Optional[float] = None, enable_admin_api: bool = False,
               allowed_base_paths: Sequence[str] = (),
               allow_version_labels_for_unavailable_models: bool = False,
               max_batch_size: Optional[int] = None):
    self.manager = ModelManager(config_path, allowed_base_paths,
                                allow_version_labels_for_unavailable_models,
                                retry_base_s=max(poll_seconds, 0.1))
    self.manager.apply(self.manager.read_config_file())
    self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                               maximum_concurrent_rpcs=max_concurrent_rpcs)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(self.manager, batching, max_batch_size or (
            batching or BatchingParameters()).max_batch_size), self._server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(self.manager, enable_admin_api), self._server)
    self.host = host
    self.port = self._server.add_insecure_port(grpc_address(host, port))
    self._poll_seconds = poll_seconds
    self._config_poll_seconds = poll_seconds if config_poll_seconds is None else (
        config_poll_seconds)
    self._stopped = threading.Event()
    self._follower = threading.Thread(target=self._follow, name="model-server-poll",
                                      daemon=True)

  def _follow(self) -> None:
    config_due = time.monotonic() + self._config_poll_seconds
    while not self._stopped.wait(self._poll_seconds):
      try:
        if self._config_poll_seconds > 0 and time.monotonic() >= config_due:
          config_due = time.monotonic() + self._config_poll_seconds
          self.manager.apply(self.manager.read_config_file())
        else:
          self.manager.poll()
      except ServingError as error:  # a config refused: what is loaded keeps serving
        log.error("%s not applied (%s): %s", self.manager.config_path, error.code, error)
      except Exception:  # pylint: disable=broad-except
        log.exception("polling %s failed; serving what is loaded", self.manager.config_path)

  def start(self) -> "ModelServer":
    self._server.start()
    self._follower.start()
    return self

  def stop(self, grace: float = 1.0) -> None:
    self._stopped.set()
    self._server.stop(grace).wait()
    if self._follower.is_alive():
      self._follower.join()
    self.manager.unload_all()


def run_until_interrupted(stop) -> None:
  """Blocks until Ctrl-C or SIGTERM, then calls `stop` (a server's graceful shutdown)."""
  signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
  try:
    while True:
      time.sleep(3600)
  except KeyboardInterrupt:
    stop()


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  batching = BatchingParameters(args.max_batch_size, args.batch_timeout_micros / 1e6)
  if args.batching_parameters_file:
    with open(args.batching_parameters_file) as f:
      batching = BatchingParameters.from_text(f.read())
  server = ModelServer(args.model_config_file, args.port, args.file_system_poll_wait_seconds,
                       batching if args.enable_batching else None, host=args.host,
                       max_batch_size=batching.max_batch_size,
                       config_poll_seconds=args.model_config_file_poll_wait_seconds,
                       enable_admin_api=args.enable_admin_api,
                       allowed_base_paths=args.allowed_base_paths,
                       allow_version_labels_for_unavailable_models=(
                           args.allow_version_labels_for_unavailable_models)).start()
  log.info("model server on %s serving %s", grpc_address(server.host, server.port),
           args.model_config_file)
  run_until_interrupted(server.stop)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
