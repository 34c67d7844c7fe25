"""The item-to-item source: its tables against numpy, the table scoring, the SavedModel's
signatures, and the Beam component end to end on the ExampleGen output of the MovieLens slice."""
import collections
import glob
import json
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import op_def_registry
from tfx.types import standard_artifacts

from pipeline.components.artifacts import serving_model_dir
from pipeline.components.interaction_example_gen import JoinInteractions, SplitSettings
from pipeline.components.item_to_item_trainer import (FULL, ItemToItemTrainer, fold_variant,
                                                      recent_items, tables_dir)
from pipeline.data.examples import EVAL, SPLITS, TRAIN, decode_example, first
from tests.saved_model_ops import graph_ops
from trainer.item_to_item.export import ItemToItemModule, export_item_to_item
from trainer.item_to_item.model import (COSINE, EASE, ItemToItemSettings, ItemToItemTables,
                                        fit_tables)
from trainer.item_to_item.scoring import ScoringTable, catalog_max, catalog_scores
from trainer.retrieval.signature import ITEM_IDS, SCORES, as_tensors, query_inputs
from transform import features as F

FOLDS = 2


def numpy_ease(x: np.ndarray, ease_lambda: float) -> np.ndarray:
  """Brute-force EASE from a binary user x item matrix."""
  gram = x.T @ x + ease_lambda * np.eye(x.shape[1])
  p = np.linalg.inv(gram)
  b = np.eye(x.shape[1]) - p / np.diag(p)[np.newaxis, :]
  np.fill_diagonal(b, 0.0)
  return b


def numpy_cosine(x: np.ndarray, shrink: float) -> np.ndarray:
  co = x.T @ x
  counts = np.diag(co).copy()
  np.fill_diagonal(co, 0.0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.nan_to_num(co / (np.sqrt(np.outer(counts, counts)) + shrink))


def co_occurrence(x: np.ndarray):
  """What the component hands fit_tables: item counts, each unordered pair once."""
  co = x.T @ x
  rows, cols = np.nonzero(np.triu(co, k=1))
  return np.diag(co).astype(np.int64), rows, cols, co[rows, cols].astype(np.int64)


def dense(table, n: int) -> np.ndarray:
  out = np.zeros((n, n))
  rows, slots = np.nonzero(table.neighbours >= 0)
  out[rows, table.neighbours[rows, slots]] = table.weights[rows, slots]
  return out


@pytest.fixture(scope="module")
def tiny():
  """30 users x 12 items, binary, about 40% dense."""
  x = (np.random.default_rng(7).random((30, 12)) < 0.4).astype(np.float64)
  return x, [f"i{k}" for k in range(12)]


def fit(x, item_ids, **settings):
  return fit_tables(item_ids, *co_occurrence(x), ItemToItemSettings(**settings))


def test_settings_reject_unknown_names_and_list_the_known_ones():
  assert ItemToItemSettings.from_config({"neighbours": 50}).neighbours == 50
  with pytest.raises(ValueError, match=r"unknown settings \['neighbors'\]; known: .*neighbours"):
    ItemToItemSettings.from_config({"neighbors": 50})


def test_untruncated_ease_table_is_numpy_ease(tiny):
  x, ids = tiny
  tables = fit(x, ids, ease_lambda=5.0, neighbours=len(ids))
  assert tables.method == EASE
  np.testing.assert_allclose(dense(tables.ease, len(ids)), numpy_ease(x, 5.0), atol=1e-6)
  np.testing.assert_array_equal(tables.item_counts, x.sum(axis=0))


def test_truncation_keeps_the_largest_weights_by_magnitude(tiny):
  x, ids = tiny
  tables = fit(x, ids, ease_lambda=5.0, neighbours=4)
  b = numpy_ease(x, 5.0)
  assert tables.ease.neighbours.shape == (len(ids), 4)
  assert (b < 0).sum() > 0 and (tables.ease.weights < 0).any()  # negative weights are kept
  for item in range(len(ids)):
    strongest = np.argsort(-np.abs(b[item]), kind="stable")[:4]
    assert tables.ease.neighbours[item].tolist() == strongest.tolist()
    np.testing.assert_allclose(tables.ease.weights[item], b[item, strongest], atol=1e-6)


def test_cosine_table_is_numpy_shrunk_cosine_top_m_by_value(tiny):
  x, ids = tiny
  full = fit(x, ids, shrink=2.0, neighbours=len(ids))
  expected = numpy_cosine(x, 2.0)
  np.testing.assert_allclose(dense(full.cosine, len(ids)), expected, atol=1e-6)
  truncated = fit(x, ids, shrink=2.0, neighbours=3).cosine
  np.testing.assert_allclose(truncated.weights, -np.sort(-expected, axis=1)[:, :3], atol=1e-6)


def test_a_catalog_above_the_dense_limit_gets_the_cosine_table_as_its_source(tiny):
  x, ids = tiny
  tables = fit(x, ids, dense_limit=len(ids) - 1)
  assert tables.method == COSINE and tables.ease is tables.cosine


def test_tables_round_trip_through_a_folder(tiny, tmp_path):
  x, ids = tiny
  tables = fit(x, ids, neighbours=5)
  tables.save(str(tmp_path / "tables"))
  loaded = ItemToItemTables.load(str(tmp_path / "tables"))
  assert loaded.item_ids == ids and loaded.method == EASE
  np.testing.assert_array_equal(loaded.item_counts, tables.item_counts)
  for name in ("ease", "cosine"):
    np.testing.assert_array_equal(getattr(loaded, name).neighbours,
                                  getattr(tables, name).neighbours)
    np.testing.assert_array_equal(getattr(loaded, name).weights, getattr(tables, name).weights)


def test_catalog_scores_sum_history_rows_once_each_and_skip_padding():
  neighbours = tf.constant([[1, 2], [0, -1], [1, 0]])
  weights = tf.constant([[0.5, -1.0], [2.0, 0.0], [3.0, 4.0]])
  history = tf.constant([[0, 2, -1, 2], [-1, -1, -1, -1], [1, -1, -1, -1]])
  scores = catalog_scores(neighbours, weights, history, n_items=3).numpy()
  np.testing.assert_allclose(scores, [[4.0, 3.5, -1.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
  assert catalog_scores(neighbours, weights, tf.zeros([2, 0], tf.int32), 3).shape == (2, 3)


def _random_table(n: int, m: int, seed: int):
  rng = np.random.default_rng(seed)
  neighbours = rng.integers(-1, n, (n, m)).astype(np.int32)
  weights = np.where(neighbours >= 0, rng.normal(size=(n, m)), 0.0).astype(np.float32)
  history = rng.integers(-1, n, (5, 30))
  history[1] = -1  # an empty history
  history[2, 5:] = history[2, 0]  # one item, repeated
  return neighbours, weights, history


def _brute_force(neighbours, weights, history, n, reduce, empty):
  out = np.full((len(history), n), empty, np.float64)
  for user, items in enumerate(history):
    for item in set(items[items >= 0].tolist()):
      for neighbour, weight in zip(neighbours[item], weights[item]):
        if neighbour >= 0:
          out[user, neighbour] = reduce(out[user, neighbour], weight)
  return out


@pytest.mark.parametrize("limit", [0, 10**9], ids=["gathered_rows", "sparse_matmul"])
def test_both_ways_of_scoring_a_table_give_the_brute_force_sums_and_maxima(limit):
  neighbours, weights, history = _random_table(60, 7, seed=3)
  table = ScoringTable(neighbours, weights, sparse_matmul_limit=limit)
  assert table.sparse == (limit > 0)
  np.testing.assert_allclose(table.scores(tf.constant(history)).numpy(), _brute_force(
      neighbours, weights, history, 60, lambda a, b: a + b, 0.0), atol=1e-5)
  expected_max = np.maximum(_brute_force(neighbours, weights, history, 60, max, -np.inf), 0.0)
  np.testing.assert_array_equal(table.max(tf.constant(history)).numpy(),
                                expected_max.astype(np.float32))
  np.testing.assert_array_equal(
      catalog_max(neighbours, weights, tf.constant(history), 60).numpy(), table.max(
          tf.constant(history)).numpy())


@pytest.fixture(scope="module")
def tiny_model(tiny, tmp_path_factory):
  x, ids = tiny
  tables = fit(x, ids, ease_lambda=5.0, neighbours=len(ids))
  export_dir = str(tmp_path_factory.mktemp("tiny_item_to_item"))
  export_item_to_item(ItemToItemModule(tables, top_k=5), export_dir)
  return tf.saved_model.load(export_dir).signatures["serving_default"], numpy_ease(x, 5.0), ids


def _serve(signature, rows):
  out = signature(**as_tensors(query_inputs(rows)))
  return out[ITEM_IDS].numpy().astype(str), out[SCORES].numpy()


def test_history_is_excluded_and_unknown_ids_are_ignored(tiny_model):
  signature, b, ids = tiny_model
  item_ids, scores = _serve(signature, [{F.USER_ID: "u", F.HISTORY: ["i3", "nope", "", "i7"]}])
  assert item_ids.shape == (1, 5)
  assert not {"i3", "i7"} & set(item_ids[0])
  expected = b[3] + b[7]
  np.testing.assert_allclose(scores[0], [expected[ids.index(i)] for i in item_ids[0]], atol=1e-5)
  np.testing.assert_allclose(scores[0], np.sort(np.delete(expected, [3, 7]))[::-1][:5],
                             atol=1e-5)


def test_an_empty_history_answers_k_catalog_items_with_score_zero(tiny_model):
  """Documented: all-zero scores, so the first K catalog items (the trainer orders the catalog
  by count); never an error, at any history width."""
  signature, _, ids = tiny_model
  item_ids, scores = _serve(signature, [{F.USER_ID: "a"}, {F.USER_ID: "b", F.HISTORY: [""]}])
  assert item_ids.tolist() == [ids[:5]] * 2 and not scores.any()
  inputs = as_tensors(query_inputs([{F.USER_ID: "a"}]))
  inputs[F.HISTORY] = tf.zeros([1, 0], tf.string)
  assert signature(**inputs)[SCORES].numpy().tolist() == [[0.0] * 5]


# --- The component, end to end on the ExampleGen output of the MovieLens slice ------------------

@pytest.fixture(scope="module")
def slice_examples(slice_root, tmp_path_factory):
  """An Examples artifact as InteractionExampleGen writes it (gzipped Split-<name>/ files)."""
  uri = str(tmp_path_factory.mktemp("item_to_item_examples"))
  with beam.Pipeline() as p:
    splits = p | JoinInteractions(slice_root, SplitSettings(eval_fraction=0.1, folds=FOLDS))
    for split in SPLITS:
      _ = splits[split] | f"Write[{split}]" >> beam.io.WriteToTFRecord(
          os.path.join(uri, f"Split-{split}", "data_tfrecord"), file_name_suffix=".gz")
  artifact = standard_artifacts.Examples()
  artifact.uri = uri
  artifact.split_names = json.dumps(list(SPLITS))
  return artifact


def _read(examples, split):
  files = glob.glob(os.path.join(examples.uri, f"Split-{split}", "*"))
  return [record.numpy() for record in tf.data.TFRecordDataset(files, compression_type="GZIP")]


@pytest.fixture(scope="module")
def trained(slice_examples, tmp_path_factory):
  """The component's executor as the launcher runs it: real Beam, no truncation (M and the
  history limit above the slice's sizes), so the tables are exact EASE."""
  model = standard_artifacts.Model()
  model.uri = str(tmp_path_factory.mktemp("item_to_item_model"))
  settings = {"neighbours": 5000, "history_limit": 5000, "top_k": 20}
  ItemToItemTrainer.EXECUTOR_SPEC.executor_class().Do(
      {"examples": [slice_examples]}, {"model": [model]},
      {"settings": json.dumps(settings), "folds": FOLDS})
  interactions = collections.defaultdict(set)
  for serialized in _read(slice_examples, TRAIN):
    decoded = decode_example(serialized)
    interactions[first(decoded, F.FOLD, F.NO_FOLD)].add(
        (decoded[F.USER_ID][0], decoded[F.ITEM_ID][0]))
  return model, interactions


def _matrix(pairs, item_ids):
  users = sorted({user for user, _ in pairs})
  x = np.zeros((len(users), len(item_ids)))
  column = {item: k for k, item in enumerate(item_ids)}
  for user, item in pairs:
    x[users.index(user), column[item]] = 1.0
  return users, x


def test_served_scores_are_numpy_ease_of_the_training_split(trained):
  model, interactions = trained
  tables = ItemToItemTables.load(tables_dir(model.uri, FULL))
  users, x = _matrix(set().union(*interactions.values()), tables.item_ids)
  # the catalog is ordered by interaction count (here, with no history limit, the Gram's)
  assert sorted(tables.item_counts, reverse=True) == tables.item_counts.tolist()
  b = numpy_ease(x, ItemToItemSettings().ease_lambda)
  chosen = [int(np.argmax(x.sum(axis=1)))] + list(range(4))  # the heaviest user and four more
  rows = [{F.USER_ID: users[u], F.HISTORY: [tables.item_ids[k] for k in np.flatnonzero(x[u])]}
          for u in chosen]
  signature = tf.saved_model.load(serving_model_dir(model)).signatures["serving_default"]
  item_ids, scores = _serve(signature, rows)
  assert item_ids.shape == (len(chosen), 20)
  for row, u in enumerate(chosen):
    expected = np.where(x[u] > 0, -np.inf, x[u] @ b)
    served = [tables.item_ids.index(item) for item in item_ids[row]]
    np.testing.assert_allclose(scores[row], np.sort(expected)[::-1][:20], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scores[row], expected[served], rtol=1e-4, atol=1e-5)
  cold, _ = _serve(signature, [{F.USER_ID: "new"}])
  assert cold[0].tolist() == tables.item_ids[:20]  # an empty history: the most popular items


def test_each_fold_variant_is_fit_without_its_fold(trained):
  model, interactions = trained
  assert set(interactions) == set(range(FOLDS))  # every training interaction has a fold
  catalog = ItemToItemTables.load(tables_dir(model.uri, FULL)).item_ids
  ease_lambda = ItemToItemSettings().ease_lambda
  for fold in range(FOLDS):
    tables = ItemToItemTables.load(tables_dir(model.uri, fold_variant(fold)))
    assert tables.item_ids == catalog  # one catalog, so indices agree across variants
    kept = set().union(*(pairs for f, pairs in interactions.items() if f != fold))
    _, x = _matrix(kept, catalog)
    np.testing.assert_array_equal(tables.item_counts, x.sum(axis=0))
    np.testing.assert_allclose(dense(tables.ease, len(catalog)), numpy_ease(x, ease_lambda),
                               atol=1e-5)
    np.testing.assert_allclose(dense(tables.cosine, len(catalog)), numpy_cosine(x, 0.0),
                               atol=1e-5)
  assert sorted(os.listdir(model.uri)) == ["Format-Serving", "tables"]


def test_evaluation_signature_reads_the_history_of_the_examples(trained, slice_examples):
  model = tf.saved_model.load(serving_model_dir(trained[0]))
  examples = _read(slice_examples, EVAL)[:8]
  evaluated = model.signatures["evaluation"](examples=tf.constant(examples))
  histories = [{F.HISTORY: decode_example(e).get(F.HISTORY, [])} for e in examples]
  served = model.signatures["serving_default"](**as_tensors(query_inputs(histories)))
  np.testing.assert_array_equal(evaluated[ITEM_IDS].numpy(), served[ITEM_IDS].numpy())
  np.testing.assert_allclose(evaluated[SCORES].numpy(), served[SCORES].numpy(), rtol=1e-6)


def test_export_uses_only_core_tensorflow_ops(trained):
  ops = graph_ops(serving_model_dir(trained[0]))
  assert not sorted(op for op in ops if op_def_registry.get(op) is None)
  assert not {"PyFunc", "EagerPyFunc", "PyFuncStateless"} & ops


def test_recent_items_are_the_latest_distinct_ones_outside_the_held_out_fold():
  events = [(1, "a", 0), (5, "b", 1), (3, "c", -1), (4, "a", 1), (2, "d", 0)]
  assert recent_items(events, None, 3) == ["b", "a", "c"]
  assert recent_items(events, 1, 10) == ["c", "d", "a"]
  assert recent_items(events, 0, 2) == ["b", "a"]
