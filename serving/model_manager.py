"""Which model versions are loaded, following a TF Serving `models.config`, reloaded live.

The manager polls each model's base path the way TF Serving's file-system source does: every
all-digit folder holding a `saved_model.pb` is a version; the version policy (latest N, all,
specific) picks which to serve. A new version is loaded before the one it replaces goes (TF
Serving's availability-preserving policy); the retired one is unloaded once the requests using
it finish, and freed. A version that fails to load is reported (state END, with the error) while
whatever served before keeps serving, and is tried again on later polls with a doubling back-off
(its `variables/` may still be arriving).

A config (the file, or an admin HandleReloadConfigRequest) is checked before anything of it is
applied: a ModelConfigList, unique names, platform `tensorflow`, and every base path inside the
serving roots (the config file's folder, plus `allowed_roots`). Its labels are checked after its
versions are loaded (stock TF Serving checks them before, so there a label for a version that is
still to load needs two config changes): a label may only name an AVAILABLE version, unless
`allow_unavailable_labels` (TF Serving's `--allow_version_labels_for_unavailable_models`: then a
new label may name any version); otherwise FAILED_PRECONDITION and the labels stay as they were.
Errors carry TF Serving's wording, so clients see the same answers from both servers.
"""
from __future__ import annotations

import collections
import contextlib
import gc
import logging
import os
import threading
import time
from typing import Dict, Iterator, List, Optional, Sequence

import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.models_config import (SAVED_MODEL_FILE, ModelServerConfig, available_versions,
                                   read_models_config)
from serving.servable import LoadedVersion, State

log = logging.getLogger(__name__)
ModelConfig = model_server_config_pb2.ModelConfig


class ServingError(Exception):
  """An error with the gRPC status code (a grpc.StatusCode name) the servers answer with."""

  def __init__(self, code: str, message: str):
    super().__init__(message)
    self.code = code


def wanted_versions(config: ModelConfig, on_disk: List[int]) -> List[int]:
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


def _normalized(path: str) -> str:
  """A path with `..` and (locally) symlinks resolved, so a prefix test means containment."""
  if "://" in path:
    scheme, rest = path.split("://", 1)
    return f"{scheme}://{os.path.normpath('/' + rest).lstrip('/')}"
  return os.path.realpath(path)


def _inside(path: str, root: str) -> bool:
  path, root = _normalized(path), root.rstrip("/")
  return path == root or path.startswith(root + "/")


class ModelManager:
  """Holds the loaded versions of every configured model; `poll()` brings them up to date."""

  def __init__(self, config_path: str, allowed_roots: Sequence[str] = (),
               allow_unavailable_labels: bool = False, retry_base_s: float = 2.0,
               retry_max_s: float = 60.0):
    self.config_path = config_path
    self.roots = tuple(_normalized(root) for root in
                       [os.path.dirname(os.path.abspath(config_path)), *allowed_roots])
    self._allow_unavailable_labels = allow_unavailable_labels
    self._retry_base_s, self._retry_max_s = retry_base_s, retry_max_s
    self._lock = threading.RLock()
    self._configs: Dict[str, ModelConfig] = {}
    self._labels: Dict[str, Dict[str, int]] = {}
    self._versions: Dict[str, Dict[int, LoadedVersion]] = {}

  # --- configs ---------------------------------------------------------------------------
  def read_config_file(self) -> ModelServerConfig:
    return read_models_config(self.config_path)

  def apply(self, config: ModelServerConfig) -> None:
    """Checks a config, serves its models (loading what they want), then takes its labels."""
    kind = config.WhichOneof("config")
    if kind is None:  # TF Serving: "Taking no action for empty config"
      return
    if kind != "model_config_list":
      raise ServingError("INVALID_ARGUMENT", "ServerModelConfig type not supported by "
                                             "HandleReloadConfigRequest. Only ModelConfigList "
                                             "is currently supported")
    entries = list(config.model_config_list.config)
    self._check(entries)
    with self._lock:
      self._configs = {entry.name: entry for entry in entries}
      gone = [self._versions.pop(name) for name in list(self._versions)
              if name not in self._configs]
      self._labels = {n: labels for n, labels in self._labels.items() if n in self._configs}
      retiring = self._mark_unloading(v for versions in gone for v in versions.values())
    self._unload(retiring)
    self.poll()
    self._take_labels(entries)

  def _check(self, entries: List[ModelConfig]) -> None:
    counts = collections.Counter(entry.name for entry in entries)
    for name, count in counts.items():
      if not name:
        raise ServingError("INVALID_ARGUMENT", "model_config_list has a config without a name")
      if count > 1:
        raise ServingError("INVALID_ARGUMENT",
                           f"Illegal to list model {name} {count} times in config list")
    for entry in entries:
      if entry.model_platform not in ("", "tensorflow"):
        raise ServingError("INVALID_ARGUMENT", f"model {entry.name!r}: model_platform "
                                               f"{entry.model_platform!r} is not supported "
                                               f"(only 'tensorflow')")
      if not any(_inside(entry.base_path, root) for root in self.roots):
        raise ServingError("PERMISSION_DENIED", f"model {entry.name!r}: base_path "
                                                f"{entry.base_path!r} is outside the serving "
                                                f"roots {list(self.roots)}; allow another root "
                                                f"with --allowed_base_paths")

  def _take_labels(self, entries: List[ModelConfig]) -> None:
    with self._lock:
      labels: Dict[str, Dict[str, int]] = {}
      for entry in entries:
        for label, version in entry.version_labels.items():
          loaded = self._versions.get(entry.name, {}).get(version)
          current = self._labels.get(entry.name, {}).get(label)
          if not (loaded is not None and loaded.state == State.AVAILABLE) and not (
              self._allow_unavailable_labels and current in (None, version)):
            raise ServingError("FAILED_PRECONDITION", f"Request to assign label to version "
                                                      f"{version} of model {entry.name}, which "
                                                      f"is not currently available for "
                                                      f"inference")
          labels.setdefault(entry.name, {})[label] = version
      self._labels = labels

  # --- versions --------------------------------------------------------------------------
  def poll(self) -> None:
    """Loads wanted versions that are new (or due for a retry), then unloads retired ones."""
    with self._lock:
      configs = dict(self._configs)
    for name, config in configs.items():
      wanted = wanted_versions(config, available_versions(config.base_path))
      for version in wanted:
        self._load_if_due(name, version, os.path.join(config.base_path, str(version)))
      with self._lock:
        versions = self._versions.get(name, {})
        ready = any(versions[v].state == State.AVAILABLE for v in wanted if v in versions)
        # A version leaves only once something wanted serves in its place.
        retiring = self._mark_unloading(e for v, e in versions.items()
                                        if ready and v not in wanted)
      self._unload(retiring)

  def _due(self, entry: Optional[LoadedVersion]) -> bool:
    if entry is None:
      return True
    if entry.state != State.END:
      return False
    return not entry.error or time.monotonic() >= entry.retry_at  # unloaded, or retry time

  def _load_if_due(self, name: str, version: int, path: str) -> None:
    with self._lock:
      if name not in self._configs:
        return
      current = self._versions.setdefault(name, {}).get(version)
      if not self._due(current):
        return
      entry = LoadedVersion(name, version, path, state=State.LOADING,
                            failures=current.failures if current and current.error else 0)
      self._versions[name][version] = entry
    try:
      model = tf.saved_model.load(path)
      entry.signature_defs = _signature_defs(path)
      entry.model, entry.error, entry.failures = model, "", 0
      entry.state = State.AVAILABLE
      log.info("loaded %s version %d from %s", name, version, path)
    except Exception as error:  # pylint: disable=broad-except
      entry.failures += 1
      entry.retry_at = time.monotonic() + min(self._retry_base_s * 2 ** (entry.failures - 1),
                                              self._retry_max_s)
      entry.error, entry.state = f"{type(error).__name__}: {error}", State.END
      log.error("failed to load %s version %d (attempt %d, next in %.0f s): %s", name, version,
                entry.failures, entry.retry_at - time.monotonic(), entry.error)

  @staticmethod
  def _mark_unloading(entries) -> List[LoadedVersion]:
    """Under the lock: no request can acquire these any more."""
    retiring = [e for e in entries if e.state == State.AVAILABLE]
    for entry in retiring:
      entry.state = State.UNLOADING
    return retiring

  @staticmethod
  def _unload(retiring: List[LoadedVersion]) -> None:
    for entry in retiring:
      entry.unload()
    if retiring:
      gc.collect()  # a loaded SavedModel is a web of cycles: free it now, not at some later GC

  def unload_all(self) -> None:
    with self._lock:
      retiring = self._mark_unloading(
          e for versions in self._versions.values() for e in versions.values())
    self._unload(retiring)

  # --- requests --------------------------------------------------------------------------
  def status(self, name: str, version: Optional[int] = None) -> List[LoadedVersion]:
    """GetModelStatus's answer, with TF Serving's NOT_FOUND texts."""
    with self._lock:
      versions = dict(self._versions.get(name, {})) if name in self._configs else {}
    if version is not None:
      if version not in versions:
        raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
      return [versions[version]]
    if not versions:
      raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
    return [versions[v] for v in sorted(versions)]

  @contextlib.contextmanager
  def serving(self, name: str, version: Optional[int] = None, label: str = ""
              ) -> Iterator[LoadedVersion]:
    """Holds the version a request asks for (a number, a label, or the latest available) for
    the duration of the request, so an unload waits for it."""
    with self._lock:
      entry = self._resolve(name, version, label)
      entry.acquire()
    try:
      yield entry
    finally:
      entry.release()

  def _resolve(self, name: str, version: Optional[int], label: str) -> LoadedVersion:
    if not name:
      raise ServingError("INVALID_ARGUMENT", "ModelSpec has no name specified.")
    if label:
      labels = self._labels.get(name, {})
      if label not in labels:
        raise ServingError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
      version = labels[label]
    versions = self._versions.get(name, {}) if name in self._configs else {}
    available = {v: e for v, e in versions.items() if e.state == State.AVAILABLE}
    if version is None:
      if not available:
        raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
      return available[max(available)]
    if version not in available:
      raise ServingError("NOT_FOUND",
                         f"Servable not found for request: Specific({name}, {version})")
    return available[version]
