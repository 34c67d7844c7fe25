"""BanditPolicyTrainer inside a real TFX pipeline (LocalDagRunner) on a MovieLens slice.

The retrieval model is the real one: ExampleGen, Transform and the project's Trainer (one short
epoch), then the bandit component and the serving-root Pusher. The same retrieval model then
serves a run on real-shaped feedback rows (impressions and clicks) to exercise the logged path.
"""
import csv
import shutil
import json
import os

import agents  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
from tfx import v1 as tfx
from tfx.orchestration import metadata

from agents.bandit_agents import AgentConfig
from pipeline.components.bandit_policy_trainer import BanditPolicyTrainer
from pipeline.data.parsing import read_table
from agents.policy_trainer import (REPORT_HTML, REPORT_JSON, BanditTrainerSettings,
                                   train_bandit_policy)
from agents.training import OffPolicySettings
from agents.validation import LogValidationError
from pipeline import pipeline_def
from pipeline.components.interaction_example_gen import SplitSettings, interaction_example_gen
from pipeline.data.examples import EVAL, TRAIN
from pipeline.components.artifacts import SERVING_MODEL_DIR
from pipeline.components.serving_pusher import serving_root_pusher
from serving.models_config import read_models_config
from pipeline.data.contract import CURATED_SCHEMA
from pipeline.data import contract
from pipeline.data.movielens import convert_movielens_100k
from pipeline.reports import stage_sections

SLICE_USERS = 60
MODEL_NAME = "bandit_policy"


def _components(data_root, serving_root):
  example_gen = interaction_example_gen(data_root, SplitSettings(eval_fraction=0.2))
  schema_gen = tfx.components.ImportSchemaGen(schema_file=CURATED_SCHEMA)
  transform = tfx.components.Transform(
      examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
      preprocessing_fn=pipeline_def.PREPROCESSING_FN,
      splits_config=tfx.proto.SplitsConfig(analyze=[TRAIN], transform=[TRAIN, EVAL]))
  trainer = tfx.components.Trainer(
      run_fn=pipeline_def.RETRIEVAL_RUN_FN,
      examples=transform.outputs["transformed_examples"],
      transform_graph=transform.outputs["transform_graph"], schema=schema_gen.outputs["schema"],
      train_args=tfx.proto.TrainArgs(splits=[TRAIN]), eval_args=tfx.proto.EvalArgs(splits=[EVAL]),
      custom_config={"epochs": 1, "batch_size": 256})
  bandit = BanditPolicyTrainer(
      examples=example_gen.outputs["examples"], retrieval_model=trainer.outputs["model"],
      data_root=data_root, slate_size=3, max_candidates=10, min_positive_rewards=20,
      tolerance=1.0, n_bootstrap=200)
  pusher = serving_root_pusher(bandit.outputs["model"], bandit.outputs["blessing"], serving_root,
                               MODEL_NAME)
  return [example_gen, schema_gen, transform, trainer, bandit, pusher]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("bandit_pipeline")
  data_root, serving_root = str(tmp / "data"), str(tmp / "serving")
  convert_movielens_100k(data_root, max_users=SLICE_USERS)
  pipeline_root = str(tmp / "pipeline_root")
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name="bandit_test", pipeline_root=pipeline_root,
      components=_components(data_root, serving_root), enable_cache=False,
      metadata_connection_config=metadata.sqlite_metadata_connection_config(
          str(tmp / "metadata.sqlite")),
      beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"]))
  return {"data_root": data_root, "serving_root": serving_root, "pipeline_root": pipeline_root,
          "tmp": tmp}


def _single(pipeline_root, component, output):
  (uri,) = tf.io.gfile.glob(os.path.join(pipeline_root, component, output, "*"))
  return uri


def test_component_reports_simulated_ope_and_pushes_the_blessed_policy(run):
  report_dir = _single(run["pipeline_root"], "BanditPolicyTrainer", "evaluation")
  with open(os.path.join(report_dir, REPORT_JSON)) as f:
    report = json.load(f)
  assert report["data"]["simulated"] is True
  assert "simulated" in report["data"]["description"]
  with open(os.path.join(report_dir, REPORT_HTML)) as f:
    assert "SIMULATED DATA" in f.read()
  ope = report["ope"]
  assert set(ope["estimators"]) == {"ips", "snips", "dr"}
  for value in ope["estimators"].values():
    assert value["lower"] <= value["value"] <= value["upper"]
    assert value["lift"]["lower"] <= value["lift"]["value"] <= value["lift"]["upper"]
  assert 0 < ope["logging"]["value"] < 1
  assert ope["n_positive_rewards"] >= 20
  truth = report["simulated_truth"]
  assert 0 < truth["logging"] < 1
  assert report["blessing"]["blessed"] is True  # tolerance=1.0: any estimate passes


def test_run_page_shows_each_estimate_with_its_interval(run):
  report_dir = _single(run["pipeline_root"], "BanditPolicyTrainer", "evaluation")
  with open(os.path.join(report_dir, REPORT_JSON)) as f:
    report = json.load(f)
  section = stage_sections.section(pipeline_def.BANDIT_STAGE, {
      "evaluation": report, "evaluation_report": os.path.join(report_dir, REPORT_HTML),
      "blessed": True, "pushed_to": run["serving_root"]})
  for value in [report["ope"]["logging"], *report["ope"]["estimators"].values()]:
    assert f"{value['value']:.5f} [{value['lower']:.5f}, {value['upper']:.5f}]" in section
  lift = report["ope"]["estimators"]["dr"]["lift"]
  assert f"{lift['value']:.5f} [{lift['lower']:.5f}, {lift['upper']:.5f}]" in section
  assert "SIMULATED log" in section and section.count("data:image/png;base64,") == 2
  blessing_dir = _single(run["pipeline_root"], "BanditPolicyTrainer", "blessing")
  assert os.path.exists(os.path.join(blessing_dir, "BLESSED"))
  (version,) = [v for v in os.listdir(os.path.join(run["serving_root"], MODEL_NAME)) if v.isdigit()]
  config = read_models_config(os.path.join(run["serving_root"], "models.config"))
  assert [m.name for m in config.model_config_list.config] == [MODEL_NAME]
  pushed = tf.saved_model.load(os.path.join(run["serving_root"], MODEL_NAME, version))
  assert set(pushed.signatures) == {"serving_default", "position_probabilities"}


# --- The logged-feedback path, on the retrieval model the pipeline trained --------------------

FEEDBACK_HEADER = ("user_id", "item_id", "event", "timestamp", "request_id", "position",
                   "propensity", "variant")


def _feedback_root(run, name, extra_rows=()):
  """A copy of the slice with a feedback log: uniform-random slates of 3 out of 20 items."""
  root = str(run["tmp"] / name)
  shutil.copytree(run["data_root"], root)
  items = sorted(read_table(root, contract.ITEMS), key=lambda r: int(r["item_id"]))[:20]
  rng = np.random.default_rng(5)
  rows = []
  for user in range(1, SLICE_USERS + 1):
    for k in range(4):
      request_id, timestamp = f"req-{user}-{k}", 2_000_000_000 + 60 * k
      for position, index in enumerate(rng.permutation(len(items))[:3], start=1):
        item = items[index]["item_id"]
        rows.append((str(user), item, "impression", timestamp, request_id, position, 3 / 60, "A"))
        if rng.random() < 0.15:
          rows.append((str(user), item, "click", timestamp + 5, request_id, "", "", "A"))
  rows += list(extra_rows)
  with open(os.path.join(root, contract.INTERACTIONS, "feedback.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(FEEDBACK_HEADER)
    writer.writerows(rows)
  return root


def _train_on(run, data_root, tmp_name, **settings):
  examples = _single(run["pipeline_root"], "InteractionExampleGen", "examples")
  retrieval = os.path.join(_single(run["pipeline_root"], "Trainer", "model"), SERVING_MODEL_DIR)
  out = run["tmp"] / tmp_name
  defaults = dict(agent=AgentConfig(name="neural_epsilon_greedy"),
                  training=OffPolicySettings(n_bootstrap=200), max_candidates=10)
  return train_bandit_policy(examples, retrieval, data_root,
                             BanditTrainerSettings(**{**defaults, **settings}),
                             str(out / "policy"), str(out / "report")), out


def test_logged_feedback_trains_but_too_few_clicks_do_not_bless(run):
  report, out = _train_on(run, _feedback_root(run, "feedback_ok"), "logged")
  data = report["data"]
  assert data["simulated"] is False and "simulated_truth" not in report
  assert data["rows"] == SLICE_USERS * 4 * 3 and data["validation_problems"] == {}
  assert "0 positive events with a request_id match no impression" in data["description"]
  assert report["blessing"]["blessed"] is False
  assert "too few logged rewards" in report["blessing"]["reason"]
  assert report["ope"]["n_positive_rewards"] < 100
  policy = tf.saved_model.load(str(out / "policy"))
  assert "serving_default" in policy.signatures


BAD_ROWS = [("1", "1", "impression", 2_100_000_000, "bad-1", 1, "", "A"),       # no propensity
            ("1", "2", "impression", 2_100_000_000, "bad-1", 2, 0, "A"),        # zero
            ("1", "99999", "impression", 2_100_000_000, "bad-1", 3, 0.05, "A"),  # unknown item
            ("2", "3", "click", 2_100_000_000, "no-such-request", "", "", "A")]


def test_bad_feedback_is_rejected_naming_fields_and_counts(run):
  root = _feedback_root(run, "feedback_bad", BAD_ROWS)
  with pytest.raises(LogValidationError) as error:
    _train_on(run, root, "rejected")
  message = str(error.value)
  total = SLICE_USERS * 4 * 3 + 3
  for expected in (f"propensity: missing in 1 of {total} rows",
                   f"propensity: zero or negative in 1 of {total} rows",
                   f"item_id: not in the catalog in 1 of {total} rows"):
    assert expected in message


def test_bad_feedback_can_be_skipped_and_counted(run):
  root = _feedback_root(run, "feedback_skip", BAD_ROWS)
  report, _ = _train_on(run, root, "skipped", invalid_rows="skip")
  data = report["data"]
  assert data["validation_problems"] == {"propensity: missing": 1,
                                         "propensity: zero or negative": 1,
                                         "item_id: not in the catalog": 1}
  assert data["rows"] == SLICE_USERS * 4 * 3
  assert "1 positive events with a request_id match no impression" in data["description"]
