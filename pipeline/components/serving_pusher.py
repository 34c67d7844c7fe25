"""A Pusher that keeps a TF Serving `models.config` in step with a multi-model serving root.

Every model is pushed by the stock TFX Pusher into its own folder of one serving root:

    <serving_root>/<model_name>/<version>/saved_model.pb
    <serving_root>/models.config

TF Serving started with `--model_config_file=<serving_root>/models.config` serves every model the
file names, but the stock Pusher only copies the SavedModel. After a real push this executor
rescans the root and rewrites `models.config`, so a newly added model is served without anyone
editing the file by hand.
"""
from __future__ import annotations

import os
import uuid
from typing import Any, Dict, List

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2
from tfx import types
from tfx.components import Pusher
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

MODELS_CONFIG = "models.config"

# The stock executor marks its PushedModel output with this int custom property: 1 when it
# copied (or had already copied) the model, 0 when the blessing check refused the push.
_PUSHED_KEY = "pushed"


def _absolute(path: str) -> str:
  """TF Serving resolves base_path from its own working directory, so local paths go absolute."""
  return path if "://" in path else os.path.abspath(path)


def _has_servable_version(model_dir: str) -> bool:
  """A model counts once one version folder holds `saved_model.pb`, which the Pusher copies last."""
  for child in tf.io.gfile.listdir(model_dir):
    version = child.rstrip("/")
    if version.isdigit() and tf.io.gfile.exists(
        os.path.join(model_dir, version, "saved_model.pb")):
      return True
  return False


def write_models_config(serving_root: str) -> str:
  """Writes `<serving_root>/models.config` naming every servable model folder; returns its path.

  The file is written to a private temporary name and renamed over the old one, so TF Serving
  polling the file never reads a half-written config.
  """
  root = _absolute(serving_root).rstrip("/")
  config = model_server_config_pb2.ModelServerConfig()
  names = sorted(child.rstrip("/") for child in tf.io.gfile.listdir(root))
  for name in names:
    model_dir = os.path.join(root, name)
    if not tf.io.gfile.isdir(model_dir) or not _has_servable_version(model_dir):
      continue
    entry = config.model_config_list.config.add(
        name=name, base_path=model_dir, model_platform="tensorflow")
    entry.model_version_policy.latest.num_versions = 1
  path = os.path.join(root, MODELS_CONFIG)
  # A unique temporary name: pushers of different models may run at once in one pipeline, and a
  # shared name would let one writer rename away the other's file mid-write.
  tmp_path = f"{path}.tmp.{uuid.uuid4().hex}"
  with tf.io.gfile.GFile(tmp_path, "w") as f:
    f.write(text_format.MessageToString(config))
  tf.io.gfile.rename(tmp_path, path, overwrite=True)
  return path


def read_models_config(path: str) -> model_server_config_pb2.ModelServerConfig:
  """Parses a text-format `models.config`, the form TF Serving reads."""
  with tf.io.gfile.GFile(path, "r") as f:
    return text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())


class ServingRootPusherExecutor(pusher_executor.Executor):
  """The stock Pusher executor, plus a `models.config` refresh after each real push."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    """Pushes as the stock executor does, then rewrites the serving root's `models.config`."""
    super().Do(input_dict, output_dict, exec_properties)
    pushed_model = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if pushed_model.get_int_custom_property(_PUSHED_KEY) != 1:
      return
    push_destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], push_destination)
    base_directory = push_destination.filesystem.base_directory.rstrip("/")
    write_models_config(os.path.dirname(base_directory))


def serving_root_pusher(model: types.BaseChannel, model_blessing: types.BaseChannel,
                        serving_root: str, model_name: str) -> Pusher:
  """A Pusher that pushes `model` to `<serving_root>/<model_name>` and refreshes models.config."""
  if not model_name.isidentifier():
    # The name becomes both a folder of the serving root and part of the component id.
    raise ValueError(f"model_name must be a valid identifier, got {model_name!r}")
  push_destination = pusher_pb2.PushDestination(
      filesystem=pusher_pb2.PushDestination.Filesystem(
          base_directory=os.path.join(serving_root, model_name)))
  return Pusher(
      model=model,
      model_blessing=model_blessing,
      push_destination=push_destination,
      custom_executor_spec=executor_spec.ExecutorClassSpec(ServingRootPusherExecutor),
  ).with_id(f"{model_name}_pusher")
