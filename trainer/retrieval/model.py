"""The two-tower retrieval model (TensorFlow Recommenders, Keras 2 via TF_USE_LEGACY_KERAS=1).

Query tower: user id, profile and the mean of the recent-history item embeddings. Candidate
tower: item id, title tokens, categories and year, and with `content` on the item's text and
image vectors (`fusion.py`). Both towers share the item-id embedding, so a user with little
history still lands near the items they touched. Trained with a softmax over
uniformly sampled catalog negatives (the whole catalog when it is small), optionally mixed with
in-batch negatives corrected for their popularity bias (logQ correction): `task.py`.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from trainer.retrieval.fusion import ContentFusion
from trainer.retrieval.task import SampledCatalogRetrieval
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
  """Model settings; the defaults are the ones measured best on the pipeline's time-split eval
  (benchmarks/movielens_protocol.py and the pipeline's own RetrievalEvaluator)."""
  embedding_dim: int = 64
  id_dim: int = 64
  hidden_units: int = 128
  temperature: float = 0.15
  logq_correction: bool = True
  # Negatives: this many catalog items sampled uniformly per batch (the whole catalog when it is
  # smaller), plus, optionally, the batch's own items (logQ-corrected). Full-catalog softmax beat
  # in-batch softmax on the time-split eval (recall@100 0.399 vs 0.356, MovieLens-100K).
  catalog_negatives: int = 4096
  in_batch_negatives: bool = False
  dropout: float = 0.3
  id_l2: float = 0.0
  # False: the query ignores the history (a profile-only query).
  use_history: bool = True
  # A learned score per item added to every query's score (its popularity, which unit-norm
  # towers can only express through direction). Exported as one more dimension: the candidate
  # embedding ends with the bias, the query embedding with 1, so a dot product (TF Serving's
  # top-K or an external index) still gives the whole score.
  item_bias: bool = False
  # The multimodal candidate tower: the item's text and image vectors (the ContentEmbedder's)
  # fused with its id and metadata by per-modality gates. In training the id is hidden from
  # `id_dropout` of the items, text and image each from `modality_dropout`, so that an item
  # without interactions (no learned id) or without an image still lands where its kind is.
  content: bool = False
  # Which content modalities the tower reads (one off: an ablation, or a catalog whose images
  # say nothing of what its users want).
  content_modalities: Tuple[str, ...] = ("text", "image")
  content_dim: int = 64
  id_dropout: float = 0.3
  modality_dropout: float = 0.1


def _masked_mean(embedding: tf.keras.layers.Embedding, indices: tf.Tensor) -> tf.Tensor:
  """Mean of the embeddings of the non-negative indices in [batch, n]; zeros if there are none."""
  mask = tf.cast(indices >= 0, tf.float32)[..., tf.newaxis]
  vectors = embedding(tf.maximum(indices, 0)) * mask
  return tf.reduce_sum(vectors, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


class _Head(tf.keras.layers.Layer):
  """Features -> unit-norm embedding: dropout, a hidden ReLU layer and a linear projection."""

  def __init__(self, config: TowerConfig, **kwargs):
    super().__init__(**kwargs)
    self._dropout = tf.keras.layers.Dropout(config.dropout)
    self._hidden = tf.keras.layers.Dense(config.hidden_units, activation="relu")
    self._out = tf.keras.layers.Dense(config.embedding_dim)

  def call(self, x: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
    x = self._hidden(self._dropout(x, training=training))
    return tf.math.l2_normalize(self._out(x), axis=-1)


def _id_embedding(size: int, config: TowerConfig) -> tf.keras.layers.Embedding:
  regularizer = tf.keras.regularizers.l2(config.id_l2) if config.id_l2 else None
  return tf.keras.layers.Embedding(size, config.id_dim, embeddings_regularizer=regularizer)


class QueryTower(tf.keras.Model):
  """Transformed user features -> query embedding."""

  def __init__(self, vocab: Vocabularies, item_embedding: tf.keras.layers.Embedding,
               config: TowerConfig):
    super().__init__()
    self.user_embedding = _id_embedding(vocab.users, config)
    self.gender_embedding = tf.keras.layers.Embedding(vocab.genders, 4)
    self.occupation_embedding = tf.keras.layers.Embedding(vocab.occupations, 8)
    self.item_embedding = item_embedding
    self.head = _Head(config)
    self._use_history = config.use_history
    self._item_bias = config.item_bias

  def call(self, inputs: Dict[str, tf.Tensor], training: Optional[bool] = None) -> tf.Tensor:
    parts = [self.user_embedding(inputs[F.USER_INDEX])]
    if self._use_history:
      parts.append(_masked_mean(self.item_embedding, inputs[F.HISTORY_INDEX]))
    parts += [self.gender_embedding(inputs[F.GENDER_INDEX]),
              self.occupation_embedding(inputs[F.OCCUPATION_INDEX]),
              tf.reshape(inputs[F.AGE_Z], [-1, 1])]
    embedding = self.head(tf.concat(parts, axis=1), training=training)
    if self._item_bias:  # meets the candidate's bias in the dot product
      embedding = tf.concat([embedding, tf.ones_like(embedding[:, :1])], axis=1)
    return embedding


class CandidateTower(tf.keras.Model):
  """Transformed item features (and content features, `content.CONTENT_FEATURES`, when the
  config has `content`) -> candidate embedding."""

  def __init__(self, vocab: Vocabularies, item_embedding: tf.keras.layers.Embedding,
               config: TowerConfig):
    super().__init__()
    self.item_embedding = item_embedding
    self.token_embedding = tf.keras.layers.Embedding(vocab.title_tokens, 32)
    self.category_projection = tf.keras.layers.Dense(16, use_bias=False)
    self.year_embedding = tf.keras.layers.Embedding(F.YEAR_BUCKETS + 1, 8)
    self.fusion = ContentFusion(config.content_dim, config.id_dropout, config.modality_dropout,
                                config.content_modalities) if config.content else None
    self.head = _Head(config)
    self.item_bias = (tf.keras.layers.Embedding(vocab.items, 1, embeddings_initializer="zeros")
                      if config.item_bias else None)

  def call(self, inputs: Dict[str, tf.Tensor], training: Optional[bool] = None) -> tf.Tensor:
    ids = self.item_embedding(inputs[F.ITEM_INDEX])
    metadata = tf.concat([
        _masked_mean(self.token_embedding, inputs[F.TITLE_TOKENS]),
        self.category_projection(inputs[F.CATEGORY_MULTI_HOT]),
        self.year_embedding(inputs[F.YEAR_BUCKET]),
        tf.reshape(inputs[F.YEAR_Z], [-1, 1]),
    ], axis=1)
    if self.fusion is None:
      features, has_id = tf.concat([ids, metadata], axis=1), None
    else:
      features, has_id = self.fusion(ids, metadata, inputs, training=training)
    embedding = self.head(features, training=training)
    if self.item_bias is not None:
      bias = self.item_bias(inputs[F.ITEM_INDEX])
      embedding = tf.concat([embedding, bias if has_id is None else bias * has_id], axis=1)
    return embedding


class TwoTowerModel(tfrs.Model):
  """Sampled-softmax retrieval over catalog and/or in-batch (logQ-corrected) negatives."""

  def __init__(self, vocab: Vocabularies, item_probabilities: tf.Tensor, config: TowerConfig,
               catalog: Optional[Mapping[str, np.ndarray]] = None):
    super().__init__()
    item_embedding = _id_embedding(vocab.items, config)
    self.query_tower = QueryTower(vocab, item_embedding, config)
    self.candidate_tower = CandidateTower(vocab, item_embedding, config)
    # P(item appears in a batch) per item index: the sampling probability logQ removes.
    self._item_probabilities = tf.constant(item_probabilities, tf.float32)
    self._config = config
    self._catalog = ({name: tf.constant(values) for name, values in catalog.items()}
                     if catalog is not None and config.catalog_negatives else None)
    # The whole-batch softmax of TFRS when there is no catalog to sample negatives from.
    self.task = (tfrs.tasks.Retrieval(temperature=config.temperature, remove_accidental_hits=True)
                 if self._catalog is None else
                 SampledCatalogRetrieval(config.temperature, config.in_batch_negatives))

  def vocabulary_tables(self) -> List[Tuple[tf.Variable, str]]:
    """The weights whose rows are indexed by a transform vocabulary (and its OOV rows), with
    its name: a warm start maps them by token (`warm_start.py`)."""
    query, candidate = self.query_tower, self.candidate_tower
    tables = [(query.user_embedding.embeddings, F.USER_VOCAB),
              (query.item_embedding.embeddings, F.ITEM_VOCAB),
              (query.gender_embedding.embeddings, F.GENDER_VOCAB),
              (query.occupation_embedding.embeddings, F.OCCUPATION_VOCAB),
              (candidate.token_embedding.embeddings, F.TITLE_VOCAB),
              (candidate.category_projection.kernel, F.CATEGORY_VOCAB)]
    if candidate.item_bias is not None:
      tables.append((candidate.item_bias.embeddings, F.ITEM_VOCAB))
    return tables

  def _catalog_sample(self) -> Dict[str, tf.Tensor]:
    size = tf.shape(self._catalog[F.ITEM_INDEX])[0]
    if self._config.catalog_negatives >= int(self._catalog[F.ITEM_INDEX].shape[0]):
      return dict(self._catalog)
    rows = tf.random.uniform([self._config.catalog_negatives], 0, size, dtype=tf.int32)
    return {name: tf.gather(values, rows) for name, values in self._catalog.items()}

  def compute_loss(self, inputs: Dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
    queries = self.query_tower(inputs, training=training)
    candidates = self.candidate_tower(inputs, training=training)
    ids = inputs[F.ITEM_INDEX]
    probabilities = None
    if self._config.logq_correction:
      probabilities = tf.gather(self._item_probabilities, ids)
    if self._catalog is None:
      return self.task(queries, candidates, candidate_sampling_probability=probabilities,
                       candidate_ids=ids, compute_metrics=not training)
    sample = self._catalog_sample()
    return self.task(queries, candidates, ids, self.candidate_tower(sample, training=training),
                     sample[F.ITEM_INDEX], candidate_sampling_probability=probabilities,
                     compute_metrics=not training)
