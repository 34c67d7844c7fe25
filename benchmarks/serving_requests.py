"""Bad requests for every serving API, generated from a seed, each with what a clear refusal of
it looks like: the gRPC status and words of the message that name the field at fault. The fuzz
test (tests/test_serving_fuzz.py) and the soak benchmark (benchmarks/serving_soak.py) send them.

Each case corrupts one field of a good request (so exactly that field must be named) with a
random value of a kind the field must refuse: too long, control characters, out of range, not
finite, unknown, or not what the request it refers to showed.
"""
from __future__ import annotations

import dataclasses
import json
import random
import string
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
from google.protobuf.message import Message
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_management_pb2, predict_pb2)
from tensorflow_serving.config import model_server_config_pb2

from serving import limits
from serving.batching import BatchingParameters
from serving.protos import recommender_pb2 as pb
from trainer.retrieval import signature

HTTP_PATHS = {"Recommend": "/v1/recommend", "Search": "/v1/search", "Feedback": "/v1/feedback"}
INVALID = "INVALID_ARGUMENT"
# A corruption changes one field of a request and returns (status, words of the refusal).
Corruption = Callable[[], Tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class Case:
  """A request and the refusal it must get."""
  api: str
  request: Message
  code: str  # grpc.StatusCode name
  words: str  # in the error message


@dataclasses.dataclass(frozen=True)
class Shown:
  """A request the server issued, which feedback cases refer to, and a catalog item it did not
  show."""
  request_id: str
  user_id: str
  items: Sequence[str]  # in shown order
  propensities: Sequence[float]
  not_shown: str


@dataclasses.dataclass(frozen=True)
class BodyCase:
  """A raw HTTP body (and Content-Type) and the refusal it must get."""
  path: str
  body: bytes
  content_type: str
  status: int
  words: str


def _text(rng: random.Random, length: int) -> str:
  """Printable text, some of it outside ASCII."""
  alphabet = string.ascii_letters + string.digits + " -_.:/é東🎬"
  return "".join(rng.choice(alphabet) for _ in range(length))


def _with_control(rng: random.Random, text: str) -> str:
  index = rng.randrange(len(text) + 1)
  return text[:index] + chr(rng.choice([0, 7, 10, 13, 27, 127, 0x85])) + text[index:]


def _too_long(rng: random.Random, limit: int) -> str:
  return _text(rng, rng.randint(limit + 1, limit * 4))


def _setter(message: Message, field: str, value: object, words: str,
            code: str = INVALID) -> Corruption:
  def apply() -> Tuple[str, str]:
    setattr(message, field, value)
    return code, words
  return apply


def _bad_k(rng: random.Random) -> int:
  return rng.choice([rng.randint(-2 ** 31, 0), rng.randint(limits.MAX_K + 1, 2 ** 31 - 1)])


def _user_corruptions(rng: random.Random, user: pb.UserContext) -> List[Corruption]:
  index = rng.randint(0, 20)

  def history(value: str, words: str) -> Corruption:
    def apply() -> Tuple[str, str]:
      user.history.extend([str(rng.randint(1, 1682)) for _ in range(index)] + [value])
      return INVALID, words
    return apply

  def too_many() -> Tuple[str, str]:
    user.history.extend(["1"] * rng.randint(limits.MAX_HISTORY_ITEMS + 1, 600))
    return INVALID, "user.history has more than"

  age = rng.choice([rng.randint(-10 ** 12, -1), rng.randint(limits.MAX_AGE + 1, 10 ** 12)])
  return [
      _setter(user, "user_id", _too_long(rng, limits.MAX_ID_CHARS), "user.user_id is longer"),
      _setter(user, "user_id", _with_control(rng, "u1"), "user.user_id contains control"),
      history(_too_long(rng, limits.MAX_ID_CHARS), f"user.history[{index}] is longer"),
      history(_with_control(rng, "50"), f"user.history[{index}] contains control"),
      too_many,
      _setter(user, "age", age, f"user.age {age} is outside"),
      _setter(user, "gender", _too_long(rng, limits.MAX_PROFILE_CHARS), "user.gender is longer"),
      _setter(user, "occupation", _with_control(rng, "writer"),
              "user.occupation contains control"),
  ]


def _request_id_corruptions(rng: random.Random, request: Message) -> List[Corruption]:
  return [_setter(request, "request_id", _too_long(rng, limits.MAX_REQUEST_ID_CHARS),
                  "request_id is longer"),
          _setter(request, "request_id", _with_control(rng, "req"), "request_id contains control")]


def recommend_case(rng: random.Random) -> Case:
  request = pb.RecommendRequest(user=pb.UserContext(user_id=str(rng.randint(1, 943))), k=5)
  corruptions = _user_corruptions(rng, request.user) + _request_id_corruptions(rng, request) + [
      _setter(request, "k", _bad_k(rng), "k must be between"),
      _setter(request.user, "user_id", " " * rng.randint(0, 5), "user.user_id is required")]
  return Case("Recommend", request, *rng.choice(corruptions)())


def search_case(rng: random.Random) -> Case:
  request = pb.SearchRequest(query="star wars", k=5,
                             user=pb.UserContext(user_id=str(rng.randint(1, 943))))
  corruptions = _user_corruptions(rng, request.user) + _request_id_corruptions(rng, request) + [
      _setter(request, "query", " " * rng.randint(0, limits.MAX_QUERY_CHARS), "query is empty"),
      _setter(request, "query", _too_long(rng, limits.MAX_QUERY_CHARS), "query is longer"),
      _setter(request, "query", _with_control(rng, "star wars"), "query contains control"),
      _setter(request, "k", _bad_k(rng), "k must be between")]
  return Case("Search", request, *rng.choice(corruptions)())


def feedback_case(rng: random.Random, shown: Shown) -> Case:
  index = rng.randrange(len(shown.items))
  request = pb.FeedbackRequest(request_id=shown.request_id, user_id=shown.user_id,
                               item_id=shown.items[index], event="click")
  other = rng.choice([p for p in range(1, limits.MAX_K + 1) if p != index + 1])
  position = rng.choice([rng.randint(-2 ** 31, -1), rng.randint(limits.MAX_K + 1, 2 ** 31 - 1)])
  propensity = rng.choice([float("nan"), float("inf"), -rng.random() - 1e-3,
                           1.0 + rng.random() + 1e-3])

  def rating() -> Tuple[str, str]:
    request.event, request.rating = "rating", rng.choice([0.5, 5.5, -3.0, 1e9])
    return INVALID, "is outside 1..5"

  corruptions = [
      _setter(request, "request_id", "", "request_id is required"),
      _setter(request, "request_id", f"{rng.getrandbits(128):032x}",
              "was not issued by this server", "NOT_FOUND"),
      _setter(request, "item_id", "", "item_id is required"),
      _setter(request, "item_id", _too_long(rng, limits.MAX_ID_CHARS), "item_id is longer"),
      _setter(request, "item_id", f"zz-{rng.randint(0, 10 ** 6)}", "is unknown"),
      _setter(request, "item_id", shown.not_shown, "was not shown in request"),
      _setter(request, "event", rng.choice(["like", "share", "", "CLICK", _text(rng, 8)]),
              "is not one of"),
      _setter(request, "event", "impression", "impressions are logged by the server"),
      _setter(request, "position", position, "position must be within"),
      _setter(request, "position", other, f"position {other} does not match"),
      _setter(request, "propensity", propensity, "propensity must be within"),
      _setter(request, "propensity", 0.5 if abs(shown.propensities[index] - 0.5) > 0.1 else 0.9,
              "does not match request"),
      _setter(request, "variant", _too_long(rng, limits.MAX_VARIANT_CHARS), "variant is longer"),
      _setter(request, "variant", "forged", "variant 'forged' does not match"),
      _setter(request, "user_id", _too_long(rng, limits.MAX_ID_CHARS), "user_id is longer"),
      _setter(request, "user_id", f"someone-{rng.randint(0, 999)}", "does not match request"),
      _setter(request, "rating", float("nan"), "rating must be a finite number"),
      rating,
  ] + _request_id_corruptions(rng, request)
  return Case("Feedback", request, *rng.choice(corruptions)())


def cascade_case(rng: random.Random, api: str, shown: Shown) -> Case:
  if api == "Recommend":
    return recommend_case(rng)
  if api == "Search":
    return search_case(rng)
  return feedback_case(rng, shown)


def body_case(rng: random.Random) -> BodyCase:
  """A body (or Content-Type) the HTTP gateway must refuse before it reaches the cascade."""
  path = rng.choice(list(HTTP_PATHS.values()))
  number = "position" if path == HTTP_PATHS["Feedback"] else "k"  # an integer field of it
  depth = rng.randint(limits.MAX_JSON_DEPTH + 1, 3000)
  cases = [
      (bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))) + b"\xff",
       "application/json", 400, "not UTF-8"),
      (rng.choice([b"null", b"1", b"-2.5", b'"text"', b"[]", b"[1, 2]", b"true"]),
       "application/json", 400, "must be a JSON object"),
      (b'{"k": 5, "user": {"user_id": "1"', "application/json", 400, "not valid JSON"),
      (b"[" * depth + b"]" * depth, "application/json", 400, f"nests {depth} levels deep"),
      (json.dumps({f"x{rng.randint(0, 10 ** 6)}": 1}).encode(), "application/json", 400,
       "has no field named"),
      (json.dumps({number: "x" + _text(rng, 5)}).encode(), "application/json", 400,
       f"Failed to parse {number} field"),
      (b"{}", rng.choice(["text/plain", "application/x-www-form-urlencoded", "json"]), 415,
       "Content-Type must be application/json"),
      (b" " * rng.randint(limits.MAX_BODY_BYTES + 1, 2 * limits.MAX_BODY_BYTES),
       "application/json", 413, "larger than the limit"),
  ]
  return BodyCase(path, *rng.choice(cases))


def retrieval_request() -> predict_pb2.PredictRequest:
  """A good Predict request for the retrieval model, from its own request builder."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "retrieval"
  features = {"user_id": "1", "history": ["1", "50"], "age": 30, "gender": "F",
              "occupation": "writer"}
  for name, value in signature.query_inputs([features]).items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
  return request


def _input_corruptions(rng: random.Random, request: predict_pb2.PredictRequest
                       ) -> List[Corruption]:
  name = rng.choice(sorted(request.inputs))
  proto = request.inputs[name]

  def retyped(dtype: int) -> Corruption:
    def apply() -> Tuple[str, str]:
      replacement = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=proto.tensor_shape)
      replacement.int64_val.extend([1] * int(np.prod([d.size for d in proto.tensor_shape.dim])))
      proto.CopyFrom(replacement)
      return INVALID, f"input {name!r} has dtype"
    return apply

  def claimed() -> Tuple[str, str]:  # a shape of up to 10^9 elements, with the values of one
    dims = [d.size for d in proto.tensor_shape.dim]
    dims[-1] = rng.randint(10 ** 6, 10 ** 9)
    proto.tensor_shape.ClearField("dim")
    for size in dims:
      proto.tensor_shape.dim.add(size=size)
    return INVALID, f"input {name!r}: shape"

  def negative() -> Tuple[str, str]:
    proto.tensor_shape.dim[0].size = -rng.randint(1, 10 ** 6)
    return INVALID, f"input {name!r} has size -"

  def extra_axis() -> Tuple[str, str]:
    proto.tensor_shape.dim.add(size=1)
    return INVALID, f"input {name!r} has rank"

  def missing() -> Tuple[str, str]:
    del request.inputs[name]
    return INVALID, f"missing [{name!r}]"

  def unknown() -> Tuple[str, str]:
    request.inputs[_text(rng, 8)].CopyFrom(tf.make_tensor_proto([1.0]))
    return INVALID, "inputs do not match the signature: unknown"

  rows = rng.randint(BatchingParameters.max_batch_size + 1, 3 * BatchingParameters.max_batch_size)

  def batch() -> Tuple[str, str]:
    for key, value in list(request.inputs.items()):
      request.inputs[key].CopyFrom(tf.make_tensor_proto(
          np.repeat(tf.make_ndarray(value), rows, axis=0)))
    return INVALID, f"Task size {rows} is larger than maximum input batch size"

  unknown_dtype = rng.choice([0, 24, 99, 150, 200, 10 ** 6])
  wrong_dtype = types_pb2.DT_INT64 if proto.dtype == types_pb2.DT_STRING else types_pb2.DT_STRING
  return [retyped(unknown_dtype), retyped(wrong_dtype), claimed, negative, extra_axis, missing,
          unknown, batch]


def _spec_corruptions(rng: random.Random, request: predict_pb2.PredictRequest
                      ) -> List[Corruption]:
  spec = request.model_spec
  model = f"m{rng.randint(0, 10 ** 6)}"
  version = rng.randint(1, 10 ** 6)
  label = f"l{rng.randint(0, 99)}"

  def versioned() -> Tuple[str, str]:
    spec.version.value = version
    return "NOT_FOUND", f"Servable not found for request: Specific(retrieval, {version})"

  def filtered() -> Tuple[str, str]:
    request.output_filter.append(_text(rng, 6))
    return INVALID, "output_filter names unknown outputs"

  return [_setter(spec, "name", model, f"Servable not found for request: Latest({model})",
                  "NOT_FOUND"),
          _setter(spec, "name", "", "ModelSpec has no name specified"),
          versioned,
          _setter(spec, "version_label", label, f"Unrecognized servable version label: {label}"),
          _setter(spec, "signature_name", _text(rng, 10), "Serving signature key"),
          filtered]


def predict_case(rng: random.Random) -> Case:
  request = retrieval_request()
  corruptions = _input_corruptions(rng, request) + _spec_corruptions(rng, request)
  return Case("Predict", request, *rng.choice(corruptions)())


def status_case(rng: random.Random) -> Case:
  request = get_model_status_pb2.GetModelStatusRequest()
  if rng.random() < 0.5:
    request.model_spec.name = f"m{rng.randint(0, 10 ** 6)}"
    return Case("GetModelStatus", request, "NOT_FOUND",
                f"Could not find any versions of model {request.model_spec.name}")
  request.model_spec.name = "retrieval"
  request.model_spec.version.value = rng.randint(1, 10 ** 6)
  return Case("GetModelStatus", request, "NOT_FOUND",
              f"Could not find version {request.model_spec.version.value} of model retrieval")


def metadata_case(rng: random.Random) -> Case:
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
  request.model_spec.name = "retrieval"
  if rng.random() < 0.5:
    request.metadata_field[:] = rng.choice([[], ["x"], ["signature_def", "y"]])
    return Case("GetModelMetadata", request, INVALID, "metadata_field")
  request.model_spec.name = f"m{rng.randint(0, 10 ** 6)}"
  return Case("GetModelMetadata", request, "NOT_FOUND", "Servable not found for request")


def reload_case(rng: random.Random) -> Case:
  config = model_server_config_pb2.ModelServerConfig()
  for _ in range(rng.randint(0, 3)):
    config.model_config_list.config.add(name=_text(rng, 5), model_platform="tensorflow",
                                        base_path=rng.choice(["/", "/etc", "../../..", "/tmp"]))
  return Case("HandleReloadConfigRequest",
              model_management_pb2.ReloadConfigRequest(config=config), "PERMISSION_DENIED",
              "--enable_admin_api")


MODEL_SERVER_CASES: Dict[str, Callable[[random.Random], Case]] = {
    "Predict": predict_case, "GetModelStatus": status_case, "GetModelMetadata": metadata_case,
    "HandleReloadConfigRequest": reload_case}
