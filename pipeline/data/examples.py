"""The ExampleGen's examples: their splits, and tf.Example <-> Python dicts, how the ExampleGen
writes them and how plain-Python readers (the cross-encoder's miner, the bandit's simulated log,
the popularity count) read them back.

None and "" are absent features (the schema's "missing"); an empty list stays an empty list
feature, so a row with no history still has the feature.
"""
from __future__ import annotations

import hashlib
from typing import Any, Collection, Dict, List, Mapping, Optional

import tensorflow as tf

# The splits of the examples: the latest interactions of each user are `eval` (see
# pipeline/components/interaction_example_gen.py), the rest `train`.
TRAIN = "train"
EVAL = "eval"
SPLITS = (TRAIN, EVAL)


def stable_hash(*parts: object) -> int:
  """A hash that is the same in every process and on every runner (Python's hash() is salted
  per process), for assigning splits, folds and samples deterministically."""
  digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
  return int.from_bytes(digest, "big")


def _feature(value: Any, int_list: bool) -> Optional[tf.train.Feature]:
  """A tf.train.Feature for one value or list of values; None when the value is absent. An
  empty list is a bytes feature unless `int_list` (its type cannot be seen from its values)."""
  values = value if isinstance(value, list) else [value]
  values = [v for v in values if v is not None and v != ""]
  if isinstance(value, list) and not values:
    return (tf.train.Feature(int64_list=tf.train.Int64List(value=[])) if int_list
            else tf.train.Feature(bytes_list=tf.train.BytesList(value=[])))
  if not values:
    return None
  if isinstance(values[0], str):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))
  if isinstance(values[0], float):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def encode_example(fields: Mapping[str, Any], int_lists: Collection[str] = ()) -> bytes:
  """Serializes a dict of feature values (str, int, float or lists of one of them); the
  features named in `int_lists` are int64 lists even when empty."""
  example = tf.train.Example()
  for name, value in fields.items():
    feature = _feature(value, name in int_lists)
    if feature is not None:
      example.features.feature[name].CopyFrom(feature)
  return example.SerializeToString()


def decode_example(serialized: bytes) -> Dict[str, List[Any]]:
  """Every feature's values as a list (bytes decoded to str)."""
  decoded: Dict[str, List[Any]] = {}
  for name, feature in tf.train.Example.FromString(serialized).features.feature.items():
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value) if kind else []
    decoded[name] = [v.decode() if isinstance(v, bytes) else v for v in values]
  return decoded


def first(decoded: Mapping[str, List[Any]], name: str, default: Any) -> Any:
  """The first value of a scalar feature, or `default` when it is absent."""
  return (decoded.get(name) or [default])[0]
