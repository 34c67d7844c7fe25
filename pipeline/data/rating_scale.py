"""The rating scale: read from a schema, or set by configuration (`--rating_scale MIN,MAX`).

Retrieval does not learn from the rating value, but TFDV validates it against the schema's
`float_domain`, so a log on another documented scale (MovieLens' current logs: 0.5 to 5 in half
stars) would halt the run. The curated schema states 0.5-5; a configured scale is written into
a copy of the schema the run validates against (a file named by its content, so an unchanged
configuration stays a cache hit).
"""
from __future__ import annotations

import hashlib
import os
from typing import Optional, Tuple

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from pipeline.data.contract import RATING_COLUMN, format_scale

def _load(schema_path: str) -> schema_pb2.Schema:
  with tf.io.gfile.GFile(schema_path) as f:
    return text_format.Parse(f.read(), schema_pb2.Schema())


def _rating_feature(schema: schema_pb2.Schema) -> Optional[schema_pb2.Feature]:
  return next((feature for feature in schema.feature if feature.name == RATING_COLUMN), None)


def schema_rating_scale(schema_path: str) -> Optional[Tuple[float, float]]:
  """The schema's rating domain, None if it has none."""
  feature = _rating_feature(_load(schema_path))
  if feature is None or not feature.HasField("float_domain"):
    return None
  return feature.float_domain.min, feature.float_domain.max


def schema_with_rating_scale(schema_path: str, scale: Optional[Tuple[float, float]],
                             out_dir: str) -> str:
  """The schema to validate against: `schema_path` itself, or (when `scale` differs from its
  rating domain) a copy with that domain, written under `out_dir`."""
  if scale is None or schema_rating_scale(schema_path) == tuple(scale):
    return schema_path
  schema = _load(schema_path)
  feature = _rating_feature(schema)
  if feature is None:
    raise ValueError(f"{schema_path} has no '{RATING_COLUMN}' feature to set the rating scale "
                     f"{format_scale(scale)} on")
  feature.float_domain.min, feature.float_domain.max = scale
  text = text_format.MessageToString(schema)
  path = os.path.join(out_dir, f"schema-{hashlib.sha256(text.encode()).hexdigest()[:16]}.pbtxt")
  if not tf.io.gfile.exists(path):
    tf.io.gfile.makedirs(out_dir)
    with tf.io.gfile.GFile(path, "w") as f:
      f.write(text)
  return path
