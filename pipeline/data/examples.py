"""The ExampleGen's examples: their splits, and tf.Example <-> Python dicts, how the ExampleGen
writes them and how plain-Python readers (the cross-encoder's miner, the bandit's simulated log,
the popularity count) read them back.

None and "" are absent features (the schema's "missing"); an empty list stays an empty list
feature, so a row with no history still has the feature.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import tensorflow as tf

# The splits of the examples: the latest interactions of each user are `eval` (see
# pipeline/components/interaction_example_gen.py), the rest `train`.
TRAIN = "train"
EVAL = "eval"
SPLITS = (TRAIN, EVAL)


def _feature(value: Any) -> Optional[tf.train.Feature]:
  """A tf.train.Feature for one value or list of values; None when the value is absent."""
  values = value if isinstance(value, list) else [value]
  values = [v for v in values if v is not None and v != ""]
  if isinstance(value, list) and not values:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[]))
  if not values:
    return None
  if isinstance(values[0], str):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))
  if isinstance(values[0], float):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def encode_example(fields: Mapping[str, Any]) -> bytes:
  """Serializes a dict of feature values (str, int, float or lists of one of them)."""
  example = tf.train.Example()
  for name, value in fields.items():
    feature = _feature(value)
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
