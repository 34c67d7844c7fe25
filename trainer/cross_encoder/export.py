"""The cross-encoder SavedModel: raw strings in, tokenization inside the graph, scores out.

Signatures (what serving/cascade.py calls, and what TFMA runs):
  serving_default  query [B] string, item_text [B] string -> scores [B] float32 (one row per
                   (query, candidate) pair; higher = more relevant)
  rerank           query [B] string, item_texts [B, D] string -> scores [B, D] float32, with D
                   static: the depth the model was evaluated (and blessed) at, which the cascade
                   reads from the signature. Empty texts are padding: not scored, PADDING_SCORE.
  evaluation       serialized query-group tf.Examples [B] -> scores [B, G] (padded with
                   groups.PADDING_SCORE past a group's last candidate)

A float32 model pads pairs to the batch's longest (rounded up to a multiple of 8), not to the
preprocessor's sequence length: the same scores, at the cost of the texts' real length.

Tokenization is keras-hub's BertTokenizer, i.e. TF Text ops (FastWordpieceTokenizer, regex
split, case folding, NFD normalisation), which stock TF Serving links in; load the model with
`import tensorflow_text` first anywhere else.
"""
from __future__ import annotations

from typing import Dict

import keras_hub
import tensorflow as tf

from trainer.cross_encoder import groups as G
from trainer.cross_encoder.model import pair_logits, tokenize_pairs, trim_padding

SCORES = "scores"


class CrossEncoderModule(tf.Module):
  """The keras-hub Task (backbone, preprocessor, head) behind the three signatures above."""

  def __init__(self, cross_encoder: keras_hub.models.BertTextClassifier, rerank_depth: int):
    super().__init__()
    self.cross_encoder = cross_encoder
    self.rerank_depth = rerank_depth

  def _score_pairs(self, queries: tf.Tensor, item_texts: tf.Tensor) -> tf.Tensor:
    """A float32 model's pairs are padded to the batch's longest, not the preprocessor's
    length (`trim_padding`)."""
    tokens = tokenize_pairs(self.cross_encoder.preprocessor, queries, item_texts)
    if self.cross_encoder.compute_dtype == "float32":
      tokens = trim_padding(tokens)
    return pair_logits(self.cross_encoder, tokens)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="query"),
                                tf.TensorSpec([None], tf.string, name="item_text")])
  def serve(self, query: tf.Tensor, item_text: tf.Tensor) -> Dict[str, tf.Tensor]:
    return {SCORES: self._score_pairs(query, item_text)}

  def rerank(self, query: tf.Tensor, item_texts: tf.Tensor) -> Dict[str, tf.Tensor]:
    queries = tf.repeat(query, tf.shape(item_texts)[1])
    texts = tf.reshape(item_texts, [-1])
    real = tf.where(texts != "")
    scores = tf.scatter_nd(real, self._score_pairs(tf.gather_nd(queries, real),
                                                   tf.gather_nd(texts, real)),
                           tf.shape(texts, out_type=tf.int64))
    padded = tf.where(texts != "", scores, G.PADDING_SCORE)
    return {SCORES: tf.reshape(padded, tf.shape(item_texts))}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def evaluate(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
    groups = G.parse_groups(examples)
    texts = groups[G.ITEM_TEXTS]
    queries = tf.repeat(groups[G.QUERY], texts.row_lengths())
    scores = texts.with_flat_values(self._score_pairs(queries, texts.flat_values))
    return {SCORES: scores.to_tensor(default_value=G.PADDING_SCORE)}

  def signatures(self) -> Dict[str, tf.types.experimental.ConcreteFunction]:
    rerank = tf.function(self.rerank).get_concrete_function(
        tf.TensorSpec([None], tf.string, name="query"),
        tf.TensorSpec([None, self.rerank_depth], tf.string, name="item_texts"))
    return {"serving_default": self.serve, "rerank": rerank, "evaluation": self.evaluate}


def export_cross_encoder(module: CrossEncoderModule, export_dir: str) -> None:
  """Writes the SavedModel with the three signatures."""
  tf.saved_model.save(module, export_dir, signatures=module.signatures())
