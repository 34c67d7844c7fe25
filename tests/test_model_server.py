"""The local model server through TF Serving's official gRPC client stubs."""
import gc
import os
import shutil
import subprocess
import sys
import threading
import time
import weakref

import grpc
import numpy as np
import psutil
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)
from tensorflow_serving.config import model_server_config_pb2

from serving.batching import BatchingParameters, concatenate
from serving.model_client import VERSION, ModelClient
from serving.model_manager import ServingError
from serving.model_server import ModelServer
from tests.serving_stack import is_loopback, listening_ips

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


def model_config(root, labels=None, policy="latest { num_versions: 1 }", base_path=None):
  config = model_server_config_pb2.ModelServerConfig()
  text_format.Parse(f"""model_config_list {{ config {{
      name: "affine" base_path: "{base_path or root + '/affine'}" model_platform: "tensorflow"
      model_version_policy {{ {policy} }} }} }}""", config)
  for label, version in (labels or {}).items():
    config.model_config_list.config[0].version_labels[label] = version
  return config


def write_config(root, labels=None, policy="latest { num_versions: 1 }", config=None):
  config = config or model_config(root, labels, policy)
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


def _error(call, *args):
  """The RpcError a call must raise."""
  with pytest.raises(grpc.RpcError) as error:
    call(*args, timeout=10)
  return error.value


def _status(models, version=None):
  spec = {"name": "affine"}
  if version is not None:
    spec["version"] = {"value": version}
  return models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec=spec),
                               timeout=10)


def _wait(condition, seconds=20.0, what="condition"):
  deadline = time.time() + seconds
  while not condition():
    assert time.time() < deadline, f"timed out waiting for {what}"
    time.sleep(0.05)


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
  states = {}

  def failed():
    states.update({s.version: s for s in _status(models).model_version_status})
    return 3 in states and states[3].state == State.END

  _wait(failed, what="version 3 to fail")
  assert states[3].status.error_message
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
    error = _error(predict.Predict, _request([1.0], [[""]], label="beta"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Unrecognized servable version label: beta"
  finally:
    server.stop()


@pytest.fixture
def admin_server(root):
  """A server with the admin API on and the config file read only at start."""
  server = ModelServer(write_config(root), poll_seconds=0.2, config_poll_seconds=0,
                       enable_admin_api=True).start()
  yield server
  server.stop()


def _reload(models, config):
  return models.HandleReloadConfigRequest(
      model_management_pb2.ReloadConfigRequest(config=config), timeout=30)


def test_reload_config_request_adds_a_label(admin_server, root):
  predict, models = _stubs(admin_server)
  _reload(models, model_config(root, {"stable": 1}))
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
  entry = server.manager.status("affine", 1)[0]
  batcher = entry._batchers["serving_default"]  # pylint: disable=protected-access
  assert batcher.requests_run == 32 and batcher.batches_run < 32


def test_the_cascade_client_batches_concurrent_predicts_and_answers_each_as_alone(root):
  """Client-side batching (what the cascade's ModelClient does with `batching`): concurrent
  Predicts of one model become fewer calls, each caller gets what a call of its own gives
  (padding included), and a merged call's error reaches every caller as its status."""
  server = ModelServer(write_config(root), poll_seconds=0.2, batching=None).start()
  alone = ModelClient(f"localhost:{server.port}")
  merged = ModelClient(f"localhost:{server.port}",
                       batching=BatchingParameters(max_batch_size=64, batch_timeout_s=0.05))
  try:
    inputs = {i: {"x": np.array([float(i)], np.float32),
                  "tags": np.array([["t"] * (i % 4 + 1)], dtype=object)} for i in range(24)}
    expected = {i: alone.predict("affine", inputs[i])["y"].tolist() for i in inputs}
    results, errors = {}, []

    def call(i, label=""):
      try:
        results[(i, label)] = merged.predict("affine", inputs[i], version_label=label)
      except grpc.RpcError as error:
        errors.append((i, error.code()))

    threads = [threading.Thread(target=call, args=(i,)) for i in inputs]
    threads += [threading.Thread(target=call, args=(i, "7")) for i in range(4)]  # no version 7
    for thread in threads:
      thread.start()
    for thread in threads:
      thread.join()
    assert {i: out["y"].tolist() for (i, label), out in results.items()} == expected
    assert all(out[VERSION] == 1 for out in results.values())
    # The server ran fewer calls than there were callers (its counter, one per call it ran).
    assert len({int(out["calls"][0]) for out in results.values()}) < len(inputs)
    assert sorted(errors) == [(i, grpc.StatusCode.NOT_FOUND) for i in range(4)]
  finally:
    merged.close()
    alone.close()
    server.stop()


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
  assert (params.max_batch_size, params.batch_timeout_s, params.max_enqueued) == (
      128, 0.002, 12800)
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


# --- Issue 9: what the model server refuses, retries and frees ------------------------------


def test_the_model_server_process_registers_the_tf_text_ops():
  """Issue 9 #1: the server module alone (as `python -m serving.model_server` runs it) makes the
  cross-encoder's TF Text ops loadable; the end-to-end test loads a real one."""
  code = ("import serving.model_server\n"
          "from tensorflow.python.framework import op_def_registry\n"
          "print(all(op_def_registry.get(op) for op in ('NormalizeUTF8', 'CaseFoldUTF8', "
          "'FastWordpieceTokenizeWithOffsets', 'RegexSplitWithOffsets')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert out.stdout.strip().splitlines()[-1] == "True"


def _claiming(name, dtype, dims, **values):
  """A TensorProto whose shape claims `dims`, with whatever values are given."""
  proto = tensor_pb2.TensorProto(dtype=dtype, **values)
  for size in dims:
    proto.tensor_shape.dim.add(size=size)
  return name, proto


def test_predict_checks_dtype_and_claimed_size_before_allocating(server):
  """Issue 9 #6: an unknown dtype names the input; a shape claiming 50,000,000 floats with one
  value (152 bytes on the wire) or short tensor_content is refused before any allocation."""
  predict, _ = _stubs(server)
  process = psutil.Process()
  before = process.memory_info().rss
  cases = [
      (_claiming("x", 999, [1], float_val=[1.0]), "input 'x' has dtype 999"),
      (_claiming("x", types_pb2.DT_FLOAT, [50_000_000], float_val=[0.0]),
       "input 'x': shape [50000000] has 50000000 elements, but 1 values were sent in float_val"),
      (_claiming("x", types_pb2.DT_FLOAT, [50_000_000], tensor_content=b"\0" * 8),
       "input 'x': shape [50000000] of float32 needs 200000000 bytes of tensor_content, got 8"),
      (_claiming("x", types_pb2.DT_FLOAT, [-1], float_val=[0.0]), "size -1 at axis 0"),
      (_claiming("tags", types_pb2.DT_STRING, [1, 20_000_000], string_val=[b"a"]),
       "input 'tags': shape [1, 20000000] has 20000000 elements, but 1 values"),
  ]
  for (name, proto), expected in cases:
    request = _request([1.0], [[""]])
    request.inputs[name].CopyFrom(proto)
    error = _error(predict.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and expected in error.details(), (
        expected, error.details())
  assert process.memory_info().rss - before < 50 << 20
  assert _y(predict.Predict(_request([1.0], [[""]]), timeout=10)) == [2.0]


def test_predict_refuses_a_batch_above_max_batch_size_as_tf_serving(server, root):
  """Issue 9 #6: the fixture's max_batch_size is 64; TF Serving's answer and words. A server
  without batching (what serve starts when the cascade batches) keeps the same bound."""
  unbatched = ModelServer(write_config(root), poll_seconds=0.2, batching=None,
                          max_batch_size=64).start()
  try:
    for running in (server, unbatched):
      predict, _ = _stubs(running)
      error = _error(predict.Predict, _request([1.0] * 65, [[""]] * 65))
      assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
      assert error.details() == "Task size 65 is larger than maximum input batch size 64"
      assert len(_y(predict.Predict(_request([1.0] * 64, [[""]] * 64), timeout=10))) == 64
  finally:
    unbatched.stop()


def test_missing_versions_answer_not_found_with_tf_serving_texts(root):
  """Issue 9 #11: GetModelStatus of a version that is not loaded, and Predict on a configured
  model without any version, answer NOT_FOUND (they gave OK-with-nothing and UNAVAILABLE)."""
  os.makedirs(os.path.join(root, "empty"))
  config = model_config(root)
  config.model_config_list.config.add(name="empty", base_path=os.path.join(root, "empty"),
                                      model_platform="tensorflow")
  server = ModelServer(write_config(root, config=config), poll_seconds=60).start()
  try:
    predict, models = _stubs(server)
    error = _error(models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "affine", "version": {"value": 7}}))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND,
                                               "Could not find version 7 of model affine")
    error = _error(models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "empty"}))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND,
                                               "Could not find any versions of model empty")
    request = _request([1.0], [[""]])
    request.model_spec.name = "empty"
    error = _error(predict.Predict, request)
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND,
                                               "Servable not found for request: Latest(empty)")
    error = _error(predict.Predict, _request([1.0], [[""]], version=7))
    assert error.details() == "Servable not found for request: Specific(affine, 7)"
    assert [s.version for s in _status(models, 1).model_version_status] == [1]
  finally:
    server.stop()


def test_the_admin_api_is_refused_unless_enabled(server, root):
  """Issue 9 #8: by default HandleReloadConfigRequest cannot empty or repoint the server."""
  predict, models = _stubs(server)
  empty = model_server_config_pb2.ModelServerConfig()
  empty.model_config_list.SetInParent()
  error = _error(models.HandleReloadConfigRequest,
                 model_management_pb2.ReloadConfigRequest(config=empty))
  assert error.code() == grpc.StatusCode.PERMISSION_DENIED
  assert "--enable_admin_api" in error.details()
  assert _y(predict.Predict(_request([1.0], [[""]]), timeout=10)) == [2.0]


def test_base_paths_must_stay_inside_the_serving_root(admin_server, root, tmp_path_factory):
  """Issue 9 #8: even with the admin API on, a config can only name the serving root (the
  config file's folder) or a root given with --allowed_base_paths; `..` does not escape it."""
  elsewhere = str(tmp_path_factory.mktemp("elsewhere"))
  save_version(os.path.join(elsewhere, "affine"), 1, 100.0)
  predict, models = _stubs(admin_server)
  for path in (os.path.join(elsewhere, "affine"), os.path.join(root, "..", "elsewhere")):
    error = _error(models.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest(
        config=model_config(root, base_path=path)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "is outside the serving roots" in error.details() and "'affine'" in error.details()
  assert _y(predict.Predict(_request([1.0], [[""]]), timeout=10)) == [2.0]
  with pytest.raises(ServingError, match="outside the serving roots"):  # the file too
    ModelServer(write_config(root, config=model_config(
        root, base_path=os.path.join(elsewhere, "affine"))))
  allowed = ModelServer(os.path.join(root, "models.config"), allowed_base_paths=[elsewhere])
  try:
    assert [v.version for v in allowed.manager.status("affine")] == [1]
  finally:
    allowed.stop()


def test_a_config_file_poll_replaces_an_admin_reload_as_in_tf_serving(root):
  """Issue 9 #8: with --model_config_file_poll_wait_seconds > 0 the file is re-applied at each
  poll, undoing an admin reload (TF Serving's PollFilesystemAndReloadConfig); with 0 the file
  is read once and the admin reload stands (the `admin_server` fixture)."""
  server = ModelServer(write_config(root), poll_seconds=0.1, config_poll_seconds=0.3,
                       enable_admin_api=True).start()
  try:
    predict, models = _stubs(server)
    _reload(models, model_config(root, {"stable": 1}))
    assert _y(predict.Predict(_request([1.0], [[""]], label="stable"), timeout=10)) == [2.0]
    def label_gone():
      try:
        predict.Predict(_request([1.0], [[""]], label="stable"), timeout=10)
        return False
      except grpc.RpcError as error:
        return error.details() == "Unrecognized servable version label: stable"

    _wait(label_gone, what="the file poll")
  finally:
    server.stop()


def test_an_admin_reload_stands_without_config_polling(admin_server, root):
  predict, models = _stubs(admin_server)
  _reload(models, model_config(root, {"stable": 1}))
  time.sleep(1.0)  # five file-system polls
  assert _y(predict.Predict(_request([1.0], [[""]], label="stable"), timeout=10)) == [2.0]


def test_a_label_for_a_version_that_is_not_loaded_is_refused_as_in_tf_serving(admin_server,
                                                                              root):
  """TF Serving refuses the label unless --allow_version_labels_for_unavailable_models."""
  _, models = _stubs(admin_server)
  error = _error(models.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest(
      config=model_config(root, {"canary": 9})))
  assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
  assert error.details() == ("Request to assign label to version 9 of model affine, which is "
                             "not currently available for inference")
  lenient = ModelServer(write_config(root, {"canary": 9}),
                        allow_version_labels_for_unavailable_models=True)
  try:
    with pytest.raises(ServingError, match=r"Specific\(affine, 9\)"):
      with lenient.manager.serving("affine", label="canary"):
        pass
  finally:
    lenient.stop()


def test_the_model_server_binds_loopback_unless_told(server):
  """Issue 9 #9: stock TF Serving listens on every interface; this server only on 127.0.0.1."""
  listening = listening_ips(os.getpid(), server.port)
  assert listening and all(is_loopback(ip) for ip in listening), listening


def test_a_version_whose_variables_arrive_late_comes_up_without_a_restart(server, root,
                                                                          tmp_path):
  """Issue 9 #10: saved_model.pb first, variables/ seconds later (a slow copy): the failed load
  is retried on a later poll."""
  predict, models = _stubs(server)
  staged = str(tmp_path / "staged")
  save_version(staged, 2, 10.0)
  late = os.path.join(root, "affine", "2")
  os.makedirs(late)
  shutil.copy(os.path.join(staged, "2", "saved_model.pb"), late)
  _wait(lambda: any(s.version == 2 and s.state == State.END and s.status.error_message
                    for s in _status(models).model_version_status), what="the failed load")
  shutil.copytree(os.path.join(staged, "2", "variables"), os.path.join(late, "variables"))
  _wait(lambda: predict.Predict(_request([1.0], [[""]]), timeout=10).model_spec.version.value
        == 2, what="version 2 to load on a retry")
  assert _y(predict.Predict(_request([1.0], [[""]]), timeout=10)) == [10.0]


class _Heavy(tf.Module):
  """An affine model carrying 40 MB of weights, so a version that is not freed shows in RSS."""

  def __init__(self):
    super().__init__()
    self.weights = tf.Variable(tf.zeros([10_000_000]))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x"),
                                tf.TensorSpec([None, None], tf.string, name="tags")])
  def serve(self, x, tags):
    return {"y": x + tf.reduce_sum(tf.cast(tags != "", tf.float32), axis=1) + self.weights[0]}


def _batcher_threads(version):
  return [t for t in threading.enumerate() if t.name.startswith(f"batcher-affine-{version}-")]


def test_retired_versions_are_unloaded_and_freed(tmp_path):
  """Issue 9 #10: each reload leaked a batcher thread and the old version (about 51 MB for
  retrieval). Six versions of a 40 MB model in turn: every retired version's batcher stops,
  nothing refers to its model, and RSS stays within one version's size."""
  staged = str(tmp_path / "staged")
  module = _Heavy()
  tf.saved_model.save(module, staged, signatures={"serving_default": module.serve})
  base = str(tmp_path / "affine")
  shutil.copytree(staged, os.path.join(base, "1"))
  server = ModelServer(write_config(str(tmp_path)), poll_seconds=0.1).start()
  try:
    predict, _ = _stubs(server)
    rss, models = [], []
    for version in range(1, 7):
      if version > 1:
        shutil.copytree(staged, os.path.join(base, str(version)))
      _wait(lambda v=version: predict.Predict(_request([1.0], [[""]]), timeout=10)
            .model_spec.version.value == v, what=f"version {version}")
      models.append(weakref.ref(server.manager.status("affine", version)[0].model))
      if version > 1:
        _wait(lambda v=version: server.manager.status("affine", v - 1)[0].state == State.END,
              what=f"version {version - 1} to unload")
        assert not _batcher_threads(version - 1)
        assert models[-2]() is None, f"version {version - 1} is still referenced"
      assert len(_batcher_threads(version)) == 1
      gc.collect()
      rss.append(psutil.Process().memory_info().rss)
    growth = rss[-1] - rss[1]
    print(f"RSS over reloads (MB): {[round(r / 2**20) for r in rss]}")
    assert growth < 40 << 20, f"RSS grew {growth / 2**20:.0f} MB over 4 reloads"
  finally:
    server.stop()
