"""The local model server through TF Serving's official gRPC client stubs."""
import os
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)
from tensorflow_serving.config import model_server_config_pb2

from serving.batching import BatchingParameters, concatenate
from serving.model_server import ModelServer

State = get_model_status_pb2.ModelVersionStatus.State


class _Affine(tf.Module):
  """y = a * x + b over a padded string-length input, to exercise batching and padding."""

  def __init__(self, a: float):
    super().__init__()
    self.a = tf.Variable(a)
    self.calls = tf.Variable(0, dtype=tf.int64)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x"),
                                tf.TensorSpec([None, None], tf.string, name="tags")])
  def serve(self, x, tags):
    self.calls.assign_add(1)
    count = tf.reduce_sum(tf.cast(tags != "", tf.float32), axis=1)
    return {"y": self.a * x + count, "calls": tf.fill(tf.shape(x), self.calls)}


def save_version(base, version, a):
  module = _Affine(a)
  tf.saved_model.save(module, os.path.join(base, str(version)),
                      signatures={"serving_default": module.serve})


def write_config(root, labels=None, policy="latest { num_versions: 1 }"):
  config = model_server_config_pb2.ModelServerConfig()
  text_format.Parse(f"""model_config_list {{ config {{
      name: "affine" base_path: "{root}/affine" model_platform: "tensorflow"
      model_version_policy {{ {policy} }} }} }}""", config)
  for label, version in (labels or {}).items():
    config.model_config_list.config[0].version_labels[label] = version
  path = os.path.join(root, "models.config")
  with open(path, "w") as f:
    f.write(text_format.MessageToString(config))
  return path


@pytest.fixture
def root(tmp_path):
  save_version(str(tmp_path / "affine"), 1, 2.0)
  return str(tmp_path)


@pytest.fixture
def server(root):
  server = ModelServer(write_config(root), poll_seconds=0.2,
                       batching=BatchingParameters(max_batch_size=64, batch_timeout_s=0.02)).start()
  yield server
  server.stop()


def _stubs(server):
  channel = grpc.insecure_channel(f"localhost:{server.port}")
  return (prediction_service_pb2_grpc.PredictionServiceStub(channel),
          model_service_pb2_grpc.ModelServiceStub(channel))


def _request(x, tags, version=None, label=""):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "affine"
  if version is not None:
    request.model_spec.version.value = version
  if label:
    request.model_spec.version_label = label
  request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(x, np.float32)))
  request.inputs["tags"].CopyFrom(tf.make_tensor_proto(np.array(tags, dtype=object)))
  return request


def _y(response):
  return tf.make_ndarray(response.outputs["y"]).tolist()


def test_predict_metadata_and_status(server):
  predict, models = _stubs(server)
  response = predict.Predict(_request([1.0, 2.0], [["a", ""], ["a", "b"]]), timeout=10)
  assert _y(response) == [3.0, 6.0]
  assert response.model_spec.version.value == 1
  status = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
      model_spec={"name": "affine"}), timeout=10)
  assert [(s.version, s.state) for s in status.model_version_status] == [(1, State.AVAILABLE)]
  metadata = predict.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
      model_spec={"name": "affine"}, metadata_field=["signature_def"]), timeout=10)
  signatures = get_model_metadata_pb2.SignatureDefMap()
  metadata.metadata["signature_def"].Unpack(signatures)
  assert set(signatures.signature_def["serving_default"].inputs) == {"x", "tags"}


def test_new_version_is_served_without_restart(server, root):
  predict, _ = _stubs(server)
  save_version(os.path.join(root, "affine"), 2, 10.0)
  deadline = time.time() + 20
  while time.time() < deadline:
    response = predict.Predict(_request([1.0], [[""]]), timeout=10)
    if response.model_spec.version.value == 2:
      break
    time.sleep(0.1)
  assert response.model_spec.version.value == 2 and _y(response) == [10.0]


def test_broken_version_is_reported_and_the_previous_keeps_serving(server, root):
  predict, models = _stubs(server)
  broken = os.path.join(root, "affine", "3")
  os.makedirs(broken)
  with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
    f.write(b"not a saved model")
  deadline = time.time() + 20
  states = {}
  while time.time() < deadline and 3 not in states:
    status = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "affine"}), timeout=10)
    states = {s.version: s for s in status.model_version_status}
    time.sleep(0.1)
  assert states[3].state == State.END and states[3].status.error_message
  response = predict.Predict(_request([1.0], [[""]]), timeout=10)
  assert response.model_spec.version.value == 1 and _y(response) == [2.0]


def test_labels_route_to_versions(root):
  save_version(os.path.join(root, "affine"), 2, 10.0)
  server = ModelServer(write_config(root, {"stable": 1, "canary": 2}, policy="all {}"),
                       poll_seconds=60).start()
  try:
    predict, _ = _stubs(server)
    assert _y(predict.Predict(_request([1.0], [[""]], label="stable"), timeout=10)) == [2.0]
    assert _y(predict.Predict(_request([1.0], [[""]], label="canary"), timeout=10)) == [10.0]
    assert _y(predict.Predict(_request([1.0], [[""]], version=1), timeout=10)) == [2.0]
    with pytest.raises(grpc.RpcError) as error:
      predict.Predict(_request([1.0], [[""]], label="beta"), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  finally:
    server.stop()


def test_reload_config_request_adds_a_label(server, root):
  predict, models = _stubs(server)
  config = model_server_config_pb2.ModelServerConfig()
  with open(os.path.join(root, "models.config")) as f:
    text_format.Parse(f.read(), config)
  config.model_config_list.config[0].version_labels["stable"] = 1
  models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config),
                                   timeout=10)
  assert _y(predict.Predict(_request([1.0], [[""]], label="stable"), timeout=10)) == [2.0]


def test_bad_requests_get_errors_and_the_server_keeps_serving(server):
  predict, _ = _stubs(server)
  bad = [
      (_request([1.0], [[""]]), "model_spec", lambda r: setattr(r.model_spec, "name", "nope")),
      (_request([1.0], [[""]]), "unknown input", lambda r: r.inputs["z"].CopyFrom(
          tf.make_tensor_proto(np.array([1.0], np.float32)))),
      (_request([1.0], [[""]]), "wrong dtype", lambda r: r.inputs["x"].CopyFrom(
          tf.make_tensor_proto(np.array([1], np.int64)))),
      (_request([1.0], [[""]]), "bad signature", lambda r: setattr(
          r.model_spec, "signature_name", "nope")),
      (_request([1.0, 2.0], [[""]]), "batch mismatch", lambda r: None),
  ]
  for request, what, corrupt in bad:
    corrupt(request)
    with pytest.raises(grpc.RpcError) as error:
      predict.Predict(request, timeout=10)
    assert error.value.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                  grpc.StatusCode.NOT_FOUND), what
    assert error.value.details(), what
  assert _y(predict.Predict(_request([1.0], [[""]]), timeout=10)) == [2.0]


def test_concurrent_requests_are_batched_with_padding(server):
  predict, _ = _stubs(server)
  results, errors = {}, []

  def call(i):
    try:
      tags = [["t"] * (i % 4 + 1)]
      results[i] = _y(predict.Predict(_request([float(i)], tags), timeout=20))[0]
    except grpc.RpcError as error:
      errors.append(error)

  threads = [threading.Thread(target=call, args=(i,)) for i in range(32)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert not errors
  assert results == {i: 2.0 * i + (i % 4 + 1) for i in range(32)}
  batcher = next(iter(server.predictions._batchers.values()))  # pylint: disable=protected-access
  assert batcher.requests_run == 32 and batcher.batches_run < 32


def test_concatenate_pads_strings_and_numbers():
  merged = concatenate([{"h": np.array([[b"a"]], dtype=object), "n": np.array([[1]])},
                        {"h": np.array([[b"b", b"c"]], dtype=object), "n": np.array([[2, 3]])}])
  assert merged["h"].tolist() == [[b"a", b""], [b"b", b"c"]]
  assert merged["n"].tolist() == [[1, 0], [2, 3]]


def test_the_deployment_batching_file_configures_the_local_server():
  import yaml  # pylint: disable=import-outside-toplevel
  from pipeline.config import REPO_ROOT  # pylint: disable=import-outside-toplevel
  deploy = os.path.join(REPO_ROOT, "serving", "deploy")
  with open(os.path.join(deploy, "batching_parameters.txt")) as f:
    text = f.read()
  params = BatchingParameters.from_text(text)
  assert (params.max_batch_size, params.batch_timeout_s, params.max_enqueued) == (64, 0.002, 6400)
  with open(os.path.join(deploy, "tf_serving.yaml")) as f:
    documents = list(yaml.safe_load_all(f))
  config_map = next(d for d in documents if d["kind"] == "ConfigMap")
  assert config_map["data"]["batching_parameters.txt"].strip() == text.strip()
  serving = next(d for d in documents if d["kind"] == "Deployment"
                 and d["metadata"]["name"] == "tf-serving")
  args = serving["spec"]["template"]["spec"]["containers"][0]["args"]
  assert "--model_config_file=MODEL_ROOT/models.config" in args and "--port=8500" in args
  with pytest.raises(ValueError, match="not supported"):
    BatchingParameters.from_text("max_batch_size { value: 8 }\nallowed_batch_sizes: 4")
