"""Hostile input at scale (issue 9, "Also"): a few hundred generated bad requests per API, over
the cascade's gRPC and HTTP and the model server's gRPC, from a fixed seed. Every answer must be
a clear error (the right status, a message naming the field), the server must answer a good
request afterwards, and its memory must stay bounded. The cases: benchmarks/serving_requests.py;
the server: the session's `serving_stack` (its own process)."""
import http.client
import json
import random

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from benchmarks.serving_requests import (HTTP_PATHS, MODEL_SERVER_CASES, Shown, body_case,
                                         cascade_case, retrieval_request)
from serving.context_store import Catalog
from serving.http_gateway import HTTP_STATUS
from serving.protos import recommender_pb2 as pb
from serving.protos import recommender_pb2_grpc

CASES_PER_API = 200
SEED = 9
MAX_RSS_GROWTH = 100 << 20


def _shown(stack, stub) -> Shown:
  response = stub.Recommend(pb.RecommendRequest(user=pb.UserContext(user_id="42"), k=5),
                            timeout=60)
  items = [i.item_id for i in response.items]
  not_shown = next(i for i in sorted(Catalog(stack.data_root).items) if i not in items)
  return Shown(response.request_id, "42", items, [i.propensity for i in response.items],
               not_shown)


def _check_memory(stack, before: int) -> None:
  growth = stack.process.rss() - before
  print(f"server RSS {before / 2**20:.0f} MB -> {(before + growth) / 2**20:.0f} MB")
  assert growth < MAX_RSS_GROWTH, f"the server grew {growth / 2**20:.0f} MB"


def test_the_cascade_grpc_api_refuses_fuzzed_requests_clearly(serving_stack):
  rng = random.Random(SEED)
  stub = recommender_pb2_grpc.RecommenderStub(grpc.insecure_channel(serving_stack.process.grpc))
  shown = _shown(serving_stack, stub)
  before = serving_stack.process.rss()
  for api in HTTP_PATHS:
    for _ in range(CASES_PER_API):
      case = cascade_case(rng, api, shown)
      try:
        getattr(stub, api)(case.request, timeout=30)
        raise AssertionError(f"accepted: {case}")
      except grpc.RpcError as error:
        assert (error.code().name, case.words in error.details()) == (case.code, True), (
            case, error.details())
  assert len(stub.Recommend(pb.RecommendRequest(user=pb.UserContext(user_id="1"), k=3),
                            timeout=60).items) == 3
  _check_memory(serving_stack, before)


def test_the_cascade_http_api_refuses_fuzzed_requests_clearly(serving_stack):
  rng = random.Random(SEED + 1)
  stub = recommender_pb2_grpc.RecommenderStub(grpc.insecure_channel(serving_stack.process.grpc))
  shown = _shown(serving_stack, stub)
  host, port = serving_stack.process.http.removeprefix("http://").rsplit(":", 1)
  connection = http.client.HTTPConnection(host, int(port), timeout=30)

  def post(path, body, content_type="application/json"):
    connection.request("POST", path, body, {"Content-Type": content_type})
    answer = connection.getresponse()
    return answer.status, json.loads(answer.read())

  before = serving_stack.process.rss()
  try:
    for api, path in HTTP_PATHS.items():
      for _ in range(CASES_PER_API):
        case = cascade_case(rng, api, shown)
        body = json.dumps(json_format.MessageToDict(case.request,
                                                    preserving_proto_field_name=True))
        status, answer = post(path, body.encode())
        assert (status, case.words in answer["error"], answer["code"]) == (
            HTTP_STATUS[case.code], True, case.code), (case, answer)
    for _ in range(CASES_PER_API):
      case = body_case(rng)
      status, answer = post(case.path, case.body, case.content_type)
      assert (status, case.words in answer["error"]) == (case.status, True), (case.words, answer)
      if status == 413:  # refused bodies close the connection
        connection.close()
    assert post("/v1/recommend", b'{"user": {"user_id": "1"}, "k": 3}')[0] == 200
  finally:
    connection.close()
  _check_memory(serving_stack, before)


def test_the_model_server_refuses_fuzzed_requests_clearly(serving_stack):
  rng = random.Random(SEED + 2)
  channel = grpc.insecure_channel(serving_stack.process.model_server)
  stubs = {"Predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
           "GetModelMetadata": prediction_service_pb2_grpc.PredictionServiceStub(channel),
           "GetModelStatus": model_service_pb2_grpc.ModelServiceStub(channel),
           "HandleReloadConfigRequest": model_service_pb2_grpc.ModelServiceStub(channel)}
  before = serving_stack.process.rss()
  for api, make in MODEL_SERVER_CASES.items():
    for _ in range(CASES_PER_API):
      case = make(rng)
      try:
        getattr(stubs[api], api)(case.request, timeout=30)
        raise AssertionError(f"accepted: {case.api} {case.words}")
      except grpc.RpcError as error:
        assert (error.code().name, case.words in error.details()) == (case.code, True), (
            case.words, error.details())
  assert stubs["Predict"].Predict(retrieval_request(), timeout=30).outputs["item_ids"]
  _check_memory(serving_stack, before)
