"""Runs the serving-root Pusher executor on real artifacts and a real SavedModel."""
from __future__ import annotations

import os
import pathlib
from typing import Dict

import pytest
import tensorflow as tf
from tfx import types
from tfx.components.evaluator import constants as evaluator_constants
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.utils import json_utils
from tfx.utils import path_utils
from tfx.utils import proto_utils

from pipeline.components import serving_pusher
from serving import models_config


class _Doubler(tf.Module):
  """The smallest servable model: y = 2x + 1."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
  def serve(self, x: tf.Tensor) -> Dict[str, tf.Tensor]:
    return {"y": 2.0 * x + 1.0}


@pytest.fixture(scope="module")
def model_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
  """A Trainer-like Model artifact folder, with the SavedModel where the Pusher looks for it."""
  uri = str(tmp_path_factory.mktemp("model"))
  module = _Doubler()
  tf.saved_model.save(module, path_utils.serving_model_dir(uri),
                      signatures={"serving_default": module.serve})
  return uri


def _blessing(uri: pathlib.Path, blessed: bool) -> standard_artifacts.ModelBlessing:
  """A ModelBlessing as the stock Evaluator leaves it: a marker file plus the `blessed` property."""
  uri.mkdir(parents=True)
  artifact = standard_artifacts.ModelBlessing()
  artifact.uri = str(uri)
  if blessed:
    marker, value = evaluator_constants.BLESSED_FILE_NAME, evaluator_constants.BLESSED_VALUE
  else:
    marker, value = evaluator_constants.NOT_BLESSED_FILE_NAME, evaluator_constants.NOT_BLESSED_VALUE
  (uri / marker).write_text("")
  artifact.set_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY, value)
  return artifact


def _push(model_uri: str, work: pathlib.Path, serving_root: pathlib.Path, model_name: str,
          blessed: bool = True) -> types.Artifact:
  """Runs the executor the way the launcher would for one Pusher; returns its PushedModel."""
  model = standard_artifacts.Model()
  model.uri = model_uri
  pushed_model = standard_artifacts.PushedModel()
  pushed_model.uri = str(work / model_name / "pushed_model")
  push_destination = pusher_pb2.PushDestination(
      filesystem=pusher_pb2.PushDestination.Filesystem(
          base_directory=str(serving_root / model_name)))
  serving_pusher.ServingRootPusherExecutor().Do(
      input_dict={
          standard_component_specs.MODEL_KEY: [model],
          standard_component_specs.MODEL_BLESSING_KEY: [
              _blessing(work / model_name / "blessing", blessed)],
      },
      output_dict={standard_component_specs.PUSHED_MODEL_KEY: [pushed_model]},
      exec_properties={
          standard_component_specs.PUSH_DESTINATION_KEY: proto_utils.proto_to_json(
              push_destination),
          standard_component_specs.CUSTOM_CONFIG_KEY: json_utils.dumps(None),
      },
  )
  return pushed_model


def _entries(serving_root: pathlib.Path) -> Dict[str, str]:
  """models.config as {name: base_path}, after checking every entry is set up for TF Serving."""
  config = models_config.read_models_config(str(serving_root / models_config.MODELS_CONFIG))
  for entry in config.model_config_list.config:
    assert entry.model_platform == "tensorflow"
    assert entry.model_version_policy.latest.num_versions == 1
  return {entry.name: entry.base_path for entry in config.model_config_list.config}


def test_push_writes_version_folder_and_models_config(model_uri: str, tmp_path: pathlib.Path):
  serving_root = tmp_path / "serving"
  pushed = _push(model_uri, tmp_path / "work", serving_root, "retrieval")

  assert pushed.get_int_custom_property("pushed") == 1
  version = pushed.get_string_custom_property("pushed_version")
  assert version.isdigit()
  assert (serving_root / "retrieval" / version / "saved_model.pb").is_file()
  assert _entries(serving_root) == {"retrieval": str(serving_root / "retrieval")}


def test_second_model_adds_an_entry(model_uri: str, tmp_path: pathlib.Path):
  serving_root = tmp_path / "serving"
  _push(model_uri, tmp_path / "work", serving_root, "retrieval")
  _push(model_uri, tmp_path / "work", serving_root, "ranking")

  config = models_config.read_models_config(str(serving_root / models_config.MODELS_CONFIG))
  # The existing entry stays where it was; the new one is added after it.
  assert [entry.name for entry in config.model_config_list.config] == ["retrieval", "ranking"]
  assert _entries(serving_root) == {
      "ranking": str(serving_root / "ranking"),
      "retrieval": str(serving_root / "retrieval"),
  }


def test_not_blessed_pushes_nothing_and_keeps_models_config(model_uri: str,
                                                            tmp_path: pathlib.Path):
  serving_root = tmp_path / "serving"
  _push(model_uri, tmp_path / "work", serving_root, "retrieval")
  config_path = serving_root / models_config.MODELS_CONFIG
  before = config_path.read_bytes()
  before_mtime = config_path.stat().st_mtime_ns

  pushed = _push(model_uri, tmp_path / "work", serving_root, "ranking", blessed=False)

  assert pushed.get_int_custom_property("pushed") == 0
  assert not (serving_root / "ranking").exists()
  assert config_path.read_bytes() == before
  assert config_path.stat().st_mtime_ns == before_mtime


def test_not_blessed_first_push_writes_no_models_config(model_uri: str, tmp_path: pathlib.Path):
  serving_root = tmp_path / "serving"
  serving_root.mkdir()
  _push(model_uri, tmp_path / "work", serving_root, "retrieval", blessed=False)
  assert os.listdir(serving_root) == []


def test_pushed_saved_model_serves(model_uri: str, tmp_path: pathlib.Path):
  serving_root = tmp_path / "serving"
  pushed = _push(model_uri, tmp_path / "work", serving_root, "retrieval")
  version = pushed.get_string_custom_property("pushed_version")

  loaded = tf.saved_model.load(str(serving_root / "retrieval" / version))
  result = loaded.signatures["serving_default"](x=tf.constant([0.0, 1.5]))
  assert result["y"].numpy().tolist() == [1.0, 4.0]


def test_models_config_skips_folders_that_are_not_servable(model_uri: str,
                                                           tmp_path: pathlib.Path,
                                                           monkeypatch: pytest.MonkeyPatch):
  serving_root = tmp_path / "serving"
  _push(model_uri, tmp_path / "work", serving_root, "retrieval")
  # A push still copying (no saved_model.pb yet), a non-version folder, and a stray file.
  (serving_root / "half_pushed" / "123").mkdir(parents=True)
  (serving_root / "half_pushed" / "123" / "variables").mkdir()
  (serving_root / "scratch" / "latest").mkdir(parents=True)
  (serving_root / "scratch" / "latest" / "saved_model.pb").write_bytes(b"")
  (serving_root / "README").write_text("")

  # A relative serving root still yields absolute base paths, which TF Serving needs.
  monkeypatch.chdir(tmp_path)
  path = serving_pusher.refresh_models_config("serving")

  assert path == str(serving_root / models_config.MODELS_CONFIG)
  assert _entries(serving_root) == {"retrieval": str(serving_root / "retrieval")}
  assert sorted(os.listdir(serving_root)) == [
      "README", "half_pushed", models_config.MODELS_CONFIG, "retrieval", "scratch"]


def test_serving_root_pusher_component(tmp_path: pathlib.Path):
  pusher = serving_pusher.serving_root_pusher(
      model=types.Channel(type=standard_artifacts.Model),
      model_blessing=types.Channel(type=standard_artifacts.ModelBlessing),
      serving_root=str(tmp_path / "serving"),
      model_name="retrieval",
  )

  assert pusher.id == "retrieval_pusher"
  assert pusher.executor_spec.executor_class is serving_pusher.ServingRootPusherExecutor
  # The component spec stores the proto as JSON, which is what the executor parses.
  push_destination = proto_utils.json_to_proto(
      pusher.exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
      pusher_pb2.PushDestination())
  assert push_destination.filesystem.base_directory == str(tmp_path / "serving" / "retrieval")
  with pytest.raises(ValueError):
    serving_pusher.serving_root_pusher(
        model=types.Channel(type=standard_artifacts.Model),
        model_blessing=types.Channel(type=standard_artifacts.ModelBlessing),
        serving_root=str(tmp_path / "serving"),
        model_name="my-model",
    )


def test_pushing_the_same_model_again_reuses_its_version(model_uri: str, tmp_path: pathlib.Path):
  serving_root = tmp_path / "serving"
  first = _push(model_uri, tmp_path / "first", serving_root, "retrieval")
  again = _push(model_uri, tmp_path / "again", serving_root, "retrieval")
  assert again.get_int_custom_property("pushed") == 1
  assert (again.get_string_custom_property("pushed_version")
          == first.get_string_custom_property("pushed_version"))
  versions = [p.name for p in (serving_root / "retrieval").iterdir() if p.name.isdigit()]
  assert len(versions) == 1


def test_a_push_keeps_what_an_operator_set_in_models_config(model_uri: str,
                                                            tmp_path: pathlib.Path):
  """Issue 9 #2: labels, version policies and other fields survive every push; a push only
  adds models and fixes base paths (here after the root was moved)."""
  serving_root = tmp_path / "serving"
  first = _push(model_uri, tmp_path / "first", serving_root, "retrieval")
  version = int(first.get_string_custom_property("pushed_version"))
  path = str(serving_root / models_config.MODELS_CONFIG)
  models_config.label_versions(path, "retrieval", {"stable": version})
  config = models_config.read_models_config(path)
  config.model_config_list.config[0].logging_config.sampling_config.sampling_rate = 0.5
  config.model_config_list.config.add(name="external", base_path="/models/external",
                                      model_platform="tensorflow")
  models_config.write_models_config(config, path)
  before = models_config.read_models_config(path)

  _push(model_uri, tmp_path / "second", serving_root, "ranking")
  moved = tmp_path / "moved"
  serving_root.rename(moved)
  serving_pusher.refresh_models_config(str(moved))

  after = models_config.read_models_config(str(moved / models_config.MODELS_CONFIG))
  entries = {entry.name: entry for entry in after.model_config_list.config}
  assert sorted(entries) == ["external", "ranking", "retrieval"]
  retrieval = entries["retrieval"]
  assert retrieval.base_path == str(moved / "retrieval")
  retrieval.base_path = before.model_config_list.config[0].base_path
  assert retrieval == before.model_config_list.config[0]  # labels, policy, logging: all kept
  assert dict(retrieval.version_labels) == {"stable": version}
  assert list(retrieval.model_version_policy.specific.versions) == [version]
  assert entries["external"] == before.model_config_list.config[1]
  assert entries["ranking"].model_version_policy.latest.num_versions == 1
