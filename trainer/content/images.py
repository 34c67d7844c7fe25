"""An item's image: where its `image_uri` points, its bytes, and why a file is not an image.

`image_uri` is a local path or any URI tf.io.gfile reads (gs://...); a relative path is read
under the data root, so a data root moves together with its images folder. A failure is a
message for the report, never an exception: one bad file must not stop a catalog's run.
"""
from __future__ import annotations

import os
import re
from typing import Tuple, Union

import tensorflow as tf

from trainer.encoders.image_preprocessing import has_image_signature, preprocess_one


def resolve_image_uri(data_root: str, image_uri: str) -> str:
  if "://" in image_uri or os.path.isabs(image_uri):
    return image_uri
  return f"{data_root.rstrip('/')}/{image_uri}"


# TF's eager wrapper around an op's message: "{{function_node ...}} " and " [Op:DecodeImage] ...".
_EAGER_WRAPPER = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$")


def _first_line(error: Exception) -> str:
  lines = (getattr(error, "message", None) or str(error)).strip().splitlines() or [""]
  return f"{type(error).__name__}: {_EAGER_WRAPPER.sub('', lines[0])}"


def read_image(uri: str) -> Tuple[bool, Union[bytes, str]]:
  """(True, the file's bytes) or (False, why it could not be read)."""
  try:
    with tf.io.gfile.GFile(uri, "rb") as f:
      return True, f.read()
  except (tf.errors.OpError, OSError) as error:
    return False, f"unreadable: {_first_line(error)}"


def decode_error(image_bytes: bytes) -> str:
  """Why bytes the batched preprocessing marked invalid are not an image (decoded once more,
  alone, for the message: rare, so the batch path stays fast)."""
  data = tf.constant(image_bytes)
  if not bool(has_image_signature(data)):
    return "not an image: no JPEG, PNG, GIF or BMP signature"
  try:
    preprocess_one(data)
  except (tf.errors.OpError, ValueError) as error:
    return f"does not decode: {_first_line(error)}"
  return "does not decode"
