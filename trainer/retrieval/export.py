"""The retrieval SavedModel: raw features in, the transform graph inside, no ScaNN ops.

Signatures (all take raw features; "" and 0 mean "unknown" for optional ones; the input specs and
the callers' request builder are in `signature.py`):
  serving_default  user_id, history[?], age, gender, occupation -> item_ids[K], scores[K],
                   embedding (items in `history` are excluded from the answer; the query's
                   embedding comes along, so a caller that needs it, the cascade's bandit
                   stage, makes one call per request)
  query_embedding  the same inputs -> embedding
  item_embeddings  item_id, title, categories[?], year, description, image_bytes -> embedding
                   (for an external index, or to add a new item: a multimodal model embeds
                   the content of an item it does not know with its encoders, `content_graph`)
  known_items      item_id -> known (the item is among the candidates serving_default returns);
                   multimodal models only (`serving/fresh_items.py` indexes the rest)
  evaluation       serialized tf.Examples -> item_ids[K], scores[K] (what TFMA runs)
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from trainer.retrieval.content_graph import ContentGraph
from trainer.retrieval.signature import EMBEDDING, ITEM_SPEC, KNOWN, KNOWN_SPEC, QUERY_SPEC
from trainer.retrieval.top_k import ExcludingTopK
from transform import features as F


def complete_raw_features(partial: Mapping[str, tf.Tensor], raw_feature_spec: Mapping[str, object],
                          batch_size: tf.Tensor) -> Dict[str, object]:
  """Every raw feature the transform graph takes, from dense request tensors.

  Request tensors are dense ("" / 0 = unknown); optional (VarLen) features become sparse with
  those values dropped. Features a signature does not take are filled with empty values: the
  transform computes them, and the signature ignores what they feed.
  """
  raw = {}
  for name, spec in raw_feature_spec.items():
    if isinstance(spec, tf.io.VarLenFeature):
      value = partial.get(name)
      if value is None:
        raw[name] = tf.SparseTensor(tf.zeros([0, 2], tf.int64), tf.zeros([0], spec.dtype),
                                    tf.stack([tf.cast(batch_size, tf.int64), 0]))
      else:
        raw[name] = tf.sparse.from_dense(tf.reshape(tf.cast(value, spec.dtype), [batch_size, -1]))
    else:
      shape = [batch_size] + list(spec.shape)
      value = partial.get(name)
      if value is None:
        value = tf.zeros(shape, spec.dtype) if spec.dtype != tf.string else tf.fill(shape, "")
      raw[name] = tf.reshape(tf.cast(value, spec.dtype), shape)
  return raw


class RetrievalModule(tf.Module):
  """Towers + transform layer + brute-force top-K over the catalog's embeddings; `content`
  for a multimodal candidate tower (`item_features` then hold its content features too)."""

  def __init__(self, query_tower: tf.keras.Model, candidate_tower: tf.keras.Model,
               tft_layer: tf.keras.layers.Layer, raw_feature_spec: Mapping[str, object],
               item_ids: Sequence[str], item_features: Mapping[str, np.ndarray], top_k: int,
               content: Optional[ContentGraph] = None):
    super().__init__()
    self.query_tower = query_tower
    self.candidate_tower = candidate_tower
    self.tft_layer = tft_layer
    self.content = content
    self._raw_feature_spec = dict(raw_feature_spec)
    self.candidate_embeddings = tf.constant(candidate_tower(dict(item_features)))
    self.top_k = ExcludingTopK(item_ids, top_k)

  def _transform(self, partial: Mapping[str, tf.Tensor], batch_size: tf.Tensor
                 ) -> Dict[str, tf.Tensor]:
    return self.tft_layer(complete_raw_features(partial, self._raw_feature_spec, batch_size))

  def _embed_query(self, request: Mapping[str, tf.Tensor]) -> tf.Tensor:
    transformed = self._transform(request, tf.shape(request[F.USER_ID])[0])
    return self.query_tower({name: transformed[name] for name in F.QUERY_FEATURES})

  def _top_k_excluding(self, queries: tf.Tensor, exclusions: tf.Tensor) -> Dict[str, tf.Tensor]:
    return self.top_k(tf.matmul(queries, self.candidate_embeddings, transpose_b=True), exclusions)

  def recommend(self, request: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    queries = self._embed_query(request)
    return {**self._top_k_excluding(queries, request[F.HISTORY]), EMBEDDING: queries}

  def query_embedding(self, request: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    return {EMBEDDING: self._embed_query(request)}

  def item_embeddings(self, request: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    transformed = self._transform(request, tf.shape(request[F.ITEM_ID])[0])
    features = {name: transformed[name] for name in F.CANDIDATE_FEATURES}
    if self.content is not None:
      features.update(self.content.features(request))
    return {EMBEDDING: self.candidate_tower(features)}

  def known_items(self, request: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    return {KNOWN: self.top_k.positions.lookup(request[F.ITEM_ID]) >= 0}

  def evaluate(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
    raw = tf.io.parse_example(examples, self._raw_feature_spec)
    transformed = self.tft_layer(raw)
    queries = self.query_tower({name: transformed[name] for name in F.QUERY_FEATURES})
    return self._top_k_excluding(queries, tf.sparse.to_dense(raw[F.HISTORY], default_value=""))

  def signatures(self) -> Dict[str, tf.types.experimental.ConcreteFunction]:
    query, item = QUERY_SPEC, ITEM_SPEC
    examples = tf.TensorSpec([None], tf.string, name="examples")
    signatures = {
        "serving_default": tf.function(
            lambda **r: self.recommend(r)).get_concrete_function(**query),
        "query_embedding": tf.function(
            lambda **r: self.query_embedding(r)).get_concrete_function(**query),
        "item_embeddings": tf.function(
            lambda **r: self.item_embeddings(r)).get_concrete_function(**item),
        "evaluation": tf.function(self.evaluate).get_concrete_function(examples),
    }
    if self.content is not None:  # only a model that can place an unseen item says which it knows
      signatures["known_items"] = tf.function(
          lambda **r: self.known_items(r)).get_concrete_function(**KNOWN_SPEC)
    return signatures


def export_retrieval_model(module: RetrievalModule, export_dir: str) -> None:
  """Writes the SavedModel with every signature above."""
  tf.saved_model.save(module, export_dir, signatures=module.signatures())
