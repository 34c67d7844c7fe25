"""Where a catalog row's `image_uri` points, and its bytes: the contract's rule for images.

`image_uri` is a local path or any URI tf.io.gfile reads (gs://...); a relative path is read
under the data root, so a data root moves together with its images folder. A failure is a
message for a report, never an exception: one bad file must not stop a catalog's run or a
server's refresh. (Decoding is the encoders' business: `trainer/content/images.py`.)
"""
from __future__ import annotations

import os
import re
from typing import Tuple, Union

import tensorflow as tf


def resolve_image_uri(data_root: str, image_uri: str) -> str:
  if "://" in image_uri or os.path.isabs(image_uri):
    return image_uri
  return f"{data_root.rstrip('/')}/{image_uri}"


# TF's eager wrapper around an op's message: "{{function_node ...}} " and " [Op:DecodeImage] ...".
_EAGER_WRAPPER = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$")


def first_line(error: Exception) -> str:
  """An error as one short line, TF's eager decorations removed."""
  lines = (getattr(error, "message", None) or str(error)).strip().splitlines() or [""]
  return f"{type(error).__name__}: {_EAGER_WRAPPER.sub('', lines[0])}"


def read_image(uri: str) -> Tuple[bool, Union[bytes, str]]:
  """(True, the file's bytes) or (False, why it could not be read)."""
  try:
    with tf.io.gfile.GFile(uri, "rb") as f:
      return True, f.read()
  except (tf.errors.OpError, OSError) as error:
    return False, f"unreadable: {first_line(error)}"
