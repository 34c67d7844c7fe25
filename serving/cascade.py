"""The sources -> union -> rank -> choose cascade behind the Recommend API, and lexical ->
cross-encoder search behind Search.

Works with whichever stages are pushed: retrieval is required; the `item_to_item` source adds
its top-N for users with a history, `popularity` for users without one; the `ranker` orders
the union of the sources' answers (`trainer/ranker/signature.py`, the union it was trained
and evaluated on); a `bandit` policy chooses the shown slate when one is available, else the
top-k are shown (propensity 1: a deterministic choice). Search results are re-ranked by the
`cross_encoder` when one is pushed. Models are reached only through TF Serving's gRPC API
(`ModelClient`). Every answer is logged as impressions to the feedback log, with its variant,
position and propensity.

The user's history and recent impressions come from the online user state
(`serving/user_state.py`), read once per request and updated by every answer (its impressions)
and every positive feedback event, so a click is in the very next request's history. Items the
user was shown `demote_after` times without a click go after the others. If the state does not
answer, the request is served from the profile and the request's own history, and the answer
says so (`degraded: ["user_state"]`).
An optional stage (ranker, bandit, cross-encoder) that fails or runs past the stage deadline
is skipped: the answer keeps the previous stage's order, names the stage in `degraded`, and
`Cascade.skipped` counts it.

Each stage's width comes from what its pushed model declares in its signature (read through
GetModelMetadata): the sources' depth is their top-K, the re-ranking depth the cross-encoder's
`rerank` width, the bandit's candidate count and feature width its `serving_default` input
shapes. A model whose signature the cascade cannot feed is an error (FAILED_PRECONDITION,
naming the model and the shapes), never a silent fallback.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
import uuid
from typing import Counter, Dict, List, Optional, Set, Tuple

import grpc
import numpy as np

from agents.features import arm_features
from pipeline.data import contract
from serving import limits
from serving.context_store import Catalog, merge_history, user_features
from serving.experiment import SINGLE_VARIANT, Experiment, Variant
from serving.feedback_log import FeedbackLog, anonymous, feedback_row, logged_user
from serving.fresh_items import FreshItems, merge_fresh
from serving.issued import IssuedRequests
from serving.item_vectors import ItemVectors
from serving.model_client import ModelClient, SignatureInfo
from serving.models_config import (BANDIT, CROSS_ENCODER, ITEM_TO_ITEM, POPULARITY, RANKER,
                                   RETRIEVAL)
from serving.protos import recommender_pb2 as pb
from serving.user_state import UserState, UserStateStore
from serving.validation import (CascadeError, require, validate_feedback_fields, validate_k,
                                validate_query, validate_request_id, validate_user)
from trainer.ranker.signature import request_inputs, union
from trainer.retrieval import signature
from transform import features as F

log = logging.getLogger(__name__)
# Lexical matches a search considers (the cross-encoder re-ranks the first of them).
SEARCH_CANDIDATES = 100
# Events a client may report; impressions are logged by the cascade itself, as it shows them.
FEEDBACK_EVENTS = tuple(e for e in contract.EVENT_TYPES if e != contract.IMPRESSION)
# What an answer names in `degraded` when the online user state did not answer (or take its
# update): the answer used the profile and the request's history only.
USER_STATE_UNAVAILABLE = "user_state"
# The stage an answer names when it moved items the user was shown often, never clicked.
DEMOTED = "impression_demotion"


@dataclasses.dataclass(eq=False)
class Candidate:
  item_id: str
  retrieval_score: float = 0.0
  item_to_item_score: float = 0.0
  ranker_score: Optional[float] = None
  cross_encoder_score: Optional[float] = None
  lexical_score: float = 0.0
  # Probability this item was put in its slot: the bandit's for the slots it chooses; 1 for a
  # deterministic (ranked) choice.
  propensity: float = 1.0
  # A fresh item (one the retrieval model was not trained with, `fresh_items.py`): its place
  # in the retrieval answer, which it keeps in the ranked list (the ranker has never seen it).
  fresh_rank: Optional[int] = None


@dataclasses.dataclass
class Served:
  """What one request's stages did: the model version each that answered ran, and the
  optional stages that failed or ran past their deadline and were skipped (named in the
  answer's `degraded`; the answer is the previous stage's order)."""
  versions: Dict[str, int] = dataclasses.field(default_factory=dict)
  skipped: List[str] = dataclasses.field(default_factory=list)


def demote(candidates: List[Candidate], tired: Set[str]) -> bool:
  """Moves the tired items after the others, each group in its order; True if any moved."""
  ordered = sorted(candidates, key=lambda c: c.item_id in tired)
  moved = ordered != candidates
  candidates[:] = ordered
  return moved


class Cascade:
  """Recommend, Search and Feedback over a TF Serving endpoint."""

  def __init__(self, client: ModelClient, catalog: Catalog, users: UserStateStore,
               feedback: FeedbackLog, experiment: Experiment = SINGLE_VARIANT,
               stage_timeout_s: float = 2.0, issued: Optional[IssuedRequests] = None,
               fresh: Optional[FreshItems] = None,
               demote_after: int = limits.DEMOTE_AFTER_IMPRESSIONS):
    self._client = client
    self._fresh = fresh
    self._catalog = catalog
    self._users = users
    self._feedback = feedback
    self._experiment = experiment
    self._timeout = stage_timeout_s
    self._demote_after = demote_after
    self._issued = issued if issued is not None else IssuedRequests()
    self._item_vectors = ItemVectors(self._embed_items)
    # Optional stages skipped since start, by stage (`_skip`).
    self.skipped: Counter[str] = collections.Counter()
    self._lock = threading.Lock()

  def _declared(self, model: str, signature_name: str, label: str) -> SignatureInfo:
    """The pushed model's signature; FAILED_PRECONDITION if it has none of that name."""
    try:
      return self._client.signature_info(model, signature_name, label)
    except KeyError as error:
      raise CascadeError("FAILED_PRECONDITION", f"{model}: {error.args[0]}") from error

  @staticmethod
  def _width(info: SignatureInfo, model: str, tensor: str, axis: int) -> int:
    """A fixed input dimension the cascade builds its request to; FAILED_PRECONDITION if the
    model leaves it open (an export this cascade cannot feed)."""
    shape = info.inputs.get(tensor, ())
    if len(shape) <= axis or shape[axis] < 1:
      raise CascadeError("FAILED_PRECONDITION", f"{model} version {info.version} declares "
                                                f"input {tensor} of shape {shape}; the cascade "
                                                f"needs a fixed size at axis {axis}")
    return shape[axis]

  def _embed_items(self, version: int, item_ids: List[str]) -> np.ndarray:
    """`item_embeddings` of this retrieval version for these catalog items (`ItemVectors`)."""
    return self._client.predict(
        RETRIEVAL, signature.item_inputs([self._catalog.items[item] for item in item_ids]),
        "item_embeddings", str(version), self._timeout)[signature.EMBEDDING]

  def _skip(self, served: Served, stage: str, error: grpc.RpcError, serving: str) -> None:
    """Records an optional stage that failed or ran past its deadline: named in the answer,
    counted in `skipped`, logged."""
    served.skipped.append(stage)
    with self._lock:
      self.skipped[stage] += 1
      count = self.skipped[stage]
    log.warning("%s skipped (%s; %d so far), serving %s: %s", stage, error.code().name, count,
                serving, error.details())

  # --- stages --------------------------------------------------------------------------
  def _source(self, model: str, features: Dict[str, object], variant: Variant,
              served: Served) -> Tuple[List[Tuple[str, float]], Dict[str, np.ndarray]]:
    """One source's top-K as (item, score), history excluded, and its whole answer;
    UNAVAILABLE if it fails."""
    try:
      out = self._client.predict(model, signature.query_inputs([features]),
                                 version_label=variant.models.get(model, ""),
                                 timeout_s=self._timeout)
    except grpc.RpcError as error:
      raise CascadeError("UNAVAILABLE", f"{model} model: {error.details()}") from error
    served.versions[model] = int(out["__version__"])
    ids, scores = out[signature.ITEM_IDS][0], out[signature.SCORES][0]
    return signature.retrieved(ids, scores, len(ids)), out

  def _query(self, features: Dict[str, object], answer: Dict[str, np.ndarray],
             served: Served) -> np.ndarray:
    """The query's embedding [1, d] by the retrieval version that answered: from its
    `serving_default` answer, or, from a model exported before that signature carried it, by a
    `query_embedding` call to the same version; UNAVAILABLE if that fails."""
    if signature.EMBEDDING in answer:
      return answer[signature.EMBEDDING]
    try:
      return self._client.predict(RETRIEVAL, signature.query_inputs([features]),
                                  "query_embedding", str(served.versions[RETRIEVAL]),
                                  self._timeout)[signature.EMBEDDING]
    except grpc.RpcError as error:
      raise CascadeError("UNAVAILABLE", f"{RETRIEVAL} model: {error.details()}") from error

  def _retrieve(self, features: Dict[str, object], variant: Variant,
                served: Served) -> List[Candidate]:
    return [Candidate(item, score)
            for item, score in self._source(RETRIEVAL, features, variant, served)[0]]

  def _with_fresh(self, features: Dict[str, object], answer: List[Tuple[str, float]],
                  query: np.ndarray, served: Served
                  ) -> Tuple[List[Tuple[str, float]], List[str]]:
    """The retrieval answer with the fresh items its query puts there, and their ids."""
    index = self._fresh.index(served.versions[RETRIEVAL]) if self._fresh is not None else None
    if index is None or not index.item_ids or not answer:
      return answer, []
    merged = merge_fresh(answer, index.top(query[0], features[F.HISTORY], len(answer)))
    fresh = set(index.item_ids)
    return merged, [item for item, _ in merged if item in fresh]

  def _candidates(self, features: Dict[str, object], variant: Variant,
                  served: Served
                  ) -> Tuple[List[Candidate], List[str], np.ndarray]:
    """The union of the sources' answers (retrieval with the fresh items it places, and
    item-to-item for a user with a history or popularity for one without, when pushed), with
    each source's score; the stages that answered; and the query's retrieval embedding."""
    extra = ITEM_TO_ITEM if features[F.HISTORY] else POPULARITY
    answer, out = self._source(RETRIEVAL, features, variant, served)
    query = self._query(features, out, served)
    retrieved, fresh = self._with_fresh(features, answer, query, served)
    answers = {RETRIEVAL: retrieved}
    if self._client.is_available(extra):
      answers[extra] = self._source(extra, features, variant, served)[0]
    by_id: Dict[str, Candidate] = {}
    for item in union([[i for i, _ in answer] for answer in answers.values()]):
      by_id[item] = Candidate(item)
    for rank, (item, score) in enumerate(answers[RETRIEVAL]):
      by_id[item].retrieval_score = score
      if item in fresh:
        by_id[item].fresh_rank = rank
    for item, score in answers.get(ITEM_TO_ITEM, []):
      by_id[item].item_to_item_score = score
    stages = list(answers) + (["fresh_items"] if fresh else [])
    return list(by_id.values()), stages, query

  def _order(self, features: Dict[str, object], candidates: List[Candidate], variant: Variant,
             served: Served) -> bool:
    """Orders the candidates by the ranker, in one call; False (the sources' order kept) if
    none is pushed or it fails. The ranker also scores every candidate by each source, which
    fills in the scores of the sources that did not return it. Fresh items keep their
    retrieval places among the ranked ones."""
    fresh = [c for c in candidates if c.fresh_rank is not None]
    candidates[:] = [c for c in candidates if c.fresh_rank is None]
    ranked = self._rank_known(features, candidates, variant, served)
    for candidate in sorted(fresh, key=lambda c: c.fresh_rank):
      candidates.insert(min(candidate.fresh_rank, len(candidates)), candidate)
    return ranked

  def _rank_known(self, features: Dict[str, object], candidates: List[Candidate],
                  variant: Variant, served: Served) -> bool:
    if not candidates or not self._client.is_available(RANKER):
      return False
    inputs = request_inputs([features], [[c.item_id for c in candidates]])
    try:
      out = self._client.predict(RANKER, inputs, version_label=variant.models.get(RANKER, ""),
                                 timeout_s=self._timeout)
    except grpc.RpcError as error:
      self._skip(served, RANKER, error, "the sources' order")
      return False
    served.versions[RANKER] = int(out["__version__"])
    for row, candidate in enumerate(candidates):
      candidate.ranker_score = float(out[signature.SCORES][0, row])
      candidate.retrieval_score = float(out[f"{RETRIEVAL}_{signature.SCORES}"][0, row])
      candidate.item_to_item_score = float(out[f"{ITEM_TO_ITEM}_{signature.SCORES}"][0, row])
    candidates.sort(key=lambda c: -c.ranker_score)
    return True

  def _rank(self, query_text: str, candidates: List[Candidate], variant: Variant,
            served: Served) -> bool:
    """Re-scores the first candidates (as many as the cross-encoder's `rerank` signature
    takes) in one call; False if no cross-encoder is pushed or it fails."""
    if not candidates or not self._client.is_available(CROSS_ENCODER):
      return False
    info = self._declared(CROSS_ENCODER, "rerank", variant.models.get(CROSS_ENCODER, ""))
    depth = self._width(info, CROSS_ENCODER, "item_texts", 1)
    head = candidates[:depth]
    texts = [self._catalog.text(c.item_id) for c in head] + [""] * (depth - len(head))
    inputs = {"query": np.array([query_text], dtype=object),
              "item_texts": np.array([texts], dtype=object)}
    try:
      out = self._client.predict(CROSS_ENCODER, inputs, "rerank", str(info.version),
                                 self._timeout)
    except grpc.RpcError as error:
      self._client.forget(CROSS_ENCODER)
      self._skip(served, CROSS_ENCODER, error, "the lexical and retrieval order")
      return False
    served.versions[CROSS_ENCODER] = int(out["__version__"])
    for candidate, score in zip(head, out["scores"][0]):
      candidate.cross_encoder_score = float(score)
    candidates[:len(head)] = sorted(head, key=lambda c: -c.cross_encoder_score)
    return True

  def _choose(self, query: np.ndarray, candidates: List[Candidate],
              variant: Variant, served: Served) -> Optional[List[Candidate]]:
    """The bandit's slate, with propensities, followed by the rest in ranked order; None if no
    policy is pushed (or it fails: then the ranked order is served). Its arm features are the
    query's and the items' embeddings by the retrieval version that answered this request."""
    if not candidates or not self._client.is_available(BANDIT):
      return None
    info = self._declared(BANDIT, "serving_default", variant.models.get(BANDIT, ""))
    width = self._width(info, BANDIT, "candidate_ids", 1)
    arm_dim = self._width(info, BANDIT, "arm_features", 2)
    head = candidates[:width]
    try:
      items = self._item_vectors.get(served.versions[RETRIEVAL], [c.item_id for c in head])
      scores = np.array([[[c.retrieval_score] for c in head]], np.float32)
      arms = arm_features(items[np.newaxis], query, scores)
      if arms.shape[-1] != arm_dim:
        raise CascadeError("FAILED_PRECONDITION", f"bandit version {info.version} takes arm "
                                                  f"features of width {arm_dim}; this "
                                                  f"retrieval model gives {arms.shape[-1]}: "
                                                  f"push a policy trained on it")
      padding = width - len(head)
      out = self._client.predict(BANDIT, {
          "context": query.astype(np.float32),
          "arm_features": np.pad(arms, [(0, 0), (0, padding), (0, 0)]),
          "candidate_ids": np.array([[c.item_id for c in head] + [""] * padding], dtype=object),
          "num_candidates": np.array([len(head)], np.int32)},
          version_label=str(info.version), timeout_s=self._timeout)
    except grpc.RpcError as error:
      self._client.forget(BANDIT)
      self._skip(served, BANDIT, error, "the ranked order")
      return None
    served.versions[BANDIT] = int(out["__version__"])
    by_id = {c.item_id: c for c in candidates}
    chosen = []
    for item, propensity in zip(out["item_ids"][0], out["propensities"][0]):
      item = item.decode()
      if item in by_id and by_id[item] not in chosen:
        by_id[item].propensity = float(propensity)
        chosen.append(by_id[item])
    return chosen + [c for c in candidates if c not in chosen]

  def _answer(self, request_id: str, user_id: str, variant: Variant, candidates: List[Candidate],
              k: int, stages: List[str], served: Served, cold_start: bool,
              state: Optional[UserState]) -> pb.RecommendResponse:
    """The response; the shown items are logged as impressions and, for a named user, kept in
    the user state (`state`: what the answer read of it, None if it read nothing)."""
    response = pb.RecommendResponse(request_id=request_id, variant=variant.name, stages=stages,
                                    cold_start=cold_start)
    for name, version in served.versions.items():
      response.model_versions[name] = version
    response.degraded.extend(served.skipped)
    rows = []
    for position, candidate in enumerate(candidates[:k], start=1):
      response.items.add(item_id=candidate.item_id, title=self._catalog.title(candidate.item_id),
                         position=position, retrieval_score=candidate.retrieval_score,
                         item_to_item_score=candidate.item_to_item_score,
                         ranker_score=candidate.ranker_score or 0.0,
                         cross_encoder_score=candidate.cross_encoder_score or 0.0,
                         reranked=candidate.cross_encoder_score is not None,
                         propensity=candidate.propensity)
      rows.append(feedback_row(request_id, logged_user(user_id, request_id), candidate.item_id,
                               contract.IMPRESSION, position, candidate.propensity,
                               variant.name))
    self._issued.record(rows)
    self._feedback.append(rows)
    stored = not (user_id and rows) or self._users.record_impressions(
        user_id, request_id, [row["item_id"] for row in rows], rows[0]["timestamp"])
    if (state is not None and not state.available) or not stored:
      response.degraded.append(USER_STATE_UNAVAILABLE)
    return response

  # --- APIs ----------------------------------------------------------------------------
  def recommend(self, request: pb.RecommendRequest) -> pb.RecommendResponse:
    validate_user(request.user, required=True)
    validate_k(request.k)
    validate_request_id(request.request_id)
    user = request.user
    request_id = request.request_id or uuid.uuid4().hex
    variant = self._experiment.route(user.user_id)
    state = self._users.state(user.user_id)
    history = merge_history(user.history, state.history, F.MAX_HISTORY)
    cold_start = not state.known and not history
    served = Served()
    features = user_features(user.user_id, history, state.profile, user.age, user.gender,
                             user.occupation)
    candidates, stages, query = self._candidates(features, variant, served)
    if self._order(features, candidates, variant, served):
      stages.append(RANKER)
    # Before the bandit, so the slate it chooses (and the propensities it logs) is what is shown.
    if demote(candidates, state.tired(self._demote_after)):
      stages.append(DEMOTED)
    chosen = self._choose(query, candidates, variant, served)
    if chosen is not None:
      candidates = chosen
      stages.append(BANDIT)
    return self._answer(request_id, user.user_id, variant, candidates, request.k, stages,
                        served, cold_start, state)

  def search(self, request: pb.SearchRequest) -> pb.RecommendResponse:
    validate_query(request.query)
    query = request.query.strip()
    validate_user(request.user, required=False)
    validate_k(request.k)
    validate_request_id(request.request_id)
    request_id = request.request_id or uuid.uuid4().hex
    user_id = request.user.user_id
    variant = self._experiment.route(user_id or request_id)
    served = Served()
    candidates = {item: Candidate(item, lexical_score=score) for item, score in
                  self._catalog.lexical_matches(query, SEARCH_CANDIDATES)}
    stages = ["lexical"]
    state = self._users.state(user_id) if user_id else None
    if state is not None:
      history = merge_history(request.user.history, state.history, F.MAX_HISTORY)
      features = user_features(user_id, history, state.profile, request.user.age,
                               request.user.gender, request.user.occupation)
      for retrieved in self._retrieve(features, variant, served):
        candidates.setdefault(retrieved.item_id, retrieved).retrieval_score = (
            retrieved.retrieval_score)
      stages.append(RETRIEVAL)
    ordered = sorted(candidates.values(), key=lambda c: (-c.lexical_score, -c.retrieval_score,
                                                         c.item_id))
    if self._rank(query, ordered, variant, served):
      stages.append(CROSS_ENCODER)
    return self._answer(request_id, user_id, variant, ordered, request.k, stages, served,
                        cold_start=state is not None and not state.known, state=state)

  def feedback(self, request: pb.FeedbackRequest) -> pb.FeedbackResponse:
    """Logs a client's event about an item this server showed; the row's position, propensity,
    variant and user are the issued request's (a client may echo them, never change them)."""
    validate_feedback_fields(request)
    require(request.event in FEEDBACK_EVENTS,
            f"event {request.event!r} is not one of {list(FEEDBACK_EVENTS)}"
            + (" (impressions are logged by the server as it shows them)"
               if request.event == contract.IMPRESSION else ""))
    require(request.event != "rating" or 1.0 <= request.rating <= 5.0,
            f"rating {request.rating} is outside 1..5")
    require(request.item_id in self._catalog.items, f"item_id {request.item_id!r} is unknown")
    issued, position, propensity = self._issued.check(
        request.request_id, request.item_id, request.position, request.propensity,
        request.variant, request.user_id)
    now = int(time.time())
    row = feedback_row(request.request_id, issued.user_id, request.item_id, request.event,
                       position, propensity, issued.variant,
                       request.rating if request.event == "rating" else None, now)
    written = self._feedback.append([row])
    response = pb.FeedbackResponse(written=written)
    # The issued request's user (a client need not echo it); anonymous traffic has no state.
    if (request.event in contract.POSITIVE_EVENT_TYPES
        and not anonymous(issued.user_id, request.request_id)
        and not self._users.record_positive(issued.user_id, request.item_id, now)):
      response.degraded.append(USER_STATE_UNAVAILABLE)
    return response
