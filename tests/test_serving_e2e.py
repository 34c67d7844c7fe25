"""Pipeline-pushed models -> local model server -> official TF Serving stubs -> cascade ->
feedback log -> read back by the pipeline's own ingestion."""
import json
import os
import shutil
import time
import urllib.error
import urllib.request

import apache_beam as beam
import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from pipeline.components.interaction_example_gen import JoinInteractions, SplitSettings
from pipeline.data.examples import EVAL, TRAIN
from pipeline.components.serving_pusher import refresh_models_config
from pipeline.ab_report import count_feedback, report
from serving.experiment import Experiment
from serving.protos import recommender_pb2 as pb
from serving.protos import recommender_pb2_grpc
from serving.serve import LocalStack


@pytest.fixture(scope="module")
def stack(first_run, slice_root, tmp_path_factory):
  """The pushed model in a serving root of its own (other tests push into the run's root)."""
  _, _, _, summary = first_run
  assert summary["pushed_to"], "the pipeline run pushed nothing"
  work = tmp_path_factory.mktemp("serving")
  data_root = str(work / "data")
  shutil.copytree(slice_root, data_root)
  version = os.path.basename(summary["pushed_to"])
  serving_root = str(work / "serving")
  shutil.copytree(summary["pushed_to"], os.path.join(serving_root, "retrieval", version))
  refresh_models_config(serving_root)
  experiment = Experiment.from_json(json.dumps({"experiment": "e2e", "variants": [
      {"name": "control", "weight": 0.5, "models": {"retrieval": version}},
      {"name": "treatment", "weight": 0.5}]}))
  stack = LocalStack(data_root, serving_root, experiment=experiment).start()
  stack.serving_root = serving_root
  yield stack, data_root, summary
  stack.stop()


def _recommender(stack):
  return recommender_pb2_grpc.RecommenderStub(grpc.insecure_channel(f"localhost:{stack.port}"))


def test_official_stubs_reach_the_pushed_model(stack):
  server, _, summary = stack
  channel = grpc.insecure_channel(f"localhost:{server.model_server.port}")
  predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
      get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "retrieval"}), timeout=10)
  assert [s.version for s in status.model_version_status] == [
      int(os.path.basename(summary["pushed_to"]))]
  metadata = predict.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
      model_spec={"name": "retrieval"}, metadata_field=["signature_def"]), timeout=10)
  signatures = get_model_metadata_pb2.SignatureDefMap()
  metadata.metadata["signature_def"].Unpack(signatures)
  assert {"serving_default", "query_embedding", "item_embeddings"} <= set(signatures.signature_def)
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "retrieval"
  for name, value in {"user_id": ["1"], "history": [["1", "2"]], "age": np.array([24]),
                      "gender": ["M"], "occupation": ["technician"]}.items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
  ids = tf.make_ndarray(predict.Predict(request, timeout=10).outputs["item_ids"])
  assert ids.shape == (1, 100) and b"1" not in ids[0] and b"2" not in ids[0]


def test_recommend_answers_with_per_stage_scores_and_logs_impressions(stack):
  server, _, _ = stack
  response = _recommender(server).Recommend(
      pb.RecommendRequest(user=pb.UserContext(user_id="1"), k=10), timeout=20)
  assert len(response.items) == 10 and not response.cold_start
  assert list(response.stages) == ["retrieval"]
  assert response.variant in ("control", "treatment")
  assert [i.position for i in response.items] == list(range(1, 11))
  assert all(i.propensity == 1.0 and i.title for i in response.items)
  scores = [i.retrieval_score for i in response.items]
  assert scores == sorted(scores, reverse=True)
  history = set(server.cascade._users.history("1"))  # pylint: disable=protected-access
  assert history and not history & {i.item_id for i in response.items}


def test_unknown_user_gets_a_cold_start_answer(stack):
  server, _, _ = stack
  response = _recommender(server).Recommend(
      pb.RecommendRequest(user=pb.UserContext(user_id="never-seen", age=30, gender="F"), k=5),
      timeout=20)
  assert response.cold_start and len(response.items) == 5


def test_search_finds_by_title(stack):
  server, _, _ = stack
  response = _recommender(server).Search(pb.SearchRequest(query="Star Wars", k=3), timeout=20)
  assert response.items[0].title == "Star Wars"
  personal = _recommender(server).Search(
      pb.SearchRequest(query="star", user=pb.UserContext(user_id="1"), k=3), timeout=20)
  assert "retrieval" in personal.stages


@pytest.mark.parametrize("request_, detail", [
    (pb.RecommendRequest(user=pb.UserContext(user_id="1"), k=0), "k must be"),
    (pb.RecommendRequest(user=pb.UserContext(user_id="1"), k=51), "k must be"),
    (pb.RecommendRequest(k=5), "user_id is required"),
    (pb.SearchRequest(query="   ", k=5), "query is empty"),
    (pb.SearchRequest(query="x" * 300, k=5), "longer than 256"),
    (pb.FeedbackRequest(request_id="r", item_id="1", event="like"), "event 'like'"),
    (pb.FeedbackRequest(request_id="r", item_id="no-such-item", event="click"), "unknown"),
])
def test_bad_requests_get_invalid_argument_and_the_server_keeps_serving(stack, request_, detail):
  server, _, _ = stack
  stub = _recommender(server)
  method = {pb.RecommendRequest: stub.Recommend, pb.SearchRequest: stub.Search,
            pb.FeedbackRequest: stub.Feedback}[type(request_)]
  with pytest.raises(grpc.RpcError) as error:
    method(request_, timeout=20)
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert detail in error.value.details()
  assert len(stub.Recommend(pb.RecommendRequest(user=pb.UserContext(user_id="2"), k=2),
                            timeout=20).items) == 2


def test_http_gateway_rejects_unknown_fields_and_answers_json(stack):
  server, _, _ = stack
  url = f"http://127.0.0.1:{server.http_port}/v1/recommend"

  def post(body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    return json.loads(urllib.request.urlopen(request, timeout=20).read())

  with pytest.raises(urllib.error.HTTPError) as error:
    post({"user": {"user_id": "1"}, "k": 2, "unknown_field": 1})
  assert error.value.code == 400
  assert len(post({"user": {"user_id": "1"}, "k": 2})["items"]) == 2


def test_feedback_is_read_back_by_the_pipeline_ingestion(stack, tmp_path):
  server, data_root, _ = stack
  stub = _recommender(server)
  shown = stub.Recommend(pb.RecommendRequest(user=pb.UserContext(user_id="3"), k=3), timeout=20)
  clicked = shown.items[1]
  stub.Feedback(pb.FeedbackRequest(request_id=shown.request_id, user_id="3",
                                   item_id=clicked.item_id, event="click", position=2,
                                   propensity=clicked.propensity, variant=shown.variant),
                timeout=20)
  assert server.cascade._users.history("3")[0] == clicked.item_id  # pylint: disable=protected-access
  server.feedback.close()  # hand the open file to the pipeline (rotation does this in service)
  out = str(tmp_path / "examples")
  with beam.Pipeline() as p:
    splits = p | JoinInteractions(data_root, SplitSettings(eval_fraction=0.1))
    for split in (TRAIN, EVAL):
      _ = splits[split] | f"Write{split}" >> beam.io.WriteToTFRecord(
          os.path.join(out, split), shard_name_template="")
  events = []
  for split in (TRAIN, EVAL):
    for record in tf.data.TFRecordDataset(os.path.join(out, split)):
      features = tf.train.Example.FromString(record.numpy()).features.feature
      if features["user_id"].bytes_list.value[0] == b"3":
        events.append((features["item_id"].bytes_list.value[0].decode(),
                       features["event"].bytes_list.value[0].decode()))
  assert (clicked.item_id, "click") in events
  assert not any(event == "impression" for _, event in events)  # shown is not liked


def test_ab_report_counts_impressions_and_clicks_per_variant(stack):
  server, data_root, _ = stack
  stub = _recommender(server)
  expected = {}
  for user in range(20, 60):
    response = stub.Recommend(pb.RecommendRequest(user=pb.UserContext(user_id=str(user)), k=2),
                              timeout=20)
    assert response.variant == server.cascade._experiment.route(str(user)).name  # pylint: disable=protected-access
    if user % 3 == 0:
      stub.Feedback(pb.FeedbackRequest(request_id=response.request_id, user_id=str(user),
                                       item_id=response.items[0].item_id, event="click",
                                       position=1, propensity=1.0, variant=response.variant),
                    timeout=20)
    entry = expected.setdefault(response.variant, [0, 0])
    entry[0] += 2
    entry[1] += user % 3 == 0
  server.feedback.close()
  counts = count_feedback(data_root)
  for variant, (impressions, clicks) in expected.items():
    assert counts[variant]["impressions"] >= impressions
    assert counts[variant]["clicks"] >= clicks
  rows = report(counts, control="control")
  assert {r["variant"] for r in rows} == set(counts)
  assert all(0 <= r["ctr_95_low"] <= r["ctr"] <= r["ctr_95_high"] <= 1 for r in rows)


def test_a_pushed_bandit_policy_chooses_the_slate_with_propensities(stack, first_run, slice_root,
                                                                     tmp_path):
  """Trains the policy on this run's retrieval model, pushes it beside it, and the running
  cascade starts using it without a restart."""
  from agents.policy_trainer import BanditTrainerSettings, train_bandit_policy  # pylint: disable=import-outside-toplevel
  server, _, summary = stack
  config = first_run[0]
  examples = min(tf.io.gfile.glob(os.path.join(  # the first run's examples
      config.pipeline_root, "InteractionExampleGen", "examples", "*")),
                 key=lambda path: int(os.path.basename(path)))
  export_dir = os.path.join(server.serving_root, "bandit", "1")
  train_bandit_policy(examples, summary["pushed_to"], slice_root, BanditTrainerSettings(),
                      export_dir, str(tmp_path / "report"))
  refresh_models_config(server.serving_root)
  stub = _recommender(server)
  deadline = time.time() + 30
  while "bandit" not in (response := stub.Recommend(
      pb.RecommendRequest(user=pb.UserContext(user_id="5"), k=6), timeout=30)).stages:
    assert time.time() < deadline, "the bandit policy was not picked up"
  assert response.model_versions["bandit"] == 1
  slate = [i.propensity for i in response.items[:3]]
  assert all(0 < p <= 1 for p in slate) and any(p < 1 for p in slate)
  assert [i.propensity for i in response.items[3:]] == [1.0] * 3
  assert len({i.item_id for i in response.items}) == 6


def test_the_cascade_takes_the_bandit_width_from_the_pushed_policy(stack, first_run, slice_root,
                                                                   tmp_path):
  """A policy exported for 8 candidates instead of 20 works without any serving change: the
  cascade reads the width from the signature and chooses among the top 8."""
  from agents.policy_trainer import BanditTrainerSettings, train_bandit_policy  # pylint: disable=import-outside-toplevel
  from agents.slate_policy import POLICY_SPEC_FILE  # pylint: disable=import-outside-toplevel
  server, _, summary = stack
  examples = min(tf.io.gfile.glob(os.path.join(
      first_run[0].pipeline_root, "InteractionExampleGen", "examples", "*")),
                 key=lambda path: int(os.path.basename(path)))
  export_dir = os.path.join(server.serving_root, "bandit", "2")
  train_bandit_policy(examples, summary["pushed_to"], slice_root,
                      BanditTrainerSettings(max_candidates=8), export_dir,
                      str(tmp_path / "report"))
  with open(os.path.join(export_dir, POLICY_SPEC_FILE)) as f:
    assert json.load(f)["max_candidates"] == 8
  stub = _recommender(server)
  deadline = time.time() + 30
  while (response := stub.Recommend(pb.RecommendRequest(user=pb.UserContext(user_id="5"), k=50),
                                    timeout=30)).model_versions["bandit"] != 2:
    assert time.time() < deadline, "bandit version 2 was not picked up"
  # The slate comes first, then the ranked rest: every slate item is among the top 8.
  eighth = sorted((i.retrieval_score for i in response.items), reverse=True)[7]
  assert all(i.retrieval_score >= eighth for i in response.items[:3])


def test_a_policy_for_other_features_is_refused_loudly(stack, tmp_path):
  """A bandit trained on other arm features (here the Open Bandit sample's) is never fed the
  retrieval model's: Recommend answers FAILED_PRECONDITION naming the widths, until a policy
  the cascade can feed replaces it."""
  from agents.bandit_agents import LINUCB, AgentConfig, score_field, scoring_policy  # pylint: disable=import-outside-toplevel
  from agents.open_bandit import load_open_bandit  # pylint: disable=import-outside-toplevel
  from agents.replay import train_from_logs  # pylint: disable=import-outside-toplevel
  from agents.slate_policy import SlatePolicy, export_slate_policy  # pylint: disable=import-outside-toplevel
  server, _, _ = stack
  log, _ = load_open_bandit()
  agent, _ = train_from_logs(AgentConfig(name=LINUCB), log, np.arange(200))
  foreign = os.path.join(server.serving_root, "bandit", "3")
  export_slate_policy(SlatePolicy(scoring_policy(agent), score_field(agent), 3, 0.1), foreign,
                      {"agent": LINUCB})
  stub = _recommender(server)
  request = pb.RecommendRequest(user=pb.UserContext(user_id="5"), k=5)
  deadline = time.time() + 30
  while True:
    try:
      stub.Recommend(request, timeout=30)
    except grpc.RpcError as error:
      assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
      assert "bandit version 3 takes arm features of width" in error.details()
      break
    assert time.time() < deadline, "the foreign policy was served or never loaded"
  shutil.copytree(os.path.join(server.serving_root, "bandit", "2"),
                  os.path.join(server.serving_root, "bandit", "4"))
  deadline = time.time() + 30
  while True:
    try:
      if stub.Recommend(request, timeout=30).model_versions["bandit"] == 4:
        break
    except grpc.RpcError:
      pass
    assert time.time() < deadline, "the cascade did not take the policy it can feed"
