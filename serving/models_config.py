"""The serving root's layout and its `models.config`, the one contract between the pusher that
fills the root and the model servers that serve it (the local one and stock TF Serving).

    <serving_root>/<model_name>/<version>/saved_model.pb     version = an all-digit folder
    <serving_root>/models.config                              text-format ModelServerConfig

A version counts once its folder holds `saved_model.pb`, which the Pusher copies last, as TF
Serving's file-system source does.
"""
from __future__ import annotations

import os
import uuid
from typing import List

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

# The models the pipeline pushes and the cascade calls, by their folder (= model) names.
RETRIEVAL = "retrieval"
ITEM_TO_ITEM = "item_to_item"
POPULARITY = "popularity"
RANKER = "ranker"
CROSS_ENCODER = "cross_encoder"
BANDIT = "bandit"

MODELS_CONFIG = "models.config"
SAVED_MODEL_FILE = "saved_model.pb"
ModelServerConfig = model_server_config_pb2.ModelServerConfig


def models_config_path(serving_root: str) -> str:
  return os.path.join(serving_root, MODELS_CONFIG)


def read_models_config(path: str) -> ModelServerConfig:
  """Parses a text-format `models.config`, the form TF Serving reads."""
  with tf.io.gfile.GFile(path, "r") as f:
    return text_format.Parse(f.read(), ModelServerConfig())


def write_models_config(config: ModelServerConfig, path: str) -> None:
  """Writes to a private temporary name and renames it over the old file, so a server polling
  the file never reads half of it (and two writers never rename away each other's file)."""
  tmp_path = f"{path}.tmp.{uuid.uuid4().hex}"
  with tf.io.gfile.GFile(tmp_path, "w") as f:
    f.write(text_format.MessageToString(config))
  tf.io.gfile.rename(tmp_path, path, overwrite=True)


def available_versions(base_path: str) -> List[int]:
  """The version folders under a model's base path that hold a complete SavedModel, in order."""
  if not tf.io.gfile.isdir(base_path):
    return []
  versions = []
  for name in tf.io.gfile.listdir(base_path):
    name = name.rstrip("/")
    if name.isdigit() and tf.io.gfile.exists(os.path.join(base_path, name, SAVED_MODEL_FILE)):
      versions.append(int(name))
  return sorted(versions)
