"""The retrieve -> rank -> choose cascade behind the Recommend and Search APIs.

Works with whichever stages are pushed: retrieval is required; the ranker re-orders the
candidates when a `ranker` model is available; a `bandit` policy chooses the shown slate when
one is available, else the top-k are shown (propensity 1: a deterministic choice). Models are
reached only through TF Serving's gRPC API (`ModelClient`). Every answer is logged as
impressions to the feedback log, with its variant, position and propensity.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from typing import Dict, List, Optional

import grpc
import numpy as np

from agents.features import arm_features
from pipeline.data import contract
from serving.ab_testing import SINGLE_VARIANT, Experiment, Variant
from serving.context_store import (Catalog, UserStore, merge_history, user_features)
from serving.feedback_log import FeedbackLog, feedback_row
from serving.model_client import ModelClient
from serving.protos import recommender_pb2 as pb
from transform import features as F
from transform.ranker_text import user_context_text

log = logging.getLogger(__name__)
RETRIEVAL, RANKER, BANDIT = "retrieval", "ranker", "bandit"
MAX_K = 50
MAX_QUERY_CHARS = 256
MAX_ID_CHARS = 128


class CascadeError(Exception):
  """A request the cascade refuses or cannot answer; `code` is a grpc.StatusCode name."""

  def __init__(self, code: str, message: str):
    super().__init__(message)
    self.code = code


@dataclasses.dataclass(eq=False)
class Candidate:
  item_id: str
  retrieval_score: float = 0.0
  ranker_score: Optional[float] = None
  lexical_score: float = 0.0
  # Probability this item was put in its slot: the bandit's for the slots it chooses; 1 for a
  # deterministic (ranked) choice.
  propensity: float = 1.0


def _query_inputs(features: Dict[str, object]) -> Dict[str, np.ndarray]:
  """One request's raw query features as the retrieval model's signature tensors."""
  return {F.USER_ID: np.array([features[F.USER_ID]], dtype=object),
          F.HISTORY: np.array([features[F.HISTORY] or [""]], dtype=object),
          F.AGE: np.array([features[F.AGE]], np.int64),
          F.GENDER: np.array([features[F.GENDER]], dtype=object),
          F.OCCUPATION: np.array([features[F.OCCUPATION]], dtype=object)}


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise CascadeError("INVALID_ARGUMENT", message)


def validate_user(user: pb.UserContext, required: bool) -> None:
  _require(not required or bool(user.user_id.strip()), "user.user_id is required")
  _require(len(user.user_id) <= MAX_ID_CHARS, f"user.user_id is longer than {MAX_ID_CHARS}")
  _require(len(user.history) <= 200, "user.history has more than 200 items")
  _require(0 <= user.age <= 130, f"user.age {user.age} is outside 0..130")


def logged_user(user_id: str, request_id: str) -> str:
  """The user id written to the feedback log: anonymous traffic gets a per-request id, since
  the raw data contract requires one."""
  return user_id or f"anonymous-{request_id}"


def validate_k(k: int) -> None:
  _require(1 <= k <= MAX_K, f"k must be between 1 and {MAX_K}, got {k}")


class Cascade:
  """Recommend, Search and Feedback over a TF Serving endpoint."""

  def __init__(self, client: ModelClient, catalog: Catalog, users: UserStore,
               feedback: FeedbackLog, experiment: Experiment = SINGLE_VARIANT,
               retrieval_depth: int = 100, rerank_depth: int = 50, choose_depth: int = 20,
               stage_timeout_s: float = 2.0):
    self._client = client
    self._catalog = catalog
    self._users = users
    self._feedback = feedback
    self._experiment = experiment
    self._retrieval_depth = retrieval_depth
    self.rerank_depth = rerank_depth
    self.choose_depth = choose_depth  # candidates the bandit chooses among (its max_candidates)
    self._timeout = stage_timeout_s

  # --- stages --------------------------------------------------------------------------
  def _retrieve(self, features: Dict[str, object], variant: Variant,
                versions: Dict[str, int]) -> List[Candidate]:
    inputs = _query_inputs(features)
    try:
      out = self._client.predict(RETRIEVAL, inputs, version_label=variant.models.get(RETRIEVAL, ""),
                                 timeout_s=self._timeout)
    except grpc.RpcError as error:
      raise CascadeError("UNAVAILABLE", f"retrieval model: {error.details()}") from error
    versions[RETRIEVAL] = int(out["__version__"])
    ids, scores = out["item_ids"][0], out["scores"][0]
    # Excluded (already seen) items come back at the float minimum when the catalog is short.
    return [Candidate(i.decode(), float(s)) for i, s in zip(ids[:self._retrieval_depth],
                                                            scores[:self._retrieval_depth])
            if s > np.finfo(np.float32).min / 2]

  def _rank(self, query_text: str, candidates: List[Candidate], variant: Variant,
            versions: Dict[str, int]) -> bool:
    """Scores the first rerank_depth candidates with the ranker; False if it is not there."""
    if not candidates or not self._client.is_available(RANKER):
      return False
    head = candidates[:self.rerank_depth]
    inputs = {"query": np.array([query_text] * len(head), dtype=object),
              "item_text": np.array([self._catalog.text(c.item_id) for c in head], dtype=object)}
    try:
      out = self._client.predict(RANKER, inputs, version_label=variant.models.get(RANKER, ""),
                                 timeout_s=self._timeout)
    except grpc.RpcError as error:
      log.warning("ranker unavailable, serving the retrieval order: %s", error.details())
      return False
    versions[RANKER] = int(out["__version__"])
    for candidate, score in zip(head, out["scores"].reshape(-1)):
      candidate.ranker_score = float(score)
    candidates[:len(head)] = sorted(head, key=lambda c: -c.ranker_score)
    return True

  def _choose(self, features: Dict[str, object], candidates: List[Candidate], variant: Variant,
              versions: Dict[str, int]) -> Optional[List[Candidate]]:
    """The bandit's slate, with propensities, followed by the rest in ranked order; None if no
    policy is pushed (or it fails: then the ranked order is served)."""
    if not candidates or not self._client.is_available(BANDIT):
      return None
    head = candidates[:self.choose_depth]
    label = variant.models.get(RETRIEVAL, "")
    try:
      query = self._client.predict(RETRIEVAL, _query_inputs(features), "query_embedding", label,
                                   self._timeout)["embedding"]
      items = self._client.predict(RETRIEVAL, self._item_inputs(head), "item_embeddings", label,
                                   self._timeout)["embedding"]
      scores = np.array([[[c.retrieval_score] for c in head]], np.float32)
      out = self._client.predict(BANDIT, {
          "context": query.astype(np.float32),
          "arm_features": arm_features(items[np.newaxis], query, scores),
          "candidate_ids": np.array([[c.item_id for c in head]], dtype=object),
          "num_candidates": np.array([len(head)], np.int32)},
          version_label=variant.models.get(BANDIT, ""), timeout_s=self._timeout)
    except grpc.RpcError as error:
      log.warning("bandit policy unavailable, serving the ranked order: %s", error.details())
      return None
    versions[BANDIT] = int(out["__version__"])
    by_id = {c.item_id: c for c in candidates}
    chosen = []
    for item, propensity in zip(out["item_ids"][0], out["propensities"][0]):
      item = item.decode()
      if item in by_id and by_id[item] not in chosen:
        by_id[item].propensity = float(propensity)
        chosen.append(by_id[item])
    return chosen + [c for c in candidates if c not in chosen]

  def _item_inputs(self, candidates: List[Candidate]) -> Dict[str, np.ndarray]:
    rows = [self._catalog.items[c.item_id] for c in candidates]
    width = max([len(r["categories"]) for r in rows] + [1])
    return {F.ITEM_ID: np.array([c.item_id for c in candidates], dtype=object),
            F.TITLE: np.array([r["title"] for r in rows], dtype=object),
            F.CATEGORIES: np.array([list(r["categories"]) + [""] * (width - len(r["categories"]))
                                    for r in rows], dtype=object),
            F.YEAR: np.array([r["year"] or 0 for r in rows], np.int64)}

  def _answer(self, request_id: str, user_id: str, variant: Variant, candidates: List[Candidate],
              k: int, stages: List[str], versions: Dict[str, int], cold_start: bool
              ) -> pb.RecommendResponse:
    response = pb.RecommendResponse(request_id=request_id, variant=variant.name, stages=stages,
                                    cold_start=cold_start)
    for name, version in versions.items():
      response.model_versions[name] = version
    rows = []
    for position, candidate in enumerate(candidates[:k], start=1):
      response.items.add(item_id=candidate.item_id, title=self._catalog.title(candidate.item_id),
                         position=position, retrieval_score=candidate.retrieval_score,
                         ranker_score=candidate.ranker_score or 0.0,
                         ranked=candidate.ranker_score is not None,
                         propensity=candidate.propensity)
      rows.append(feedback_row(request_id, logged_user(user_id, request_id), candidate.item_id,
                               "impression", position, candidate.propensity, variant.name))
    self._feedback.append(rows)
    return response

  # --- APIs ----------------------------------------------------------------------------
  def recommend(self, request: pb.RecommendRequest) -> pb.RecommendResponse:
    validate_user(request.user, required=True)
    validate_k(request.k)
    user = request.user
    request_id = request.request_id or uuid.uuid4().hex
    variant = self._experiment.route(user.user_id)
    profile = self._users.profile(user.user_id)
    history = merge_history(user.history, self._users.history(user.user_id), F.HISTORY_LENGTH)
    cold_start = not self._users.knows(user.user_id) and not history
    versions: Dict[str, int] = {}
    features = user_features(user.user_id, history, profile, user.age, user.gender,
                             user.occupation)
    candidates = self._retrieve(features, variant, versions)
    stages = [RETRIEVAL]
    titles = [self._catalog.title(item) for item in history]
    if self._rank(user_context_text(profile, titles), candidates, variant, versions):
      stages.append(RANKER)
    chosen = self._choose(features, candidates, variant, versions)
    if chosen is not None:
      candidates = chosen
      stages.append(BANDIT)
    return self._answer(request_id, user.user_id, variant, candidates, request.k, stages,
                        versions, cold_start)

  def search(self, request: pb.SearchRequest) -> pb.RecommendResponse:
    query = request.query.strip()
    _require(bool(query), "query is empty")
    _require(len(request.query) <= MAX_QUERY_CHARS,
             f"query is longer than {MAX_QUERY_CHARS} characters")
    validate_user(request.user, required=False)
    validate_k(request.k)
    request_id = request.request_id or uuid.uuid4().hex
    user_id = request.user.user_id
    variant = self._experiment.route(user_id or request_id)
    versions: Dict[str, int] = {}
    candidates = {item: Candidate(item, lexical_score=score) for item, score in
                  self._catalog.lexical_matches(query, self._retrieval_depth)}
    stages = ["lexical"]
    if user_id:
      history = merge_history(request.user.history, self._users.history(user_id),
                              F.HISTORY_LENGTH)
      features = user_features(user_id, history, self._users.profile(user_id), request.user.age,
                               request.user.gender, request.user.occupation)
      for retrieved in self._retrieve(features, variant, versions):
        candidates.setdefault(retrieved.item_id, retrieved).retrieval_score = (
            retrieved.retrieval_score)
      stages.append(RETRIEVAL)
    ordered = sorted(candidates.values(), key=lambda c: (-c.lexical_score, -c.retrieval_score,
                                                         c.item_id))
    if self._rank(query, ordered, variant, versions):
      stages.append(RANKER)
    return self._answer(request_id, user_id, variant, ordered, request.k, stages, versions,
                        cold_start=bool(user_id) and not self._users.knows(user_id))

  def feedback(self, request: pb.FeedbackRequest) -> pb.FeedbackResponse:
    _require(bool(request.request_id), "request_id is required")
    _require(bool(request.item_id), "item_id is required")
    _require(request.event in contract.EVENT_TYPES,
             f"event {request.event!r} is not one of {list(contract.EVENT_TYPES)}")
    _require(request.event != "rating" or 1.0 <= request.rating <= 5.0,
             f"rating {request.rating} is outside 1..5")
    _require(request.position >= 0, "position must be >= 0")
    _require(0.0 <= request.propensity <= 1.0, "propensity must be within [0, 1]")
    _require(request.item_id in self._catalog.items, f"item_id {request.item_id!r} is unknown")
    row = feedback_row(request.request_id, logged_user(request.user_id, request.request_id),
                       request.item_id, request.event,
                       request.position, request.propensity or None, request.variant,
                       request.rating if request.event == "rating" else None, int(time.time()))
    written = self._feedback.append([row])
    if request.event in contract.POSITIVE_EVENT_TYPES and request.user_id:
      self._users.record(request.user_id, request.item_id)
    return pb.FeedbackResponse(written=written)

