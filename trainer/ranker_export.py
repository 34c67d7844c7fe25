"""The ranker SavedModel: raw strings in, tokenization inside the graph, scores out.

Signatures (what serving/cascade.py calls, and what TFMA runs):
  serving_default  query [B] string, item_text [B] string -> scores [B] float32 (one row per
                   (query, candidate) pair; higher = more relevant)
  evaluation       serialized query-group tf.Examples [B] -> scores [B, G] (padded with
                   ranker_examples.PADDING_SCORE past a group's last candidate)

Tokenization is keras-hub's BertTokenizer, i.e. TF Text ops (FastWordpieceTokenizer, regex
split, case folding, NFD normalisation), which stock TF Serving links in; load the model with
`import tensorflow_text` first anywhere else.
"""
from __future__ import annotations

from typing import Dict

import keras
import keras_hub
import tensorflow as tf

from trainer import ranker_examples as E
from trainer.ranker_model import tokenize_pairs


class RankerModule(tf.Module):
  """The pair scorer and its preprocessor, with the two signatures above."""

  def __init__(self, scorer: keras.Model,
               preprocessor: keras_hub.models.BertTextClassifierPreprocessor):
    super().__init__()
    self.scorer = scorer
    self.preprocessor = preprocessor

  def _score_pairs(self, queries: tf.Tensor, item_texts: tf.Tensor) -> tf.Tensor:
    logits = self.scorer(tokenize_pairs(self.preprocessor, queries, item_texts), training=False)
    return tf.cast(tf.reshape(logits, [-1]), tf.float32)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="query"),
                                tf.TensorSpec([None], tf.string, name="item_text")])
  def serve(self, query: tf.Tensor, item_text: tf.Tensor) -> Dict[str, tf.Tensor]:
    return {"scores": self._score_pairs(query, item_text)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def evaluate(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
    groups = E.parse_groups(examples)
    texts = groups[E.ITEM_TEXTS]
    queries = tf.repeat(groups[E.QUERY], texts.row_lengths())
    scores = texts.with_flat_values(self._score_pairs(queries, texts.flat_values))
    return {"scores": scores.to_tensor(default_value=E.PADDING_SCORE)}


def export_ranker(module: RankerModule, export_dir: str) -> None:
  """Writes the SavedModel with both signatures."""
  tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve,
                                                      "evaluation": module.evaluate})
