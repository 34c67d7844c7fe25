"""The cross-encoder: `[CLS] query [SEP] item text [SEP]` -> one relevance logit.

A keras-hub Task, as keras-hub composes one: a `BertBackbone` (pretrained weights ported by
`trainer/encoders/bert_checkpoint.py`), a `BertTextClassifierPreprocessor` (tokenization in TF
Text ops, in `tf.data` and inside the exported graph alike) and a one-unit classification head.
Swap the backbone or the preprocessor without touching the rest. Keras 3 (keras-hub) only:
nothing here may touch tf.keras (Keras 2), see STACK.md. Training sees candidate groups
[groups, candidates, tokens]; serving sees flat pairs [pairs, tokens].
"""
from __future__ import annotations

from typing import Callable, Dict

import keras
import keras_hub
import tensorflow as tf

PAIR_INPUTS = ("token_ids", "segment_ids", "padding_mask")
POINTWISE, LISTWISE = "pointwise", "listwise"
# Serving pads a batch's pairs to its longest, rounded up to a multiple of this (`trim_padding`).
LENGTH_BUCKET = 8


def pair_preprocessor(tokenizer: keras_hub.models.BertTokenizer, sequence_length: int
                      ) -> keras_hub.models.BertTextClassifierPreprocessor:
  """(query, item text) -> packed ids. Round-robin truncation keeps a short item text whole and
  cuts a long query (a user context of many titles) to what is left."""
  return keras_hub.models.BertTextClassifierPreprocessor(
      tokenizer, sequence_length=sequence_length, truncate="round_robin")


def build_cross_encoder(backbone: keras_hub.models.BertBackbone,
                        preprocessor: keras_hub.models.BertTextClassifierPreprocessor,
                        dropout: float) -> keras_hub.models.BertTextClassifier:
  """The Task: backbone + preprocessor + a single-logit head on the pooled [CLS] output."""
  return keras_hub.models.BertTextClassifier(backbone, num_classes=1, preprocessor=preprocessor,
                                             dropout=dropout)


def tokenize_pairs(preprocessor: keras_hub.models.BertTextClassifierPreprocessor,
                   queries: tf.Tensor, item_texts: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Flat string tensors [N] -> {token_ids, segment_ids, padding_mask} [N, sequence_length]."""
  packed = preprocessor((queries, item_texts))
  return {**packed, "padding_mask": tf.cast(packed["padding_mask"], tf.int32)}


def trim_padding(tokens: Dict[str, tf.Tensor], bucket: int = LENGTH_BUCKET
                 ) -> Dict[str, tf.Tensor]:
  """Packed pairs [N, L] -> the same pairs [N, L'], L' the batch's longest pair rounded up to
  `bucket` (at most L). Titles are short and a transformer's cost grows with the length, and
  with its padding mask BERT scores a pair the same at any padded length; the rounding keeps the
  number of distinct shapes small. For float32 models only: on CPU, bfloat16 kernels are fast at
  static shapes and about 7x slower at this dynamic one (benchmarks/cross_encoder_speed.py)."""
  longest = tf.maximum(tf.reduce_max(tf.reduce_sum(tokens["padding_mask"], axis=1)), 1)
  length = tf.minimum(tf.shape(tokens["token_ids"])[1], (longest + bucket - 1) // bucket * bucket)
  return {name: value[:, :length] for name, value in tokens.items()}


def pair_logits(cross_encoder: keras_hub.models.BertTextClassifier,
                tokens: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
  """Tokenized pairs [N, L] -> float32 logits [N] (float32 also when computing in bfloat16)."""
  logits = cross_encoder({name: tokens[name] for name in PAIR_INPUTS}, training=training)
  return keras.ops.cast(keras.ops.squeeze(logits, -1), "float32")


class GroupScorer(keras.Model):
  """Scores candidate groups: [B, G, L] token tensors -> [B, G] logits, through the Task's
  network, so that a listwise loss sees each query's candidates together."""

  def __init__(self, cross_encoder: keras_hub.models.BertTextClassifier, **kwargs):
    super().__init__(**kwargs)
    self.cross_encoder = cross_encoder

  def call(self, inputs: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
    shape = keras.ops.shape(inputs["token_ids"])
    flat = {name: keras.ops.reshape(inputs[name], (-1, shape[-1])) for name in PAIR_INPUTS}
    return keras.ops.reshape(pair_logits(self.cross_encoder, flat, training),
                             (shape[0], shape[1]))


def listwise_softmax_loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Softmax cross-entropy over each group, against the labels normalised to a distribution
  (several relevant candidates share the mass); a group with no relevant candidate adds 0."""
  labels = keras.ops.cast(labels, "float32")
  total = keras.ops.sum(labels, axis=-1, keepdims=True)
  target = keras.ops.divide_no_nan(labels, total)
  return -keras.ops.sum(target * keras.ops.log_softmax(logits, axis=-1), axis=-1)


def loss_function(name: str) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  """Pointwise binary cross-entropy (the default, y = M(x, q) per pair) or listwise softmax."""
  if name == POINTWISE:
    return keras.losses.BinaryCrossentropy(from_logits=True)
  if name == LISTWISE:
    return listwise_softmax_loss
  raise ValueError(f"unknown cross-encoder loss {name!r}: use {POINTWISE} or {LISTWISE}")
