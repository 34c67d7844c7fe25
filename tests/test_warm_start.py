"""The warm start: a later run's towers start from an earlier model's weights, each id table
mapped row by row through both runs' vocabularies (real MovieLens ids and titles), every other
weight copied, and nothing copied when the towers differ."""
import os

import numpy as np
import pytest
import tensorflow as tf

from pipeline.data import contract, parsing
from trainer.retrieval import warm_start
from trainer.retrieval.model import TowerConfig, TwoTowerModel, Vocabularies
from transform import features as F
from transform.preprocessing import title_tokens


def test_remap_rows_keeps_shared_tokens_and_oov_and_leaves_new_rows_fresh():
  old = np.arange(5, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)  # a b c + 2 OOV
  fresh = -np.ones((6, 2), np.float32)                                         # c d a e + 2 OOV
  table = warm_start.remap_rows(old, ["a", "b", "c"], fresh, ["c", "d", "a", "e"], oov_rows=2)
  np.testing.assert_array_equal(table[:, 0], [2, -1, 0, -1, 3, 4])


def _vocabularies(rows, users, items):
  """The transform's vocabularies of a slice of real rows (most frequent first, as tft)."""
  titles = tf.constant([row["title"] for row in items])
  tokens = sorted({t.decode() for t in title_tokens(titles).values.numpy()})
  categories = sorted({c for row in items for c in row["categories"]})
  return {F.USER_VOCAB: sorted({row["user_id"] for row in rows} | {u["user_id"] for u in users}),
          F.ITEM_VOCAB: [row["item_id"] for row in items],
          F.GENDER_VOCAB: sorted({u["gender"] for u in users}),
          F.OCCUPATION_VOCAB: sorted({u["occupation"] for u in users}),
          F.TITLE_VOCAB: tokens, F.CATEGORY_VOCAB: categories}


def _write_vocabularies(vocabularies, directory):
  os.makedirs(directory, exist_ok=True)
  files = {}
  for name, tokens in vocabularies.items():
    files[name] = os.path.join(directory, name)
    with open(files[name], "w") as f:
      f.write("".join(f"{token}\n" for token in tokens))
  return files


def _model(vocabularies, config=TowerConfig(), seed=0):
  """A model on these vocabularies, built by one batch of indices within them."""
  tf.keras.utils.set_random_seed(seed)
  size = lambda name: len(vocabularies[name]) + F.OOV_BUCKETS  # noqa: E731
  vocab = Vocabularies(users=size(F.USER_VOCAB), items=size(F.ITEM_VOCAB),
                       genders=size(F.GENDER_VOCAB), occupations=size(F.OCCUPATION_VOCAB),
                       title_tokens=size(F.TITLE_VOCAB))
  model = TwoTowerModel(vocab, np.full(vocab.items, 0.5, np.float32), config)
  n = 4
  batch = {F.USER_INDEX: tf.range(n, dtype=tf.int64), F.ITEM_INDEX: tf.range(n, dtype=tf.int64),
           F.HISTORY_INDEX: tf.fill([n, F.HISTORY_LENGTH], tf.constant(-1, tf.int64)),
           F.AGE_Z: tf.zeros([n]), F.GENDER_INDEX: tf.zeros([n], tf.int64),
           F.OCCUPATION_INDEX: tf.zeros([n], tf.int64),
           F.TITLE_TOKENS: tf.fill([n, F.TITLE_LENGTH], tf.constant(-1, tf.int64)),
           F.CATEGORY_MULTI_HOT: tf.zeros([n, F.CATEGORY_VOCAB_SIZE + 1]),
           F.YEAR_Z: tf.zeros([n]), F.YEAR_BUCKET: tf.zeros([n], tf.int64)}
  model.query_tower(batch), model.candidate_tower(batch)
  return model


@pytest.fixture(scope="module")
def two_runs(slice_root):
  """The vocabularies of an earlier run (the first 60% of the catalog) and of a later one (the
  last 70%: new items and title tokens, some gone)."""
  rows = list(parsing.read_table(slice_root, contract.INTERACTIONS))
  items = list(parsing.read_table(slice_root, contract.ITEMS))
  users = list(parsing.read_table(slice_root, contract.USERS))
  cut, start = int(len(items) * 0.6), int(len(items) * 0.3)
  return _vocabularies(rows, users, items[:cut]), _vocabularies(rows, users, items[start:])


def test_restore_grows_the_vocabulary_without_losing_the_old_rows(two_runs, tmp_path):
  earlier, later = two_runs
  base = _model(earlier, seed=1)
  base_dir = str(tmp_path / "base" / "Format-Serving")
  warm_start.save(base, _write_vocabularies(earlier, str(tmp_path / "v1")), base_dir)
  model = _model(later, seed=2)
  fresh = {path: v.numpy() for path, v in warm_start.trainable_by_path(model).items()}
  report = warm_start.restore(model, _write_vocabularies(later, str(tmp_path / "v2")), base_dir)

  assert report["warm"], report
  items = report["vocabularies"][F.ITEM_VOCAB]
  shared = set(earlier[F.ITEM_VOCAB]) & set(later[F.ITEM_VOCAB])
  assert items == {"kept": len(shared), "new": len(set(later[F.ITEM_VOCAB]) - shared),
                   "dropped": len(set(earlier[F.ITEM_VOCAB]) - shared)}
  assert items["kept"] and items["new"] and items["dropped"]
  old_table = base.query_tower.item_embedding.embeddings.numpy()
  new_table = model.query_tower.item_embedding.embeddings.numpy()
  for item in list(shared)[:20]:
    np.testing.assert_array_equal(new_table[later[F.ITEM_VOCAB].index(item)],
                                  old_table[earlier[F.ITEM_VOCAB].index(item)])
  new_item = next(i for i in later[F.ITEM_VOCAB] if i not in shared)
  row = later[F.ITEM_VOCAB].index(new_item)
  item_path = next(p for p, v in warm_start.trainable_by_path(model).items()
                   if v is model.query_tower.item_embedding.embeddings)
  np.testing.assert_array_equal(new_table[row], fresh[item_path][row])  # fresh, not copied
  np.testing.assert_array_equal(new_table[-1], old_table[-1])          # the OOV row
  # The candidate tower reads the same (shared) table, and every non-table weight is copied.
  assert model.candidate_tower.item_embedding is model.query_tower.item_embedding
  np.testing.assert_array_equal(model.query_tower.head._out.kernel.numpy(),
                                base.query_tower.head._out.kernel.numpy())
  assert report["vocabularies"][F.TITLE_VOCAB]["new"] > 0


def test_restore_trains_cold_when_the_towers_differ(two_runs, tmp_path):
  earlier, later = two_runs
  base_dir = str(tmp_path / "base" / "Format-Serving")
  warm_start.save(_model(earlier), _write_vocabularies(earlier, str(tmp_path / "v1")),
                  base_dir)
  model = _model(later, TowerConfig(hidden_units=32))
  before = model.query_tower.head._out.kernel.numpy()
  report = warm_start.restore(model, _write_vocabularies(later, str(tmp_path / "v2")), base_dir)
  assert not report["warm"] and "shape" in report["reason"]
  np.testing.assert_array_equal(model.query_tower.head._out.kernel.numpy(), before)
  missing = warm_start.restore(model, {}, str(tmp_path / "nothing" / "Format-Serving"))
  assert not missing["warm"] and "no saved weights" in missing["reason"]
