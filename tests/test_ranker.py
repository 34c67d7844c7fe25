"""The recommendation ranking stage: metrics, losses and the fold filter by hand; then, on the
session's pipeline run over the MovieLens slice, the mined lists (no leakage, labels), the
pushed ranker's features against its sources, and the cascade serving it."""
import dataclasses
import glob
import json
import math
import os
import shutil

import grpc
import numpy as np
import pytest
import tensorflow as tf

from pipeline.components.ranking_list_miner import RankingListMiner
from pipeline.data import contract
from pipeline.data.examples import TRAIN, decode_example, first
from pipeline.data.parsing import read_table
from serving.models_config import ITEM_TO_ITEM, RANKER, RETRIEVAL, read_models_config
from serving.protos import recommender_pb2 as pb
from serving.protos import recommender_pb2_grpc
from serving.serve import LocalStack
from tests.conftest import RANKER_FOLDS, RANKER_SETTINGS
from trainer.ranker import lists as L
from trainer.ranker.features import capped_rank
from trainer.ranker.signature import request_inputs, training_request, union
from trainer.ranker.metrics import hit_metrics, user_metrics
from trainer.ranker import warm_start
from trainer.ranker.model import LISTWISE, POINTWISE, loss, moments, standardised_per_list
from trainer.ranker.trainer import TRAINING_RECORD, RankerSettings, list_batches, train_scorer
from trainer.retrieval import signature
from trainer.retrieval.trainer import without_fold
from transform import features as F


def test_user_metrics_by_hand():
  # Relevant: a, c, x (x never recommended); hits at ranks 1 and 3 of 10.
  values = user_metrics(["a", "b", "c"] + [f"n{i}" for i in range(7)], {"a", "c", "x"})
  assert values["precision@10"] == pytest.approx(0.2)
  assert values["recall@10"] == pytest.approx(2 / 3)
  assert values["map"] == pytest.approx((1 / 1 + 2 / 3) / 3)
  ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
  assert values["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / ideal)
  assert hit_metrics(np.zeros(5), 0) is None


def test_union_keeps_the_sources_order_and_drops_history():
  assert union([["a", "b", "c"], ["c", "d", "", "a", "e"]], exclude={"b"}) == ["a", "c", "d", "e"]


def test_a_training_request_is_what_the_user_store_serves():
  rows = [{F.ITEM_ID: "a", F.TIMESTAMP: 5}, {F.ITEM_ID: "b", F.TIMESTAMP: 9},
          {F.ITEM_ID: "a", F.TIMESTAMP: 7}]
  request = training_request("u", rows, {F.AGE: 30, F.GENDER: "F"})
  assert request[F.HISTORY] == ["b", "a"] and request[F.HISTORY_TIMESTAMPS] == [9, 7]
  assert request[F.AGE] == 30 and request[F.OCCUPATION] is None
  inputs = request_inputs([request, {F.USER_ID: "v"}], [["c"], ["d", "e"]])
  assert inputs[F.HISTORY_TIMESTAMPS].tolist() == [[9, 7], [0, 0]]
  assert inputs["candidate_ids"].tolist() == [["c", ""], ["d", "e"]]


def test_losses_ignore_padding_and_lists_without_positives():
  logits = tf.constant([[2.0, 0.0, -1e9], [1.0, 1.0, 1.0]])
  labels = tf.constant([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
  mask = tf.constant([[True, True, False], [True, True, True]])
  listwise = float(loss(LISTWISE, labels, logits, mask))
  assert listwise == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)), rel=1e-5)
  pointwise = float(loss(POINTWISE, labels, logits, mask))
  expected = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
      [1.0, 0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 1.0, 1.0, 1.0]))
  assert pointwise == pytest.approx(float(expected), rel=1e-5)
  z = standardised_per_list(tf.constant([[1.0, 3.0, 99.0]]), tf.constant([[True, True, False]]))
  np.testing.assert_allclose(z.numpy(), [[-1.0, 1.0, 0.0]], atol=1e-5)
  with pytest.raises(ValueError, match="unknown"):
    RankerSettings.from_config({"epochs": 3})


@pytest.mark.parametrize("items,cap", [(300, 20), (50, 100)])
def test_capped_ranks_are_the_full_stable_sort_capped(items, cap):
  rng = np.random.default_rng(items)
  scores = np.round(rng.normal(size=(6, items)), 1).astype(np.float32)  # many ties
  scores[rng.random(scores.shape) < 0.1] = -np.inf  # the user's seen items
  candidates = rng.integers(0, items, (6, 40))
  full = np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1) + 1
  expected = np.minimum(np.take_along_axis(full, candidates, axis=1), cap + 1)
  np.testing.assert_array_equal(
      capped_rank(tf.constant(scores), tf.constant(candidates), cap).numpy(), expected)


def test_a_fold_model_never_sees_its_fold():
  batch = {F.FOLD_ID: tf.constant([0, 1, -1]),
           F.ITEM_INDEX: tf.constant([10, 11, 12], tf.int64),
           F.HISTORY_INDEX: tf.constant([[1, 2, -1], [3, 4, 5], [6, -1, -1]], tf.int64),
           F.HISTORY_FOLD_IDS: tf.constant([[1, 0, -1], [1, 1, 0], [1, -1, -1]], tf.int64)}
  (kept,) = list(without_fold(tf.data.Dataset.from_tensors(batch), fold=1))
  assert kept[F.ITEM_INDEX].numpy().tolist() == [10, 12]  # fold 1's example is gone
  assert kept[F.HISTORY_INDEX].numpy().tolist() == [[-1, 2, -1], [-1, -1, -1]]


# --- On the session's pipeline run ------------------------------------------------------------

def _first_output(config, component: str, key: str) -> str:
  """The first run's output folder (other tests run the pipeline again in the same root; a
  folder's name is its execution id)."""
  return min(glob.glob(os.path.join(config.pipeline_root, component, key, "*")),
             key=lambda path: int(os.path.basename(path)))


def _training_rows(config):
  """(user, item) -> fold of every training interaction of the run's examples."""
  examples = _first_output(config, "InteractionExampleGen", "examples")
  files = glob.glob(os.path.join(examples, f"Split-{TRAIN}", "*"))
  folds = {}
  for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
    decoded = decode_example(record.numpy())
    folds[(first(decoded, F.USER_ID, ""), first(decoded, F.ITEM_ID, ""))] = first(
        decoded, F.FOLD, F.NO_FOLD)
  return folds


def _mined_lists(config):
  lists_dir = _first_output(config, RankingListMiner.__name__, "candidate_lists")
  for split in L.SPLITS:
    files = glob.glob(os.path.join(lists_dir, f"Split-{split}", "*"))
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
      yield split, decode_example(record.numpy())


def test_mined_lists_hold_no_label_in_their_inputs(first_run):
  config = first_run[0]
  folds = _training_rows(config)
  mined = list(_mined_lists(config))
  assert {int(d[L.LIST_ID][0].split(":")[1]) for _, d in mined} == set(range(RANKER_FOLDS))
  users = {split: set() for split in L.SPLITS}
  for split, d in mined:
    user, fold = d[L.LIST_ID][0].split(":")
    users[split].add(user)
    held_out = {i for (u, i), f in folds.items() if u == user and f == int(fold)}
    seen = {i for (u, i), f in folds.items() if u == user and f != int(fold)}
    candidates = d[L.CANDIDATE_IDS]
    assert d[L.RELEVANT] == [len(held_out)] and held_out
    # Candidates are the fold sources' answers with the user's other folds excluded; the
    # labels are exactly the held-out fold.
    assert not seen & set(candidates)
    assert [c in held_out for c in candidates] == [bool(v) for v in d[L.LABELS]]
    if split == L.GATE:  # what the evaluator compares: each source's own answer, no history
      assert set(d[L.RELEVANT_IDS]) == held_out
      for source in ("retrieval", "item_to_item", "popularity"):
        ranked = d[L.RANKED_PREFIX + source]
        assert len(ranked) == len(set(ranked)) > 0 and not seen & set(ranked)
  # The gate's users are never trained on, nor used to stop training.
  assert users[L.GATE] and not users[L.GATE] & (users[L.TRAIN] | users[L.VALIDATION])
  assert not users[L.TRAIN] & users[L.VALIDATION]


def test_the_ranker_is_evaluated_against_each_source_and_pushed(first_run):
  config, _, _, summary = first_run
  stage = summary[RANKER]
  metrics = stage["evaluation"]["metrics"]
  assert {"cascade", RETRIEVAL, ITEM_TO_ITEM, "popularity"} <= set(metrics)
  assert {"overall", "gender=F", "gender=M"} <= set(metrics["cascade"])
  assert metrics["cascade"]["overall"]["user_count"] > 50
  assert stage["blessed"] is True, stage["evaluation"]["reasons"]
  served = {m.name for m in read_models_config(
      os.path.join(config.serving_root, "models.config")).model_config_list.config}
  assert {RETRIEVAL, ITEM_TO_ITEM, "popularity", RANKER} <= served


def test_the_pushed_ranker_scores_candidates_as_its_sources_do(first_run, slice_root):
  _, _, _, summary = first_run
  ranker = tf.saved_model.load(summary[RANKER]["pushed_to"]).signatures["serving_default"]
  retrieval = tf.saved_model.load(summary["pushed_to"])
  item_to_item = tf.saved_model.load(summary[ITEM_TO_ITEM]["pushed_to"])
  query = signature.query_inputs([{F.USER_ID: "1", F.HISTORY: ["50", "181", "1"]}])
  answer = item_to_item.signatures["serving_default"](**signature.as_tensors(query))
  candidates = [i.decode() for i in answer[signature.ITEM_IDS].numpy()[0][:20]] + ["no-such"]
  request = {F.USER_ID: "1", F.HISTORY: ["50", "181", "1"],
             F.HISTORY_TIMESTAMPS: [876_893_171, 876_893_000, 0]}
  out = ranker(**signature.as_tensors(request_inputs([request], [candidates])))
  assert out[signature.SCORES].numpy()[0, -1] == signature.EXCLUDED_SCORE  # unknown item
  np.testing.assert_allclose(out[f"{ITEM_TO_ITEM}_{signature.SCORES}"].numpy()[0, :20],
                             answer[signature.SCORES].numpy()[0, :20], rtol=1e-4, atol=1e-5)
  # The two-tower's view: query embedding . item embedding, from the pushed retrieval model.
  catalog = {row["item_id"]: row for row in read_table(slice_root, contract.ITEMS)}
  query_embedding = retrieval.signatures["query_embedding"](
      **signature.as_tensors(query))[signature.EMBEDDING].numpy()[0]
  item_embeddings = retrieval.signatures["item_embeddings"](**signature.as_tensors(
      signature.item_inputs([catalog[i] for i in candidates[:20]])))[signature.EMBEDDING]
  np.testing.assert_allclose(out[f"{RETRIEVAL}_{signature.SCORES}"].numpy()[0, :20],
                             item_embeddings.numpy() @ query_embedding, rtol=1e-4, atol=1e-5)


def test_the_cascade_serves_the_union_in_the_rankers_order(first_run, slice_root, tmp_path):
  config = first_run[0]
  data_root = str(tmp_path / "data")
  shutil.copytree(slice_root, data_root)
  stack = LocalStack(data_root, config.serving_root).start()
  try:
    stub = recommender_pb2_grpc.RecommenderStub(grpc.insecure_channel(f"localhost:{stack.port}"))
    response = stub.Recommend(pb.RecommendRequest(user=pb.UserContext(user_id="3"), k=10),
                              timeout=60)
    assert list(response.stages)[:3] == [RETRIEVAL, ITEM_TO_ITEM, RANKER]
    scores = [item.ranker_score for item in response.items]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
    assert any(item.item_to_item_score != 0 for item in response.items)
    # A user without any history: retrieval and popularity, ranked.
    cold = stub.Recommend(pb.RecommendRequest(user=pb.UserContext(user_id="new-user"), k=5),
                          timeout=60)
    assert cold.cold_start and list(cold.stages)[:3] == [RETRIEVAL, "popularity", RANKER]
  finally:
    stack.stop()


def test_a_warm_ranker_starts_where_the_blessed_one_ended(first_run):
  """The first run trained cold and saved its scorers; started from them on the same lists,
  each scorer's epoch 0 is the blessed run's best validation epoch, and a scorer built
  differently trains cold with the reason named."""
  config, _, _, summary = first_run
  model_dir = summary[RANKER]["model"]
  with tf.io.gfile.GFile(os.path.join(model_dir, TRAINING_RECORD)) as f:
    record = json.load(f)
  assert record["warm_start"] == {"warm": False, "reason": "no blessed ranker to start from"}
  settings = RankerSettings.from_config(RANKER_SETTINGS)
  build = warm_start.build_description(record["features"], settings.scorers, settings.width,
                                       settings.cross_layers)
  initial, report = warm_start.load(model_dir, build)
  assert report == {"warm": True, "base": model_dir, "members": len(settings.scorers)}
  lists_dir = _first_output(config, RankingListMiner.__name__, "candidate_lists")
  split = lambda name: tf.io.gfile.glob(  # noqa: E731  (as RankerTrainer lists them)
      os.path.join(lists_dir, f"Split-{name}", "*"))
  n_features = len(record["features"])
  train = list_batches(split(L.TRAIN), n_features, settings, settings.seed)
  validation = list_batches(split(L.VALIDATION), n_features, settings, None)
  feature_moments = moments(list_batches(split(L.TRAIN), n_features, settings, None))
  one_epoch = dataclasses.replace(settings, max_epochs=1)
  for member, kind in enumerate(settings.scorers):
    _, curve = train_scorer(kind, settings.seed + member, one_epoch, train, validation,
                            feature_moments, initial[member])
    best = record["scorers"][member]["best_validation"]
    assert [entry["epoch"] for entry in curve] == [0, 1]
    assert curve[0]["validation_loss"] == pytest.approx(best["validation_loss"], rel=1e-5)
    assert curve[0]["map"] == pytest.approx(best["map"], rel=1e-5)
  wider = dict(build, width=2 * settings.width, features=build["features"][1:])
  assert warm_start.load(model_dir, wider)[0] is None
  reason = warm_start.load(model_dir, wider)[1]["reason"]
  assert reason.startswith("the scorers changed: width 64 -> 128; features differ (new: [], "
                           f"gone: [{build['features'][0]!r}]")
