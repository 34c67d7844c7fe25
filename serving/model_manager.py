"""Which model versions are loaded, following a TF Serving `models.config`, reloaded live.

The manager polls each model's base path the way TF Serving's file-system source does: every
all-digit folder holding a `saved_model.pb` is a version; the version policy (latest N, all,
specific) picks which to serve; labels (`stable`, `canary`, ...) name versions. A version that
fails to load is reported (state END, with the error) and whatever served before keeps serving.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Dict, List, Optional

import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.models_config import SAVED_MODEL_FILE, available_versions, read_models_config

State = get_model_status_pb2.ModelVersionStatus.State
log = logging.getLogger(__name__)


class ServingError(Exception):
  """An error with the gRPC status code the servers answer with."""

  def __init__(self, code, message: str):
    super().__init__(message)
    self.code = code


@dataclasses.dataclass
class LoadedVersion:
  version: int
  path: str
  model: Optional[object] = None
  signature_defs: Dict[str, meta_graph_pb2.SignatureDef] = dataclasses.field(default_factory=dict)
  state: int = State.START
  error: str = ""


def wanted_versions(config: model_server_config_pb2.ModelConfig, on_disk: List[int]) -> List[int]:
  """Which versions the policy serves (TF Serving's default policy is the latest one)."""
  policy = config.model_version_policy
  kind = policy.WhichOneof("policy_choice")
  if kind == "all":
    return on_disk
  if kind == "specific":
    return [v for v in on_disk if v in set(policy.specific.versions)]
  latest = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions else 1
  return on_disk[-latest:]


def _signature_defs(path: str) -> Dict[str, meta_graph_pb2.SignatureDef]:
  saved_model = saved_model_pb2.SavedModel()
  with tf.io.gfile.GFile(os.path.join(path, SAVED_MODEL_FILE), "rb") as f:
    saved_model.ParseFromString(f.read())
  return dict(saved_model.meta_graphs[0].signature_def)


class ModelManager:
  """Holds the loaded versions of every configured model; `poll()` brings them up to date."""

  def __init__(self, config_path: str):
    self._config_path = config_path
    self._lock = threading.RLock()
    self._configs: Dict[str, model_server_config_pb2.ModelConfig] = {}
    self._versions: Dict[str, Dict[int, LoadedVersion]] = {}

  def reload_config(self, config: Optional[model_server_config_pb2.ModelServerConfig] = None
                    ) -> None:
    """Reads models.config again (or takes the given config): models may come and go."""
    config = config or read_models_config(self._config_path)
    with self._lock:
      self._configs = {c.name: c for c in config.model_config_list.config}
      for name in list(self._versions):
        if name not in self._configs:
          del self._versions[name]

  def poll(self) -> None:
    """Loads new wanted versions, then unloads versions no longer wanted."""
    with self._lock:
      configs = dict(self._configs)
    for name, config in configs.items():
      wanted = wanted_versions(config, available_versions(config.base_path))
      loaded = self._versions.setdefault(name, {})
      for version in wanted:
        if version not in loaded:
          loaded[version] = self._load(name, version, os.path.join(config.base_path, str(version)))
      ready = [v for v in wanted if loaded[v].state == State.AVAILABLE]
      for version in list(loaded):
        # A version leaves only once something wanted serves in its place.
        if version not in wanted and loaded[version].state == State.AVAILABLE and ready:
          loaded[version] = dataclasses.replace(loaded[version], model=None, state=State.END)
          log.info("unloaded %s version %d", name, version)

  def _load(self, name: str, version: int, path: str) -> LoadedVersion:
    entry = LoadedVersion(version=version, path=path, state=State.LOADING)
    try:
      entry.model = tf.saved_model.load(path)
      entry.signature_defs = _signature_defs(path)
      entry.state = State.AVAILABLE
      log.info("loaded %s version %d from %s", name, version, path)
    except Exception as error:  # pylint: disable=broad-except
      entry.state, entry.error = State.END, f"{type(error).__name__}: {error}"
      log.error("failed to load %s version %d: %s", name, version, entry.error)
    return entry

  def status(self, name: str) -> List[LoadedVersion]:
    with self._lock:
      if name not in self._configs:
        raise ServingError("NOT_FOUND", f"model {name!r} is not in {self._config_path}")
      return sorted(self._versions.get(name, {}).values(), key=lambda v: v.version)

  def resolve(self, name: str, version: Optional[int] = None, label: str = "") -> LoadedVersion:
    """The version a request asks for: a number, a label, or the latest available."""
    with self._lock:
      config = self._configs.get(name)
      if config is None:
        raise ServingError("NOT_FOUND", f"model {name!r} is not served (known: "
                                        f"{sorted(self._configs)})")
      if label:
        if label not in config.version_labels:
          raise ServingError("INVALID_ARGUMENT", f"model {name!r} has no version label {label!r} "
                                                 f"(labels: {sorted(config.version_labels)})")
        version = config.version_labels[label]
      available = {v: e for v, e in self._versions.get(name, {}).items()
                   if e.state == State.AVAILABLE}
      if version is None:
        if not available:
          raise ServingError("UNAVAILABLE", f"model {name!r} has no version available yet")
        return available[max(available)]
      if version not in available:
        raise ServingError("NOT_FOUND", f"model {name!r} version {version} is not available "
                                        f"(available: {sorted(available)})")
      return available[version]
