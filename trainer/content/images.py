"""Why bytes are not an image, for the content report (reading an `image_uri` is the data
contract's: `pipeline/data/images.py`)."""
from __future__ import annotations

import tensorflow as tf

from pipeline.data.images import first_line
from trainer.encoders.image_preprocessing import has_image_signature, preprocess_one


def decode_error(image_bytes: bytes) -> str:
  """Why bytes the batched preprocessing marked invalid are not an image (decoded once more,
  alone, for the message: rare, so the batch path stays fast)."""
  data = tf.constant(image_bytes)
  if not bool(has_image_signature(data)):
    return "not an image: no JPEG, PNG, GIF or BMP signature"
  try:
    preprocess_one(data)
  except (tf.errors.OpError, ValueError) as error:
    return f"does not decode: {first_line(error)}"
  return "does not decode"
