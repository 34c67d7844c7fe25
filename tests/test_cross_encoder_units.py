"""Cross-encoder pieces without a model: group metrics, the synthetic search log, mining helpers,
the blessing rule and the stage config."""
import json
import math

import numpy as np
import pytest

from kubeflow.kubeflow_v2_runner import compile_pipeline
from pipeline.components.cross_encoder_evaluator import (CANDIDATE, RETRIEVAL_ORDER,
                                                         blessing_decision)
from pipeline.components.cross_encoder_miner import parse_interaction, stable_hash
from pipeline.components.interaction_example_gen import to_example
from pipeline.config import CrossEncoderStage, PipelineConfig
from pipeline.flags import config_from_args
from pipeline.runners import local_runner
from trainer.cross_encoder.metrics import group_metrics, mean_metrics
from trainer.cross_encoder.synthetic_search import SearchIntent, synthetic_intent
from transform import features as F

TOY_STORY = {"item_id": "1", "title": "Toy Story (1995)", "year": 1995,
             "categories": ["Animation", "Children's", "Comedy"]}
STAR_WARS = {"item_id": "50", "title": "Star Wars (1977)", "year": 1977,
             "categories": ["Action", "Adventure", "Romance", "Sci-Fi", "War"]}


def test_group_metrics_by_hand():
  # Relevant candidates at ranks 2 and 4 of 5.
  values = group_metrics(np.array([0, 1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.6, 0.5]))
  ideal = 1 + 1 / math.log2(3)
  assert values["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)
  assert values["mrr"] == pytest.approx(0.5)
  assert values["precision@1"] == 0 and values["precision@5"] == pytest.approx(2 / 5)
  assert values["recall@1"] == 0 and values["recall@5"] == 1.0
  assert group_metrics(np.array([0, 0]), np.array([1.0, 2.0])) is None


def test_group_metrics_cut_padded_scores_and_keep_candidate_order_on_ties():
  values = group_metrics(np.array([0.0, 1.0]), np.array([0.5, 0.5, -1e9, -1e9]))
  assert values["mrr"] == 0.5  # a tie keeps the group's (shuffled) order: no favour
  averaged = mean_metrics([(np.array([1.0, 0.0]), np.array([2.0, 1.0])),
                           (np.array([0.0, 1.0]), np.array([2.0, 1.0])),
                           (np.array([0.0, 0.0]), np.array([2.0, 1.0]))])
  assert averaged["mrr"] == pytest.approx(0.75) and averaged["group_count"] == 2


def test_synthetic_queries_are_answered_by_the_item_they_come_from():
  rng = np.random.default_rng(0)
  texts = set()
  for item in (TOY_STORY, STAR_WARS):
    for _ in range(30):
      intent = synthetic_intent(item, rng)
      assert intent.matches(item), intent
      texts.add(intent.text)
  assert len(texts) > 10  # several shapes and phrasings
  assert synthetic_intent({"title": "(1995)", "categories": []}, rng) is None


def test_search_intent_labels_come_from_metadata():
  comedy_90s = SearchIntent("comedy from the 1990s", genres=("comedy",), decade=1990)
  assert comedy_90s.matches(TOY_STORY) and not comedy_90s.matches(STAR_WARS)
  assert not comedy_90s.matches(dict(TOY_STORY, year=None))
  star = SearchIntent("star", title_word="star")
  assert star.matches(STAR_WARS) and not star.matches(TOY_STORY)
  assert not SearchIntent("1995", title_word="1995").matches(TOY_STORY)  # the year is no word


def test_parse_interaction_reads_the_example_gen_format():
  serialized = to_example({F.USER_ID: "7", F.ITEM_ID: "50", F.TIMESTAMP: 100, F.QUERY: None,
                           F.HISTORY: ["1", "2"], F.AGE: 30, F.GENDER: "F",
                           F.OCCUPATION: None, F.RATING: 4.0})
  parsed = parse_interaction(serialized)
  assert parsed == {F.USER_ID: "7", F.ITEM_ID: "50", F.TIMESTAMP: 100, F.QUERY: "",
                    F.HISTORY: ["1", "2"], F.AGE: 30, F.GENDER: "F", F.OCCUPATION: ""}
  assert stable_hash(1, "a") == stable_hash(1, "a") != stable_hash(2, "a")


def _metrics(candidate, baseline, kinds=("search",)):
  slices = lambda v: {"overall": {"ndcg@10": v}, **{  # noqa: E731
      f"query_kind={k}": {"ndcg@10": v} for k in kinds}}
  return {CANDIDATE: slices(candidate), RETRIEVAL_ORDER: slices(baseline)}


def test_blessing_needs_a_strict_win_in_every_gate_slice():
  assert blessing_decision(_metrics(0.3, 0.2), ["ndcg@10"], ["overall"])[0]
  assert not blessing_decision(_metrics(0.2, 0.2), ["ndcg@10"], ["overall"])[0]
  blessed, reasons = blessing_decision(_metrics(0.3, 0.2, kinds=("synthetic_search",)),
                                       ["ndcg@10"], ["overall", "query_kind=search"])
  assert not blessed and "query_kind=search: no evaluation groups: FAILED" in reasons


def test_default_gate_protects_every_query_kind():
  metrics = _metrics(0.5, 0.2, kinds=("search", "synthetic_search"))
  metrics[CANDIDATE]["query_kind=search"]["ndcg@10"] = 0.19  # a synthetic-only win
  blessed, reasons = blessing_decision(metrics, ["ndcg@10"],
                                       CrossEncoderStage().gate_slices.split(","))
  assert not blessed
  assert [r.split(" ")[0] for r in reasons] == [
      "overall", "query_kind=search", "query_kind=synthetic_search"]


def test_cross_encoder_stage_scales_the_sample():
  stage = CrossEncoderStage(training={"num_layers": 2}).scaled(0.1)
  assert (stage.train_groups, stage.validation_groups, stage.eval_groups) == (60, 6, 30)
  assert (stage.training == {"num_layers": 2}
          and stage.eval_depth == CrossEncoderStage().eval_depth)


def test_runner_flags_turn_the_cross_encoder_on_on_request_only():
  config = lambda *argv: config_from_args(local_runner.parse_args(list(argv)))  # noqa: E731
  assert config("--movielens").cross_encoder is None and config("--movielens").bandit
  assert config("--movielens", "--cross_encoder").cross_encoder == CrossEncoderStage()
  assert config("--data_root", "d").cross_encoder is None and not config("--data_root", "d").bandit
  stage = config("--data_root", "d", "--cross_encoder", "--cross_encoder_scale", "2",
                 "--cross_encoder_loss", "listwise", "--cross_encoder_lora_rank", "8",
                 "--cross_encoder_gate_slices", "overall,query_kind=search"
                 ).cross_encoder
  assert stage.train_groups == 2 * CrossEncoderStage().train_groups
  assert stage.training == {"loss": "listwise", "lora_rank": 8}
  assert stage.gate_slices == "overall,query_kind=search"


def test_pipeline_with_the_cross_encoder_compiles_for_kubeflow(tmp_path):
  config = PipelineConfig(data_root="gs://bucket/data", output_root="gs://bucket/out",
                          cross_encoder=CrossEncoderStage())
  with open(compile_pipeline(config, "gcr.io/project/recsys:1", str(tmp_path))) as f:
    spec = json.load(f)
  tasks = set(spec.get("pipelineSpec", spec)["root"]["dag"]["tasks"])
  assert {"Trainer", "CrossEncoderMiner", "CrossEncoderTrainer", "CrossEncoderEvaluator",
          "cross_encoder_pusher", "retrieval_pusher"} <= tasks
  assert "gs://bucket/out/serving/cross_encoder" in json.dumps(spec)
