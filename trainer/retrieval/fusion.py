"""Gated fusion of an item's modalities for the candidate tower: id, metadata, text, image.

Each content vector (frozen encoders' output, `trainer/content/`) is projected to `dim`; a gate
per modality, computed from everything the item has, scales the id, text and image parts before
the tower's head. A modality the item lacks is masked out (its part and its gate are zero) and
its flag is an input of the head, so "no image" is never read as "an all-black image". In
training the id is hidden from `id_dropout` of the items and each content modality from
`modality_dropout`: the head learns to place an item from its content alone, which is all a
new item has. Metadata (title tokens, categories, year) is always present.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from trainer.content.records import HAS_IMAGE, HAS_TEXT, IMAGE_EMBEDDING, TEXT_EMBEDDING
from trainer.retrieval.content import HAS_ID

# The gated modalities, in the order of the gates.
GATED = ("id", "text", "image")


class ContentFusion(tf.keras.layers.Layer):
  """(id vector, metadata vector, content inputs) -> (fused features, has_id [B, 1])."""

  def __init__(self, dim: int, id_dropout: float, modality_dropout: float,
               modalities: Sequence[str] = ("text", "image"), **kwargs):
    super().__init__(**kwargs)
    unknown = set(modalities) - set(GATED[1:])
    if unknown:
      raise ValueError(f"content_modalities {sorted(unknown)}: the tower reads {GATED[1:]}")
    self._read = {"id": True, "text": "text" in modalities, "image": "image" in modalities}
    self._text = tf.keras.layers.Dense(dim, name="text_projection")
    self._image = tf.keras.layers.Dense(dim, name="image_projection")
    self._gates = tf.keras.layers.Dense(len(GATED), activation="sigmoid", name="gates")
    self._dropout = {"id": id_dropout, "text": modality_dropout, "image": modality_dropout}

  def _mask(self, flag: tf.Tensor, modality: str, training: Optional[bool]) -> tf.Tensor:
    """[B, 1] float: the item has the modality, the tower reads it, and training does not hide
    it."""
    mask = tf.reshape(tf.cast(flag, tf.float32), [-1, 1]) * float(self._read[modality])
    if training and self._dropout[modality]:
      mask *= tf.cast(tf.random.uniform(tf.shape(mask)) >= self._dropout[modality], tf.float32)
    return mask

  def call(self, ids: tf.Tensor, metadata: tf.Tensor, inputs: Mapping[str, tf.Tensor],
           training: Optional[bool] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    masks = {"id": self._mask(inputs[HAS_ID], "id", training),
             "text": self._mask(inputs[HAS_TEXT], "text", training),
             "image": self._mask(inputs[HAS_IMAGE], "image", training)}
    parts = {"id": ids * masks["id"],
             "text": self._text(inputs[TEXT_EMBEDDING]) * masks["text"],
             "image": self._image(inputs[IMAGE_EMBEDDING]) * masks["image"]}
    flags = tf.concat([masks[m] for m in GATED], axis=1)
    gates = self._gates(tf.concat([parts[m] for m in GATED] + [metadata, flags], axis=1))
    gated = [parts[m] * gates[:, i:i + 1] for i, m in enumerate(GATED)]
    return tf.concat(gated + [metadata, flags], axis=1), masks["id"]
