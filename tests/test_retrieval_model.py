"""The two towers and every loss path on a tiny synthetic batch of transformed features."""
import numpy as np
import pytest
import tensorflow as tf

from trainer.retrieval.model import TowerConfig, TwoTowerModel, Vocabularies
from trainer.retrieval.trainer import RetrievalSettings
from transform import features as F

VOCAB = Vocabularies(users=5, items=7, genders=3, occupations=4, title_tokens=9)


def _batch(n=6, seed=0):
  rng = np.random.default_rng(seed)
  history = rng.integers(-1, 6, (n, F.HISTORY_LENGTH))
  return {F.USER_INDEX: rng.integers(0, 4, n), F.ITEM_INDEX: np.arange(n) % 6,
          F.HISTORY_INDEX: history, F.AGE_Z: rng.normal(size=n).astype(np.float32),
          F.GENDER_INDEX: rng.integers(0, 2, n), F.OCCUPATION_INDEX: rng.integers(0, 3, n),
          F.TITLE_TOKENS: rng.integers(-1, 8, (n, F.TITLE_LENGTH)),
          F.CATEGORY_MULTI_HOT: rng.integers(0, 2, (n, F.CATEGORY_VOCAB_SIZE + 1)).astype(
              np.float32),
          F.YEAR_Z: rng.normal(size=n).astype(np.float32),
          F.YEAR_BUCKET: rng.integers(0, F.YEAR_BUCKETS + 1, n)}


def _catalog(batch):
  return {name: batch[name] for name in F.CANDIDATE_FEATURES}


@pytest.mark.parametrize("config", [
    TowerConfig(),  # softmax over the whole (small) catalog
    TowerConfig(catalog_negatives=0, in_batch_negatives=True),  # in-batch, logQ-corrected
    TowerConfig(catalog_negatives=4, in_batch_negatives=True),  # mixed
    TowerConfig(dropout=0.1, id_l2=1e-4, use_history=False),
    TowerConfig(item_bias=True),
])
def test_towers_embed_on_the_unit_sphere_and_training_lowers_the_loss(config):
  batch = {k: tf.constant(v) for k, v in _batch().items()}
  model = TwoTowerModel(VOCAB, np.full(VOCAB.items, 0.5, np.float32), config, _catalog(_batch()))
  model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
  queries = model.query_tower(batch).numpy()
  candidates = model.candidate_tower(batch).numpy()
  assert queries.shape == candidates.shape == (6, config.embedding_dim + int(config.item_bias))
  unit = queries[:, :config.embedding_dim]  # with item_bias: then 1 (query), the bias (item)
  assert np.linalg.norm(unit, axis=1) == pytest.approx(1.0, abs=1e-5)
  first = float(model.compute_loss(batch, training=False))
  dataset = tf.data.Dataset.from_tensors(batch).repeat(30)
  model.fit(dataset, epochs=1, verbose=0)
  assert np.isfinite(first) and float(model.compute_loss(batch, training=False)) < first


def test_history_changes_the_query_unless_switched_off():
  batch = _batch()
  empty = dict(batch, **{F.HISTORY_INDEX: -np.ones_like(batch[F.HISTORY_INDEX])})
  for use_history in (True, False):
    model = TwoTowerModel(VOCAB, np.full(VOCAB.items, 0.5, np.float32),
                          TowerConfig(use_history=use_history))
    same = np.allclose(model.query_tower(batch, training=False).numpy(),
                       model.query_tower(empty, training=False).numpy())
    assert same != use_history


def test_settings_split_training_and_model_fields():
  settings = RetrievalSettings.from_config({"epochs": 2, "temperature": 0.1})
  assert settings.epochs == 2 and settings.tower.temperature == 0.1
  with pytest.raises(ValueError, match="unknown settings"):
    RetrievalSettings.from_config({"epoch": 2})


def test_item_bias_is_one_more_dimension_that_a_dot_product_adds():
  batch = {k: tf.constant(v) for k, v in _batch().items()}
  config = TowerConfig(item_bias=True)
  model = TwoTowerModel(VOCAB, np.full(VOCAB.items, 0.5, np.float32), config, _catalog(_batch()))
  model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
  model.fit(tf.data.Dataset.from_tensors(batch).repeat(30), epochs=1, verbose=0)
  queries = model.query_tower(batch, training=False).numpy()
  candidates = model.candidate_tower(batch, training=False).numpy()
  assert np.all(queries[:, -1] == 1.0)
  bias = model.candidate_tower.item_bias(batch[F.ITEM_INDEX]).numpy()[:, 0]
  assert np.any(bias != 0.0)  # learned
  np.testing.assert_allclose(candidates[:, -1], bias)
  np.testing.assert_allclose(
      queries @ candidates.T,
      queries[:, :-1] @ candidates[:, :-1].T + bias[np.newaxis, :], rtol=1e-5, atol=1e-6)
