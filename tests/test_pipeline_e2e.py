"""The whole pipeline with LocalDagRunner on a small real slice of MovieLens-100K."""
import csv
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from pipeline import push_model
from pipeline.components.serving_pusher import read_push_log
from pipeline.data import contract, parsing
from pipeline.runners import local_runner
from serving.models_config import (ITEM_TO_ITEM, POPULARITY, RANKER, RETRIEVAL,
                                   read_models_config)
from tests.conftest import RANKER_SETTINGS, pipeline_config
from tests.saved_model_ops import graph_ops
from trainer.ranker.trainer import TRAINING_RECORD
from trainer.retrieval import signature
from trainer.retrieval.trainer import TRAINING_REPORT

def test_cli_run_succeeds_and_ends_with_the_summary_path_and_what_was_pushed(first_run):
  _, code, lines, summary = first_run
  assert code == 0, "\n".join(lines[-30:])
  assert summary["status"] == "succeeded"
  assert any(re.match(r"\[1/\d+\] ", line) for line in lines)  # per-component progress
  assert any("Retrieval metrics on the eval split" in line for line in lines)
  assert lines[-2].endswith("summary.json")
  version = os.path.basename(summary["pushed_to"])
  assert lines[-1].startswith(f"pushed {RETRIEVAL} version {version} to "
                              f"{os.path.dirname(summary['pushed_to'])}"), lines[-1]
  assert f"{RANKER} version " in lines[-1] and "not blessed" not in lines[-1]


def test_tensorboard_logs_are_where_the_readme_says(first_run):
  """README: the trainers' TensorBoard logs are under <pipeline_root>/<Trainer>/model_run/."""
  config, _, _, _ = first_run
  pattern = os.path.join(config.pipeline_root, "Trainer", "model_run", "*", "train",
                         "events.out.tfevents.*")
  assert tf.io.gfile.glob(pattern), pattern
  with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")) as f:
    assert "<pipeline_root>/Trainer/model_run/<execution id>/" in f.read()


def test_push_model_pushes_a_chosen_model_past_the_gate(first_run, tmp_path, capsys):
  config, _, _, summary = first_run
  serving_root = str(tmp_path / "serving")
  flags = ["--output_root", config.output_root, "--serving_root", serving_root,
           "--stage", RETRIEVAL, "--run_id", summary["run_id"]]
  assert push_model.main(flags) == 1  # without --yes: what it would do, nothing pushed
  shown = capsys.readouterr().out
  assert "WARNING: this push bypasses the blessing gate; the model was blessed" in shown
  assert f"{RETRIEVAL} model: {summary['model']}" in shown
  assert "popularity" in shown and "recall@100" in shown  # beside its baseline
  assert "nothing pushed: add --yes" in shown and not os.path.exists(serving_root)
  assert push_model.main(flags + ["--yes"]) == 0
  pushed = capsys.readouterr().out.strip().splitlines()[-1]
  version = [v for v in os.listdir(os.path.join(serving_root, RETRIEVAL)) if v.isdigit()]
  assert len(version) == 1
  assert pushed == (f"pushed {RETRIEVAL} version {version[0]} to "
                    f"{os.path.join(serving_root, RETRIEVAL)} (models.config refreshed)")
  model_dir = os.path.join(serving_root, RETRIEVAL, version[0])
  assert os.path.exists(os.path.join(model_dir, "saved_model.pb"))
  assert read_push_log(os.path.join(serving_root, RETRIEVAL)) == {summary["model"]: version[0]}
  models = read_models_config(os.path.join(serving_root, "models.config"))
  assert [m.name for m in models.model_config_list.config] == [RETRIEVAL]
  assert tf.saved_model.load(model_dir).signatures["serving_default"] is not None


def test_evaluation_has_baseline_and_slices(first_run):
  config, _, _, summary = first_run
  metrics = summary["evaluation"]["metrics"]
  assert set(metrics) == {"candidate", "popularity"}  # no blessed model yet on a fresh root
  overall = metrics["candidate"]["overall"]
  assert 0 < overall["recall@10"] <= overall["recall@50"] <= overall["recall@100"] <= 1
  assert overall["precision@10"] == pytest.approx(overall["recall@10"] / 10)
  # The eval split: eval_fraction of every user's interactions, rounded per user.
  interactions = sum(1 for _ in parsing.read_table(config.data_root, contract.INTERACTIONS))
  assert (0.9 * config.eval_fraction * interactions <= overall["example_count"]
          <= 1.5 * config.eval_fraction * interactions)
  slices = set(metrics["candidate"])
  assert {"gender=F", "gender=M"} <= slices
  assert any(s.startswith("activity_segment=") for s in slices)
  assert os.path.exists(summary["evaluation_report"])


def test_blessed_model_is_pushed_with_models_config(first_run):
  config, _, _, summary = first_run
  assert summary["blessed"] is True
  version_dir = summary["pushed_to"]
  assert os.path.dirname(version_dir) == os.path.join(config.serving_root, RETRIEVAL)
  assert os.path.basename(version_dir).isdigit()
  models = read_models_config(os.path.join(config.serving_root, "models.config"))
  assert sorted(m.name for m in models.model_config_list.config) == sorted(
      [RETRIEVAL, POPULARITY, ITEM_TO_ITEM, RANKER])


def test_validation_reports_are_written(first_run):
  config, _, _, summary = first_run
  reports = tf.io.gfile.glob(os.path.join(config.pipeline_root, "ValidationGate", "report", "*"))
  assert reports
  names = {"statistics.html", "anomalies.html", "anomalies.json", "drift.json"}
  assert names <= set(os.listdir(reports[0]))
  assert names <= set(os.listdir(os.path.join(config.runs_dir, summary["run_id"])))


def _user_history(slice_root, user_id, length=20):
  rows = [row for path in parsing.list_table_files(slice_root, contract.INTERACTIONS)
          for row in parsing.read_file_rows(path, contract.INTERACTIONS)
          if row["user_id"] == user_id]
  rows.sort(key=lambda r: (-r["timestamp"], r["item_id"]))
  return [r["item_id"] for r in rows[:length]]


def test_pushed_model_answers_through_its_serving_signature(first_run, slice_root):
  _, _, _, summary = first_run
  model = tf.saved_model.load(summary["pushed_to"])
  history = _user_history(slice_root, "1")
  out = model.signatures["serving_default"](
      user_id=tf.constant(["1", "unknown-user"]),
      history=tf.constant([history, [""] * len(history)]),
      age=tf.constant([24, 0], tf.int64), gender=tf.constant(["M", ""]),
      occupation=tf.constant(["technician", ""]))
  ids = out["item_ids"].numpy().astype(str)
  scores = out["scores"].numpy()
  assert ids.shape == (2, 100)
  assert not set(ids[0]) & set(history)  # already-seen items are excluded
  assert np.all(np.diff(scores, axis=1) <= 1e-6)
  assert len(set(ids[1])) == 100  # a cold user still gets an answer
  embedding = model.signatures["query_embedding"](
      user_id=tf.constant(["1"]), history=tf.constant([history]), age=tf.constant([24], tf.int64),
      gender=tf.constant(["M"]), occupation=tf.constant(["technician"]))["embedding"].numpy()
  assert np.linalg.norm(embedding, axis=1) == pytest.approx(1.0, abs=1e-4)
  catalog = {row["item_id"]: row for path in parsing.list_table_files(slice_root, contract.ITEMS)
             for row in parsing.read_file_rows(path, contract.ITEMS)}
  items = model.signatures["item_embeddings"](**signature.as_tensors(signature.item_inputs(
      [catalog["1"], catalog["50"]])))["embedding"].numpy()
  assert items.shape == (2, embedding.shape[1])
  # The recommend signature is the query embedding against the catalog's item embeddings.
  star_wars_score = float(embedding[0] @ items[1])
  if "50" in ids[0]:
    assert scores[0][list(ids[0]).index("50")] == pytest.approx(star_wars_score, abs=1e-4)


def test_rerun_on_unchanged_data_is_cached(first_run):
  config, _, _, _ = first_run
  summary = local_runner.run(config)
  assert summary["status"] == "succeeded"
  assert {"InteractionExampleGen", "StatisticsGen", "Transform", "Trainer",
          "PopularityBaseline"} <= set(summary["cached_components"])


def test_new_data_trains_and_pushes_a_new_version(first_run, slice_root, tmp_path):
  config, _, _, first = first_run
  data_root = str(tmp_path / "data")
  shutil.copytree(slice_root, data_root)
  with open(os.path.join(data_root, "interactions", "feedback.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    # "device" is no column of the contract: it is dropped when read, never a failure (README)
    writer.writerow(["user_id", "item_id", "event", "rating", "timestamp", "device"])
    writer.writerows([("1", "50", "click", "", 893286700, "phone"),
                      ("2", "100", "rating", "4", 893286700, "tv")])
  config = pipeline_config(os.path.dirname(config.output_root), data_root, warm_start=True)
  summary = local_runner.run(config)
  assert summary["status"] == "succeeded", summary.get("error")
  assert "Trainer" not in summary["cached_components"]
  assert "last_blessed" in summary["evaluation"]["metrics"]
  assert summary["pushed_to"] and summary["pushed_to"] != first["pushed_to"]
  versions = [name for name in os.listdir(os.path.join(config.serving_root, RETRIEVAL))
              if name.isdigit()]
  assert len(versions) == 2
  # Both trainers started from the first run's blessed models.
  with open(os.path.join(summary["model"], TRAINING_REPORT)) as f:
    assert json.load(f)["warm_start"]["warm"] is True
  with open(os.path.join(summary[RANKER]["model"], TRAINING_RECORD)) as f:
    assert json.load(f)["warm_start"] == {"warm": True, "base": first[RANKER]["model"],
                                          "members": len(RANKER_SETTINGS["scorers"])}


def _corrupt_ratings(data_root):
  path = os.path.join(data_root, "interactions", "ratings.csv")
  with open(path) as f:
    rows = list(csv.reader(f))
  rows[5][3] = "7"  # rating out of the 0.5-5 scale
  rows[9][2] = "like"  # an event type the schema does not know
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows(rows)
  return path


def test_anomalous_data_stops_before_training_and_pushes_nothing(slice_root, tmp_path):
  data_root = str(tmp_path / "data")
  shutil.copytree(slice_root, data_root)
  ratings_file = _corrupt_ratings(data_root)
  config = pipeline_config(str(tmp_path), data_root)
  summary = local_runner.run(config)
  assert summary["status"] == "failed"
  error = summary["error"]
  assert "DataValidationError" in error
  assert "rating" in error and "event" in error and ratings_file in error
  # The out-of-scale rating's row, by line (the header is line 1).
  assert f"{ratings_file}:6: column 'rating' value 7" in error and "[0.5, 5]" in error
  for component in ("Transform", "Trainer", "RetrievalEvaluator", "retrieval_pusher"):
    assert not os.path.exists(os.path.join(config.pipeline_root, component)), component
  assert not os.path.exists(config.serving_root)
  # The reports outlive the failure (TFX deleted the gate's own output), and the error names them.
  run_dir = os.path.join(config.runs_dir, summary["run_id"])
  assert f"(report: {os.path.join(run_dir, 'anomalies.html')})" in error
  with open(os.path.join(run_dir, "anomalies.json")) as f:
    found = {item["feature"] for items in json.load(f).values() for item in items}
  assert {"rating", "event"} <= found
  assert os.path.exists(os.path.join(run_dir, "statistics.html"))
  # The run page of a failed run: the error, then the anomalies and the statistics.
  with open(summary["page"]) as f:
    page = f.read()
  assert "DataValidationError" in page and "<h3>Anomalies</h3><table>" in page
  assert "<h3>Statistics</h3>" in page


def test_exported_model_uses_only_core_tensorflow_ops(first_run):
  """Stock TF Serving has TF's core ops (and TF Text's), not ScaNN's or other custom ops."""
  from tensorflow.python.framework import op_def_registry
  _, _, _, summary = first_run
  ops = graph_ops(summary["pushed_to"])
  unknown = sorted(op for op in ops if op_def_registry.get(op) is None)
  assert not unknown, unknown
  assert not any("scann" in op.lower() for op in ops)
