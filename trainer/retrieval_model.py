"""The two-tower retrieval model (TensorFlow Recommenders, Keras 2 via TF_USE_LEGACY_KERAS=1).

Query tower: user id, profile and the mean of the recent-history item embeddings. Candidate
tower: item id, title tokens, categories and year. Both towers share the item-id embedding, so a
user with little history still lands near the items they touched. Trained with in-batch softmax,
corrected for the popularity bias of in-batch negatives (logQ correction).
"""
from __future__ import annotations

import dataclasses
from typing import Dict

import tensorflow as tf
import tensorflow_recommenders as tfrs

from transform import features as F


@dataclasses.dataclass(frozen=True)
class Vocabularies:
  """Sizes of the transform's vocabularies (OOV buckets included)."""
  users: int
  items: int
  genders: int
  occupations: int
  title_tokens: int


@dataclasses.dataclass(frozen=True)
class TowerConfig:
  embedding_dim: int = 64
  id_dim: int = 64
  hidden_units: int = 128
  temperature: float = 0.05
  logq_correction: bool = True


def _masked_mean(embedding: tf.keras.layers.Embedding, indices: tf.Tensor) -> tf.Tensor:
  """Mean of the embeddings of the non-negative indices in [batch, n]; zeros if there are none."""
  mask = tf.cast(indices >= 0, tf.float32)[..., tf.newaxis]
  vectors = embedding(tf.maximum(indices, 0)) * mask
  return tf.reduce_sum(vectors, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


class _Head(tf.keras.layers.Layer):
  """Features -> unit-norm embedding: a hidden ReLU layer and a linear projection."""

  def __init__(self, config: TowerConfig, **kwargs):
    super().__init__(**kwargs)
    self._hidden = tf.keras.layers.Dense(config.hidden_units, activation="relu")
    self._out = tf.keras.layers.Dense(config.embedding_dim)

  def call(self, x: tf.Tensor) -> tf.Tensor:
    return tf.math.l2_normalize(self._out(self._hidden(x)), axis=-1)


class QueryTower(tf.keras.Model):
  """Transformed user features -> query embedding."""

  def __init__(self, vocab: Vocabularies, item_embedding: tf.keras.layers.Embedding,
               config: TowerConfig):
    super().__init__()
    self.user_embedding = tf.keras.layers.Embedding(vocab.users, config.id_dim)
    self.gender_embedding = tf.keras.layers.Embedding(vocab.genders, 4)
    self.occupation_embedding = tf.keras.layers.Embedding(vocab.occupations, 8)
    self.item_embedding = item_embedding
    self.head = _Head(config)

  def call(self, inputs: Dict[str, tf.Tensor]) -> tf.Tensor:
    return self.head(tf.concat([
        self.user_embedding(inputs[F.USER_INDEX]),
        _masked_mean(self.item_embedding, inputs[F.HISTORY_INDEX]),
        self.gender_embedding(inputs[F.GENDER_INDEX]),
        self.occupation_embedding(inputs[F.OCCUPATION_INDEX]),
        tf.reshape(inputs[F.AGE_Z], [-1, 1]),
    ], axis=1))


class CandidateTower(tf.keras.Model):
  """Transformed item features -> candidate embedding."""

  def __init__(self, vocab: Vocabularies, item_embedding: tf.keras.layers.Embedding,
               config: TowerConfig):
    super().__init__()
    self.item_embedding = item_embedding
    self.token_embedding = tf.keras.layers.Embedding(vocab.title_tokens, 32)
    self.category_projection = tf.keras.layers.Dense(16, use_bias=False)
    self.year_embedding = tf.keras.layers.Embedding(F.YEAR_BUCKETS + 1, 8)
    self.head = _Head(config)

  def call(self, inputs: Dict[str, tf.Tensor]) -> tf.Tensor:
    return self.head(tf.concat([
        self.item_embedding(inputs[F.ITEM_INDEX]),
        _masked_mean(self.token_embedding, inputs[F.TITLE_TOKENS]),
        self.category_projection(inputs[F.CATEGORY_MULTI_HOT]),
        self.year_embedding(inputs[F.YEAR_BUCKET]),
        tf.reshape(inputs[F.YEAR_Z], [-1, 1]),
    ], axis=1))


class TwoTowerModel(tfrs.Model):
  """In-batch softmax retrieval with the logQ correction for in-batch negatives."""

  def __init__(self, vocab: Vocabularies, item_probabilities: tf.Tensor, config: TowerConfig):
    super().__init__()
    item_embedding = tf.keras.layers.Embedding(vocab.items, config.id_dim)
    self.query_tower = QueryTower(vocab, item_embedding, config)
    self.candidate_tower = CandidateTower(vocab, item_embedding, config)
    # P(item appears in a batch) per item index: the sampling probability logQ removes.
    self._item_probabilities = tf.constant(item_probabilities, tf.float32)
    self._config = config
    self.task = tfrs.tasks.Retrieval(temperature=config.temperature,
                                     remove_accidental_hits=True)

  def compute_loss(self, inputs: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
    queries = self.query_tower(inputs)
    candidates = self.candidate_tower(inputs)
    probabilities = None
    if self._config.logq_correction:
      probabilities = tf.gather(self._item_probabilities, inputs[F.ITEM_INDEX])
    return self.task(queries, candidates, candidate_sampling_probability=probabilities,
                     candidate_ids=inputs[F.ITEM_INDEX], compute_metrics=not training)
