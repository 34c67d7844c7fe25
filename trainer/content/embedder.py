"""Both frozen encoders over a batch of catalog rows: the text vector of every item, the image
vector of every item whose image reads and decodes, flags for what each item has.

The encoders run behind their serving functions (`trainer/encoders/export.py`), so a vector
here is the one the exported SavedModels serve for the same text or image bytes. The item text
is the one the rest of the project reads (`trainer/cross_encoder/texts.py`).
"""
from __future__ import annotations

import time
from typing import Any, List, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

from pipeline.data.images import read_image, resolve_image_uri
from trainer.content.images import decode_error
from trainer.content.records import ItemContent, catalog_fields
from trainer.content.report import MAX_LISTED_BAD_IMAGES, BadImage, ContentReport
from trainer.cross_encoder.texts import item_text
from trainer.encoders.efficientnet_checkpoint import EMBEDDING_DIM, load_image_encoder
from trainer.encoders.export import EMBEDDING, VALID, image_serving_fn, text_serving_fn
from trainer.encoders.sentence_encoder import load_sentence_encoder

_STRINGS = [tf.TensorSpec([None], tf.string)]


class ContentEncoders:
  """all-MiniLM-L6-v2 and EfficientNet-Lite0, loaded once (seconds), then called per batch."""

  def __init__(self):
    text_encoder = load_sentence_encoder()
    self.text_dim = text_encoder.backbone.hidden_dim
    self.image_dim = EMBEDDING_DIM
    # One graph each for every batch size (the text graph cuts to each batch's longest text).
    self._text = tf.function(text_serving_fn(text_encoder), input_signature=_STRINGS)
    self._image = tf.function(image_serving_fn(load_image_encoder()), input_signature=_STRINGS)
    # Traced now, so a batch's seconds in the report are the encoders' alone.
    self.embed_texts(["warm up"])
    self.embed_images([b""])

  def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
    return self._text(tf.constant(list(texts), tf.string))[EMBEDDING].numpy()

  def embed_images(self, images: Sequence[bytes]) -> Tuple[np.ndarray, np.ndarray]:
    """(embeddings [B, 1280], valid [B]); an invalid row is zeros."""
    out = self._image(tf.constant(list(images), tf.string))
    return out[EMBEDDING].numpy(), out[VALID].numpy()

  def embed(self, rows: Sequence[Mapping[str, Any]], data_root: str
            ) -> Tuple[List[ItemContent], ContentReport]:
    """Catalog rows (the contract's items columns) -> their contents and the batch's report."""
    report = ContentReport(items=len(rows))
    started = time.perf_counter()
    text_vectors, has_text = self._text_vectors(rows)
    report.text_seconds = time.perf_counter() - started
    started = time.perf_counter()
    image_vectors, has_image, bad = self._image_vectors(rows, data_root)
    report.image_seconds = time.perf_counter() - started
    report.with_text, report.with_image = int(has_text.sum()), int(has_image.sum())
    report.with_image_uri = sum(1 for row in rows if row.get("image_uri"))
    report.bad_images = len(bad)
    report.listed_bad_images = sorted(bad)[:MAX_LISTED_BAD_IMAGES]
    contents = [ItemContent(row["item_id"], text_vectors[i], image_vectors[i],
                            bool(has_text[i]), bool(has_image[i]), catalog_fields(row))
                for i, row in enumerate(rows)]
    return contents, report

  def _text_vectors(self, rows: Sequence[Mapping[str, Any]]) -> Tuple[np.ndarray, np.ndarray]:
    """Every row with a non-blank item text gets its vector; the rest zeros and False."""
    texts = [item_text(row) for row in rows]
    has_text = np.array([bool(text.strip()) for text in texts], bool)
    vectors = np.zeros((len(rows), self.text_dim), np.float32)
    if has_text.any():
      vectors[has_text] = self.embed_texts([t for t, h in zip(texts, has_text) if h])
    return vectors, has_text

  def _image_vectors(self, rows: Sequence[Mapping[str, Any]], data_root: str
                     ) -> Tuple[np.ndarray, np.ndarray, List[BadImage]]:
    """Rows whose image reads and decodes get its vector; an unreadable or undecodable one is
    a BadImage; rows without an image_uri are zeros and False, and not bad."""
    vectors = np.zeros((len(rows), self.image_dim), np.float32)
    has_image = np.zeros(len(rows), bool)
    readable: List[Tuple[int, str, bytes]] = []
    bad: List[BadImage] = []
    for position, row in enumerate(rows):
      if not row.get("image_uri"):
        continue
      uri = resolve_image_uri(data_root, row["image_uri"])
      ok, data = read_image(uri)
      if ok:
        readable.append((position, uri, data))
      else:
        bad.append(BadImage(row["item_id"], uri, data))
    if readable:
      embedded, valid = self.embed_images([data for _, _, data in readable])
      for (position, uri, data), vector, is_valid in zip(readable, embedded, valid):
        if is_valid:
          vectors[position], has_image[position] = vector, True
        else:
          bad.append(BadImage(rows[position]["item_id"], uri, decode_error(data)))
    return vectors, has_image, bad
