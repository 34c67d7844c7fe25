"""A Pusher that keeps a TF Serving `models.config` in step with a multi-model serving root.

Every model is pushed by the stock TFX Pusher into its own folder of one serving root:

    <serving_root>/<model_name>/<version>/saved_model.pb
    <serving_root>/models.config

TF Serving started with `--model_config_file=<serving_root>/models.config` serves every model the
file names, but the stock Pusher only copies the SavedModel. After a real push this executor
rescans the root and updates `models.config`, so a newly added model is served without anyone
editing the file by hand; what an operator set there (version policies, labels for an A/B test,
any other field) is kept: a push only adds models and fixes base paths.
"""
from __future__ import annotations

import json
import os
import uuid
from typing import Any, Dict, List, Optional

import tensorflow as tf
from tfx import types
from tfx.components import Pusher
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from serving.models_config import (ModelServerConfig, available_versions, models_config_path,
                                   read_models_config, with_models, write_models_config)

# The stock executor marks its PushedModel output with this int custom property: 1 when it
# copied (or had already copied) the model, 0 when the blessing check refused the push.
_PUSHED_KEY = "pushed"
_PUSHED_VERSION_KEY = "pushed_version"
_PUSHED_DESTINATION_KEY = "pushed_destination"


def _absolute(path: str) -> str:
  """TF Serving resolves base_path from its own working directory, so local paths go absolute."""
  return path if "://" in path else os.path.abspath(path)


def refresh_models_config(serving_root: str) -> str:
  """Updates `<serving_root>/models.config` so it names every servable model folder, keeping
  what is already there; returns its path."""
  root = _absolute(serving_root).rstrip("/")
  model_dirs = {}
  for name in sorted(child.rstrip("/") for child in tf.io.gfile.listdir(root)):
    model_dir = os.path.join(root, name)
    if tf.io.gfile.isdir(model_dir) and available_versions(model_dir):
      model_dirs[name] = model_dir
  path = models_config_path(root)
  existing = read_models_config(path) if tf.io.gfile.exists(path) else ModelServerConfig()
  write_models_config(with_models(existing, model_dirs), path)
  return path


PUSH_LOG = "pushes.json"


def read_push_log(model_dir: str) -> Dict[str, str]:
  """{model artifact uri: version} of everything pushed into one model's folder."""
  path = os.path.join(model_dir, PUSH_LOG)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def _record_push(model_dir: str, model_uri: str, version: str) -> None:
  log = read_push_log(model_dir)
  log[model_uri] = version
  tmp = os.path.join(model_dir, f"{PUSH_LOG}.tmp.{uuid.uuid4().hex}")
  with tf.io.gfile.GFile(tmp, "w") as f:
    json.dump(log, f, indent=2, sort_keys=True)
  tf.io.gfile.rename(tmp, os.path.join(model_dir, PUSH_LOG), overwrite=True)


def _push_destination(serving_root: str, model_name: str) -> pusher_pb2.PushDestination:
  return pusher_pb2.PushDestination(filesystem=pusher_pb2.PushDestination.Filesystem(
      base_directory=os.path.join(serving_root, model_name)))


def _push_destination_dir(exec_properties: Dict[str, Any]) -> str:
  """The model's folder in the serving root, from the Pusher's `push_destination`."""
  push_destination = pusher_pb2.PushDestination()
  proto_utils.json_to_proto(
      exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], push_destination)
  return push_destination.filesystem.base_directory.rstrip("/")


class ServingRootPusherExecutor(pusher_executor.Executor):
  """The stock Pusher executor, plus a `models.config` refresh after each push.

  A model that is already in the serving root (a re-run on unchanged data re-blesses the same
  model) is not copied again as a new version: the push points at the version it already has.
  """

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    """Pushes as the stock executor does, then rewrites the serving root's `models.config`."""
    model_dir = _push_destination_dir(exec_properties)
    model_uri = artifact_utils.get_single_uri(input_dict[standard_component_specs.MODEL_KEY])
    pushed_model = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    existing = read_push_log(model_dir).get(model_uri)
    if existing and self.CheckBlessing(input_dict) and tf.io.gfile.exists(
        os.path.join(model_dir, existing)):
      self._MarkPushed(pushed_model, pushed_destination=os.path.join(model_dir, existing),
                       pushed_version=existing)
      refresh_models_config(os.path.dirname(model_dir))
    else:
      self.push_new_version(input_dict, output_dict, exec_properties)

  def push_new_version(self, input_dict: Dict[str, List[types.Artifact]],
                       output_dict: Dict[str, List[types.Artifact]],
                       exec_properties: Dict[str, Any]) -> None:
    """The stock push (when blessed, or without a blessing input: a new version named by the
    time), recorded in the push log, then `models.config` refreshed."""
    super().Do(input_dict, output_dict, exec_properties)
    pushed_model = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if pushed_model.get_int_custom_property(_PUSHED_KEY) != 1:
      return
    model_dir = _push_destination_dir(exec_properties)
    _record_push(model_dir,
                 artifact_utils.get_single_uri(input_dict[standard_component_specs.MODEL_KEY]),
                 pushed_model.get_string_custom_property(_PUSHED_VERSION_KEY))
    refresh_models_config(os.path.dirname(model_dir))


def pusher_id(model_name: str) -> str:
  """The node id of the pusher of one model (the run report finds its PushedModel by it)."""
  return f"{model_name}_pusher"


def serving_root_pusher(model: types.BaseChannel, model_blessing: Optional[types.BaseChannel],
                        serving_root: str, model_name: str) -> Pusher:
  """A Pusher that pushes `model` to `<serving_root>/<model_name>` and refreshes models.config;
  without a blessing it pushes every new model (the popularity fallback)."""
  if not model_name.isidentifier():
    # The name becomes both a folder of the serving root and part of the component id.
    raise ValueError(f"model_name must be a valid identifier, got {model_name!r}")
  return Pusher(
      model=model,
      model_blessing=model_blessing,
      push_destination=_push_destination(serving_root, model_name),
      custom_executor_spec=executor_spec.ExecutorClassSpec(ServingRootPusherExecutor),
  ).with_id(pusher_id(model_name))


def push_without_blessing(model: types.Artifact, serving_root: str, model_name: str,
                          archive_uri: str) -> str:
  """Pushes `model` (a Model artifact) as a new version of `<serving_root>/<model_name>`
  exactly as the pipeline's pusher does, with no blessing asked for: an operator's deliberate
  push (pipeline/push_model.py). The stock executor also copies the model to `archive_uri`.
  Returns the version folder it pushed to."""
  pushed = standard_artifacts.PushedModel()
  pushed.uri = archive_uri
  ServingRootPusherExecutor().push_new_version(
      {standard_component_specs.MODEL_KEY: [model]},
      {standard_component_specs.PUSHED_MODEL_KEY: [pushed]},
      {standard_component_specs.PUSH_DESTINATION_KEY:
           proto_utils.proto_to_json(_push_destination(serving_root, model_name))})
  return pushed.get_string_custom_property(_PUSHED_DESTINATION_KEY)
