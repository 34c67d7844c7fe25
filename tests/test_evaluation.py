"""Retrieval metrics (through a real TFMA run), the blessing rule, and the baseline's SavedModel."""
import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf

from pipeline.components.retrieval_evaluator import (CANDIDATE, LAST_BLESSED, POPULARITY,
                                                     blessing_decision, load_metrics, run_analysis)
from pipeline.evaluation.report import OVERALL
from trainer.retrieval.metrics import label_rank
from trainer.retrieval.popularity import export_popularity_model
from trainer.retrieval.top_k import ExcludingTopK
from transform import features as F


def test_top_k_excludes_history_of_any_width():
  top = ExcludingTopK(["a", "b", "c", "d"], k=2)
  scores = tf.constant([[4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 2.0, 1.0]])
  out = top(scores, tf.constant([["a", "zz", ""], ["", "", ""]]))
  assert out["item_ids"].numpy().astype(str).tolist() == [["b", "c"], ["a", "b"]]
  assert out["scores"].numpy().tolist() == [[3.0, 2.0], [4.0, 3.0]]


def test_label_rank():
  ids = np.array([b"x", b"y", b"z"])
  assert label_rank(np.array([b"y"]), ids) == 2
  assert label_rank(np.array([b"q"]), ids) is None


def _example(item_id, history, gender):
  return tf.train.Example(features=tf.train.Features(feature={
      F.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[item_id.encode()])),
      F.HISTORY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[h.encode() for h in history])),
      F.GENDER: tf.train.Feature(bytes_list=tf.train.BytesList(value=[gender.encode()])),
  })).SerializeToString()


@pytest.fixture(scope="module")
def popularity_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("popularity"))
  # popularity order: i1 > i2 > i3 > i4 ... > i12
  items = [f"i{n}" for n in range(1, 13)]
  export_popularity_model(items, list(range(100, 100 - len(items), -1)), top_k=10, export_dir=path)
  return path


def test_popularity_model_serves_and_excludes_history(popularity_dir):
  model = tf.saved_model.load(popularity_dir)
  out = model.signatures["serving_default"](
      user_id=tf.constant(["u"]), history=tf.constant([["i1", "i3"]]),
      age=tf.constant([0], tf.int64), gender=tf.constant([""]), occupation=tf.constant([""]))
  assert out["item_ids"].numpy()[0].astype(str).tolist()[:3] == ["i2", "i4", "i5"]


def test_tfma_computes_rank_metrics_per_slice(popularity_dir, tmp_path):
  # ranks for the popularity model: i1 -> 1, i4 with i1..i3 excluded -> 1, i12 -> not in top 10
  examples = [_example("i1", [], "F"), _example("i4", ["i1", "i2", "i3"], "M"),
              _example("i12", [], "M"), _example("i3", [], "F")]
  data = str(tmp_path / "eval.tfrecord")
  with tf.io.TFRecordWriter(data) as writer:
    for example in examples:
      writer.write(example)
  output = str(tmp_path / "tfma")
  run_analysis(beam.Pipeline(), data, {CANDIDATE: popularity_dir, POPULARITY: popularity_dir},
               [F.GENDER], output)
  metrics = load_metrics(output)
  overall = metrics[CANDIDATE][OVERALL]
  assert overall["example_count"] == 4
  assert overall["recall@10"] == pytest.approx(3 / 4)  # i12 is ranked 12th, beyond the top 10
  assert overall["precision@10"] == pytest.approx(3 / 40)
  assert overall["mrr"] == pytest.approx((1 + 1 + 1 / 3) / 4)
  assert overall["ndcg@10"] == pytest.approx((1 + 1 + 1 / np.log2(4)) / 4)
  p, r = 3 / 40, 3 / 4
  assert overall["f1@10"] == pytest.approx(2 * p * r / (p + r))
  assert metrics[CANDIDATE]["gender=M"]["recall@10"] == pytest.approx(1 / 2)
  assert metrics[CANDIDATE]["gender=F"]["mrr"] == pytest.approx((1 + 1 / 3) / 2)


def _metrics(candidate, popularity, last=None):
  out = {CANDIDATE: {OVERALL: candidate}, POPULARITY: {OVERALL: popularity}}
  if last:
    out[LAST_BLESSED] = {OVERALL: last}
  return out


def test_blessing_needs_to_beat_popularity_on_every_gate_metric():
  gates = ["recall@100", "ndcg@10"]
  blessed, _ = blessing_decision(
      _metrics({"recall@100": 0.4, "ndcg@10": 0.03}, {"recall@100": 0.2, "ndcg@10": 0.01}),
      gates, 0.01)
  assert blessed
  blessed, reasons = blessing_decision(
      _metrics({"recall@100": 0.4, "ndcg@10": 0.01}, {"recall@100": 0.2, "ndcg@10": 0.02}),
      gates, 0.01)
  assert not blessed and any("ndcg@10" in r and "<=" in r for r in reasons)


def test_blessing_refuses_a_regression_beyond_tolerance():
  candidate, popularity = {"recall@100": 0.40}, {"recall@100": 0.2}
  assert blessing_decision(_metrics(candidate, popularity, {"recall@100": 0.405}),
                           ["recall@100"], 0.01)[0]
  blessed, reasons = blessing_decision(_metrics(candidate, popularity, {"recall@100": 0.45}),
                                       ["recall@100"], 0.01)
  assert not blessed and any("last blessed" in r for r in reasons)
