"""The serving root's layout and its `models.config`, the one contract between the pusher that
fills the root, the operator who labels versions, and the model servers that serve it (the local
one and stock TF Serving).

    <serving_root>/<model_name>/<version>/saved_model.pb     version = an all-digit folder
    <serving_root>/models.config                              text-format ModelServerConfig

A version counts once its folder holds `saved_model.pb`, which the Pusher copies last, as TF
Serving's file-system source does. A push only adds models and fixes base paths: whatever an
operator set (version policies, labels, other fields) stays.

Labelling versions for an A/B test (README, "A/B testing"):

    python -m serving.models_config --serving_root outputs/serving \\
        label retrieval stable=1700000000 canary=1700086400
    python -m serving.models_config --serving_root outputs/serving unlabel retrieval
"""
from __future__ import annotations

import argparse
import os
import sys
import uuid
from typing import Dict, Iterable, List, Optional


def parse_args(argv: List[str]) -> argparse.Namespace:
  """Above the imports of TensorFlow, so that --help and a bad flag answer at once."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--serving_root", required=True,
                      help="the serving root whose models.config is rewritten")
  commands = parser.add_subparsers(dest="command", required=True,
                                   help="label: serve exactly these versions under these "
                                        "labels; unlabel: back to the latest version")
  label = commands.add_parser("label", help="serve exactly these versions, under these labels")
  label.add_argument("model", help="the model's name in models.config")
  label.add_argument("labels", nargs="+", metavar="LABEL=VERSION",
                     help="a label and the version folder it names, e.g. stable=1700000000")
  commands.add_parser("unlabel", help="back to the latest version, no labels").add_argument(
      "model", help="the model's name in models.config")
  return parser.parse_args(argv)


if __name__ == "__main__":
  parse_args(sys.argv[1:])

import tensorflow as tf  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

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
ModelConfig = model_server_config_pb2.ModelConfig


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


def with_models(config: ModelServerConfig, model_dirs: Dict[str, str]) -> ModelServerConfig:
  """`config` plus an entry (latest version, TF Serving's default policy) for every model folder
  it lacks; an existing entry keeps every field an operator set, only its base path follows
  the folder."""
  merged = ModelServerConfig()
  merged.CopyFrom(config)
  entries = {entry.name: entry for entry in merged.model_config_list.config}
  for name in sorted(model_dirs):
    if name in entries:
      entries[name].base_path = model_dirs[name]
      continue
    entry = merged.model_config_list.config.add(
        name=name, base_path=model_dirs[name], model_platform="tensorflow")
    entry.model_version_policy.latest.num_versions = 1
  return merged


def _entry(config: ModelServerConfig, model: str, path: str) -> ModelConfig:
  for entry in config.model_config_list.config:
    if entry.name == model:
      return entry
  raise SystemExit(f"model {model!r} is not in {path} (models: "
                   f"{[e.name for e in config.model_config_list.config]})")


def label_versions(path: str, model: str, labels: Dict[str, int]) -> ModelServerConfig:
  """Serves exactly the labelled versions of `model` (a `specific` version policy) under those
  labels; every version must be on disk as a complete SavedModel."""
  config = read_models_config(path)
  entry = _entry(config, model, path)
  on_disk = set(available_versions(entry.base_path))
  missing = sorted(v for v in labels.values() if v not in on_disk)
  if missing:
    raise SystemExit(f"model {model!r} has no complete version {missing} under "
                     f"{entry.base_path} (versions: {sorted(on_disk)})")
  entry.model_version_policy.specific.versions[:] = sorted(set(labels.values()))
  entry.version_labels.clear()
  entry.version_labels.update(labels)
  write_models_config(config, path)
  return config


def unlabel(path: str, model: str) -> ModelServerConfig:
  """Back to serving the latest version, without labels."""
  config = read_models_config(path)
  entry = _entry(config, model, path)
  entry.version_labels.clear()
  entry.model_version_policy.latest.num_versions = 1
  write_models_config(config, path)
  return config


def _labels(pairs: Iterable[str]) -> Dict[str, int]:
  labels = {}
  for pair in pairs:
    label, _, version = pair.partition("=")
    if not label or not version.isdigit():
      raise SystemExit(f"expected LABEL=VERSION (e.g. stable=1700000000), got {pair!r}")
    labels[label] = int(version)
  return labels


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  path = models_config_path(args.serving_root)
  if args.command == "label":
    config = label_versions(path, args.model, _labels(args.labels))
  else:
    config = unlabel(path, args.model)
  print(text_format.MessageToString(_entry(config, args.model, path)), end="")
  return 0


if __name__ == "__main__":
  sys.exit(main())
