"""Image bytes -> the EfficientNet-Lite input, in the graph, from stock TF image ops.

The recipe is the one the checkpoint was evaluated with (efficientnet_lite_builder and its
preprocessing): centre crop of 224/256 of the shorter side, bicubic resize to 224, then
(x - 127) / 128 (not 127.5). JPEGs are decoded with the accurate IDCT, as libjpeg and PIL do by
default; TF's own default (INTEGER_FAST) is up to ~11 grey levels off. PNG, GIF (first frame)
and BMP decode too; greyscale becomes 3 channels.
"""
from __future__ import annotations

from typing import Tuple

import tensorflow as tf

from trainer.encoders.efficientnet_checkpoint import IMAGE_SIZE

CROP_PADDING = 32  # the crop keeps IMAGE_SIZE / (IMAGE_SIZE + CROP_PADDING) of the shorter side
MEAN_RGB = 127.0
STDDEV_RGB = 128.0
JPEG_DCT_METHOD = "INTEGER_ACCURATE"
_PIXELS = tf.TensorSpec([IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)


def preprocess_one(image_bytes: tf.Tensor) -> tf.Tensor:
  """One encoded image (scalar string) -> float32 [224, 224, 3]; bad bytes raise."""
  image = tf.cond(
      tf.io.is_jpeg(image_bytes),
      lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method=JPEG_DCT_METHOD),
      lambda: tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8,
                                 expand_animations=False))
  image = tf.ensure_shape(image, [None, None, 3])
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  fraction = IMAGE_SIZE / (IMAGE_SIZE + CROP_PADDING)
  crop = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
  crop = tf.maximum(crop, 1)  # a 1-pixel image would otherwise crop to nothing
  top, left = (height - crop + 1) // 2, (width - crop + 1) // 2
  image = image[top:top + crop, left:left + crop]
  image = tf.image.resize(image, [IMAGE_SIZE, IMAGE_SIZE], method="bicubic")  # unclipped
  return (image - MEAN_RGB) / STDDEV_RGB


def preprocess_images(images: tf.Tensor) -> tf.Tensor:
  """string [B] -> float32 [B, 224, 224, 3]. Strict: one bad image fails the batch."""
  return tf.map_fn(preprocess_one, images, fn_output_signature=_PIXELS)


def has_image_signature(image_bytes: tf.Tensor) -> tf.Tensor:
  """Scalar bool: starts like a JPEG, PNG, GIF or BMP (never raises, whatever the bytes)."""
  head = lambda n: tf.strings.substr(image_bytes, 0, n)  # noqa: E731  (clipped when shorter)
  return tf.reduce_any(tf.stack([
      tf.equal(head(3), b"\xff\xd8\xff"), tf.equal(head(8), b"\x89PNG\r\n\x1a\n"),
      tf.equal(head(6), b"GIF87a"), tf.equal(head(6), b"GIF89a"), tf.equal(head(2), b"BM")]))


def preprocess_images_with_mask(images: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """string [B] -> (float32 [B, 224, 224, 3], bool valid [B]): a bad image becomes zeros and
  valid False, and the rest of the batch is served.

  Two stock-op layers: the signature check drops non-images without decoding them, and tf.data's
  `ignore_errors` drops images whose header is fine but whose body does not decode (truncated
  files, CRC errors, a BMP of the wrong size), which no byte check can predict.
  """
  n = tf.shape(images)[0]
  sentinel = tf.data.Dataset.from_tensors((n, tf.zeros(_PIXELS.shape, tf.float32)))
  dataset = (tf.data.Dataset.from_tensor_slices((tf.range(n), images))
             .filter(lambda i, b: has_image_signature(b))
             .map(lambda i, b: (i, preprocess_one(b)), num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=False)
             .ignore_errors()
             .concatenate(sentinel)  # row n, sliced off below: the batch is never empty
             .batch(tf.cast(n + 1, tf.int64)))
  rows, pixels = dataset.get_single_element()
  pixels = tf.scatter_nd(rows[:, None], pixels, tf.stack([n + 1, IMAGE_SIZE, IMAGE_SIZE, 3]))
  valid = tf.scatter_nd(rows[:, None], tf.ones_like(rows), [n + 1]) > 0
  return pixels[:n], valid[:n]
