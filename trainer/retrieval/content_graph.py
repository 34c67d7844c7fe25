"""The candidate tower's content features inside the served graph, from raw item content.

An item the model was exported with (every catalog item the ContentEmbedder embedded) gets the
vectors it was trained or placed with, looked up by item id. Any other item (one added to the
catalog after the run) is embedded by the frozen encoders inside the graph: its item text
(title. categories. year. description, as `trainer/cross_encoder/texts.py` builds it) by the
sentence encoder, its `image_bytes` (empty: no image) by the image encoder. Only the rows that
need an encoder go through it, so embedding known items costs a lookup.

The encoders are the SavedModels `trainer/encoders/export.py` writes (Keras' ExportArchive),
loaded back and held by this module, so the retrieval SavedModel holds plain variables that
TF Serving's loader restores (keras-team/keras#20095) and stock ops plus TF Text's tokenizer.
"""
from __future__ import annotations

import os
import tempfile
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer.content.records import HAS_IMAGE, HAS_TEXT, IMAGE_EMBEDDING, TEXT_EMBEDDING
from trainer.retrieval.content import HAS_ID
from trainer.retrieval.signature import IMAGE_BYTES
from transform import features as F


def item_texts(title: tf.Tensor, categories: tf.Tensor, year: tf.Tensor,
               description: tf.Tensor) -> tf.Tensor:
  """`texts.item_text` in TF ops: [B] title, [B, C] categories ("" padded), [B] year (0 =
  unknown), [B] description -> [B] "Title. Cat1, Cat2. Year. Description"."""
  joined_categories = tf.strings.reduce_join(
      tf.ragged.boolean_mask(categories, tf.not_equal(categories, "")), axis=1, separator=", ")
  year_text = tf.where(year > 0, tf.strings.as_string(year), "")
  parts = tf.stack([title, joined_categories, year_text, description], axis=1)
  return tf.strings.reduce_join(tf.ragged.boolean_mask(parts, tf.not_equal(parts, "")),
                                axis=1, separator=". ")


def _scatter(rows: tf.Tensor, values: tf.Tensor, base: tf.Tensor) -> tf.Tensor:
  """`base` with `values` written at `rows` ([n, 1] indices)."""
  return tf.tensor_scatter_nd_update(base, rows, values)


class ContentGraph(tf.Module):
  """Known items' vectors by id; encoders (optional: fold models are only read by the ranker
  stage, for catalog items) for the rest."""

  def __init__(self, item_ids: Sequence[str], vectors: Mapping[str, np.ndarray],
               warm_items: Sequence[str], encoders_dir: Optional[str] = None):
    super().__init__()
    keys = tf.constant(list(item_ids), tf.string)
    self._row = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, tf.range(len(item_ids), dtype=tf.int64)), -1)
    self._warm = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(warm_items), tf.string),
                                            tf.ones([len(warm_items)], tf.int64)), 0)
    # Variables, not constants: a large catalog's vectors stay out of the GraphDef (2 GB cap).
    self._vectors = {name: tf.Variable(values, trainable=False, name=name)
                     for name, values in vectors.items()}
    self.text_dim = int(vectors[TEXT_EMBEDDING].shape[1])
    self.image_dim = int(vectors[IMAGE_EMBEDDING].shape[1])
    self.text_encoder = self.image_encoder = None
    if encoders_dir is not None:
      self.text_encoder = tf.saved_model.load(os.path.join(encoders_dir, "text"))
      self.image_encoder = tf.saved_model.load(os.path.join(encoders_dir, "image"))

  def features(self, request: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """The tower's CONTENT_FEATURES for the request's items (ITEM_SPEC inputs)."""
    item_ids = request[F.ITEM_ID]
    row = self._row.lookup(item_ids)
    known = row >= 0
    gathered = {name: tf.gather(values, tf.maximum(row, 0)) * tf.reshape(
        tf.cast(known, tf.float32), [-1] + [1] * (len(values.shape) - 1))
                for name, values in self._vectors.items()}
    out = dict(gathered)
    out[HAS_ID] = tf.cast(self._warm.lookup(item_ids), tf.float32)
    if self.text_encoder is None:
      return out
    unknown = tf.where(tf.logical_not(known))  # [n, 1]
    texts = tf.gather_nd(item_texts(request[F.TITLE], request[F.CATEGORIES], request[F.YEAR],
                                    request[F.DESCRIPTION]), unknown)
    images = tf.gather_nd(request[IMAGE_BYTES], unknown)
    # A batch of known items skips the encoders (the image network rejects an empty batch).
    any_unknown = tf.size(texts) > 0
    text_vectors = tf.cond(any_unknown, lambda: self.text_encoder.serve(texts)["embedding"],
                           lambda: tf.zeros([0, self.text_dim]))
    image_vectors, valid = tf.cond(
        any_unknown, lambda: self._encode_images(images),
        lambda: (tf.zeros([0, self.image_dim]), tf.zeros([0], tf.float32)))
    has_text = tf.cast(tf.strings.length(tf.strings.strip(texts)) > 0, tf.float32)
    out[TEXT_EMBEDDING] = _scatter(unknown, text_vectors * has_text[:, None],
                                   out[TEXT_EMBEDDING])
    out[HAS_TEXT] = _scatter(unknown, has_text, out[HAS_TEXT])
    out[IMAGE_EMBEDDING] = _scatter(unknown, image_vectors, out[IMAGE_EMBEDDING])
    out[HAS_IMAGE] = _scatter(unknown, valid, out[HAS_IMAGE])
    return out

  def _encode_images(self, images: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    out = self.image_encoder.serve(images)
    return out["embedding"], tf.cast(out["valid"], tf.float32)


def export_encoders(target_dir: Optional[str] = None) -> str:
  """The pretrained text and image encoders as SavedModels under one folder (`text`, `image`),
  for `ContentGraph` to load; a temporary folder unless one is given."""
  from trainer.encoders.efficientnet_checkpoint import load_image_encoder  # Keras 3: lazily
  from trainer.encoders.export import export_image_encoder, export_sentence_encoder
  from trainer.encoders.sentence_encoder import load_sentence_encoder
  folder = target_dir or tempfile.mkdtemp(prefix="content-encoders-")
  export_sentence_encoder(load_sentence_encoder(), os.path.join(folder, "text"))
  export_image_encoder(load_image_encoder(), os.path.join(folder, "image"))
  return folder
