"""The encoders' SavedModels: raw bytes or raw text in, embeddings out, stock TF ops only
(plus the TF Text ops of the tokenizer, which stock TF Serving links in).

Signatures (`serving_default`):
  image  image_bytes [B] string (JPEG, PNG, GIF, BMP) -> embedding [B, 1280] float32,
         logits [B, 1000] (ImageNet-1k), valid [B] bool (False: not an image or undecodable;
         its row is zeros, the rest of the batch is served)
  text   text [B] string -> embedding [B, 384] float32, unit length

Written with Keras' ExportArchive, i.e. `tf.saved_model.save` of a trackable whose
`tf.function` endpoint calls the model. A plain `tf.Module` holding a Keras 3 model saves
Keras' variable wrappers, which TF1-style loaders (the C++ one TF Serving uses) fail to restore
("Could not find variable", keras-team/keras#20095); ExportArchive saves the raw tf.Variables
the endpoint reads. Its `track()` is left out: it would save the wrappers as a second copy of
every weight, and it is only needed for lookup tables, which neither model has. Load the text
model with `import tensorflow_text` first outside TF Serving.
"""
from __future__ import annotations

from typing import Callable, Dict

import keras
import tensorflow as tf

from trainer.encoders.image_preprocessing import preprocess_images_with_mask
from trainer.encoders.sentence_encoder import SentenceEncoder

EMBEDDING = "embedding"
LOGITS = "logits"
VALID = "valid"
IMAGE_INPUT = "image_bytes"
TEXT_INPUT = "text"


def image_serving_fn(model: keras.Model) -> Callable[[tf.Tensor], Dict[str, tf.Tensor]]:
  """image bytes [B] -> {embedding, logits, valid}, as the SavedModel serves it."""

  def serve(image_bytes: tf.Tensor) -> Dict[str, tf.Tensor]:
    pixels, valid = preprocess_images_with_mask(image_bytes)
    out = model(pixels, training=False)
    keep = tf.cast(valid, tf.float32)[:, None]
    return {EMBEDDING: out["embedding"] * keep, LOGITS: out["logits"] * keep, VALID: valid}

  return serve


def text_serving_fn(encoder: SentenceEncoder) -> Callable[[tf.Tensor], Dict[str, tf.Tensor]]:
  """text [B] -> {embedding}, as the SavedModel serves it."""
  return lambda text: {EMBEDDING: encoder(text, training=False)}


def _write(serve: Callable, input_name: str, export_dir: str) -> None:
  archive = keras.export.ExportArchive()
  archive.add_endpoint("serve", serve,
                       input_signature=[tf.TensorSpec([None], tf.string, name=input_name)])
  archive.write_out(export_dir, verbose=False)  # the first endpoint is also serving_default


def export_image_encoder(model: keras.Model, export_dir: str) -> None:
  """The EfficientNet-Lite0 model (`efficientnet_checkpoint.load_image_encoder`) behind the
  image signature above."""
  _write(image_serving_fn(model), IMAGE_INPUT, export_dir)


def export_sentence_encoder(encoder: SentenceEncoder, export_dir: str) -> None:
  """The sentence encoder (`sentence_encoder.load_sentence_encoder`) behind the text signature."""
  _write(text_serving_fn(encoder), TEXT_INPUT, export_dir)
