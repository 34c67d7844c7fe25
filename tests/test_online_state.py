"""The cascade over the online user state, with either store (Redis: a real redis-server,
tests/conftest.py `redis_server`), the models stood in for by a small deterministic fake: a
click is in the very next Recommend's input history, items shown often and never clicked go
last, a Redis outage is answered from the profile and reported, and the same sequence gives
the same answers with either store."""
import json
import os
import random
import time
import zlib

import numpy as np
import pytest

from pipeline.data import contract
from serving.cascade import DEMOTED, USER_STATE_UNAVAILABLE, Cascade
from serving.context_store import Catalog
from serving.feedback_log import FeedbackLog, acknowledged_rows, open_feedback_files
from serving.models_config import RETRIEVAL
from serving.protos import recommender_pb2 as pb
from serving.redis_state import RedisUserState
from serving.user_state import Bounds, EmbeddedUserState, Profiles, recent_events
from trainer.retrieval import signature
from transform import features as F

ITEMS = [f"i{n}" for n in range(40)]


class FakeModels:
  """Stands in for TF Serving: a retrieval model only, which scores every item outside the
  request's history by a hash of (the newest history item, the item), and keeps each
  request's features."""

  def __init__(self):
    self.requests = []

  @staticmethod
  def is_available(model):
    return model == RETRIEVAL

  def predict(self, model, inputs, signature_name="", version_label="", timeout_s=None):
    history = [str(item) for item in inputs[F.HISTORY][0] if item]
    self.requests.append({"history": history, "gender": str(inputs[F.GENDER][0])})
    scored = sorted(((zlib.crc32(f"{history[:1]}|{item}".encode()) / 2 ** 32, item)
                     for item in ITEMS if item not in history), reverse=True)
    return {signature.ITEM_IDS: np.array([[i for _, i in scored]], dtype=object),
            signature.SCORES: np.array([[s for s, _ in scored]], np.float32),
            signature.EMBEDDING: np.zeros([1, 4], np.float32), "__version__": np.int64(1)}


def write_data_root(root):
  """40 items, two profiles, a few ratings of u1 and u2."""
  tables = {
      contract.ITEMS: [{"item_id": i, "title": f"Movie {i}"} for i in ITEMS],
      contract.USERS: [{"user_id": "u1", "age": 30, "gender": "F"},
                       {"user_id": "u2", "age": 40, "gender": "M"}],
      contract.INTERACTIONS: [{"user_id": u, "item_id": i, "event": "rating", "rating": 4,
                               "timestamp": t} for u, i, t in (
                                   ("u1", "i1", 10), ("u1", "i2", 20), ("u2", "i3", 15))]}
  for table, rows in tables.items():
    os.makedirs(os.path.join(root, table), exist_ok=True)
    with open(os.path.join(root, table, "base.jsonl"), "w") as f:
      f.writelines(json.dumps(row) + "\n" for row in rows)
  return str(root)


def make_cascade(kind, root, request, demote_after=5, **redis_options):
  bounds = Bounds()
  if kind == "embedded":
    store = EmbeddedUserState(root, Profiles(root), bounds)
  else:
    store = RedisUserState(request.getfixturevalue("redis_server").url, Profiles(root),
                           recent_events(root, bounds), bounds, **redis_options)
  models = FakeModels()
  cascade = Cascade(models, Catalog(root), store, FeedbackLog(root), demote_after=demote_after)
  return cascade, models, store


def recommend(cascade, user, k=5, history=(), request_id=""):
  return cascade.recommend(pb.RecommendRequest(
      user=pb.UserContext(user_id=user, history=history), k=k, request_id=request_id))


def click(cascade, answer, position=1):
  return cascade.feedback(pb.FeedbackRequest(request_id=answer.request_id,
                                             item_id=answer.items[position - 1].item_id,
                                             event="click"))


def items(answer):
  return [item.item_id for item in answer.items]


@pytest.fixture(params=["embedded", "redis"])
def kind(request):
  return request.param


def test_a_click_is_in_the_next_recommendations_input_history(kind, tmp_path, request):
  cascade, models, store = make_cascade(kind, write_data_root(tmp_path), request)
  first = recommend(cascade, "u1")
  assert models.requests[-1]["history"] == ["i2", "i1"] and not first.degraded
  clicked = first.items[2].item_id
  answer = click(cascade, first, position=3)  # the client need not echo the user
  assert answer.written == 1 and not answer.degraded
  second = recommend(cascade, "u1")
  assert models.requests[-1]["history"] == [clicked, "i2", "i1"]
  assert clicked not in items(second) and items(second) != items(first)
  # A cold user gets their first history item the same way.
  cold = recommend(cascade, "newcomer")
  assert cold.cold_start and models.requests[-1]["history"] == []
  click(cascade, cold)
  warm = recommend(cascade, "newcomer")
  assert not warm.cold_start and models.requests[-1]["history"] == [cold.items[0].item_id]
  store.close()


def test_items_shown_often_and_never_clicked_go_after_the_others(kind, tmp_path, request):
  cascade, _, store = make_cascade(kind, write_data_root(tmp_path), request, demote_after=3)
  answers = [recommend(cascade, "u2", k=6) for _ in range(4)]
  assert items(answers[0]) == items(answers[1]) == items(answers[2])
  assert DEMOTED not in answers[2].stages and DEMOTED in answers[3].stages
  assert not set(items(answers[3])) & set(items(answers[0]))  # shown 3 times: after the rest
  store.close()


def test_anonymous_searches_keep_no_user_state(tmp_path, request):
  cascade, _, store = make_cascade("embedded", write_data_root(tmp_path), request)
  users = store.counters()["users"]
  shown = cascade.search(pb.SearchRequest(query="movie", k=3))
  assert not click(cascade, shown).degraded
  assert store.counters()["users"] == users
  store.close()


def test_the_same_sequence_gives_the_same_answers_with_either_store(tmp_path, request,
                                                                    monkeypatch):
  """Recommends, searches and clicks of named and new users, from a fixed seed and clock (equal
  times included), through a cascade over each store: every answer is the same."""
  start = time.time()
  now = [start]
  monkeypatch.setattr(time, "time", lambda: now[0])
  runs = {}
  for kind in ("embedded", "redis"):
    root = write_data_root(tmp_path / kind)
    cascade, models, store = make_cascade(kind, root, request, demote_after=2)
    rng, answers = random.Random(3), []
    for step in range(60):
      now[0] = start + step // 2
      user = rng.choice(["u1", "u2", "new1", "new2"])
      if step % 7 == 6:
        answer = cascade.search(pb.SearchRequest(query="movie", k=4, request_id=f"s{step}",
                                                 user=pb.UserContext(user_id=user)))
      else:
        answer = recommend(cascade, user, k=4, request_id=f"s{step}")
      answers.append((items(answer), answer.cold_start, list(answer.stages),
                      list(answer.degraded), models.requests[-1]["history"]))
      if rng.random() < 0.5:
        click(cascade, answer, rng.randint(1, 4))
    runs[kind] = answers, [(state.history, state.impressions, state.last_seen) for state in
                           (store.state(u) for u in ("u1", "u2", "new1", "new2"))]
    store.close()
  assert runs["embedded"] == runs["redis"]
  assert any(DEMOTED in stages for _, _, stages, _, _ in runs["redis"][0])


def test_a_redis_outage_is_answered_from_the_profile_in_time_and_reported(tmp_path, request):
  root = write_data_root(tmp_path)
  cascade, models, store = make_cascade("redis", root, request, retry_s=0.3)
  server = request.getfixturevalue("redis_server")
  first = recommend(cascade, "u1")
  assert not first.degraded and models.requests[-1]["history"] == ["i2", "i1"]

  def answered_in_time(**fields):
    started = time.perf_counter()
    answer = recommend(cascade, "u1", **fields)
    assert time.perf_counter() - started < 0.5
    assert len(answer.items) == 5 and not answer.cold_start
    return answer

  server.freeze()  # hung: each call waits its 50 ms timeout, then none is tried for 0.3 s
  try:
    assert answered_in_time().degraded == [USER_STATE_UNAVAILABLE]
  finally:
    server.thaw()
  time.sleep(0.4)
  assert not answered_in_time().degraded  # back
  server.kill()  # dead
  answer = answered_in_time(history=["i7"])
  assert answer.degraded == [USER_STATE_UNAVAILABLE]
  assert models.requests[-1] == {"history": ["i7"], "gender": "F"}  # the profile, the request
  feedback = click(cascade, first)
  assert feedback.written == 1 and feedback.degraded == [USER_STATE_UNAVAILABLE]
  logged = [r for path in open_feedback_files(root) for r in acknowledged_rows(path)
            if r["event"] == "click"]
  assert [r["item_id"] for r in logged] == [first.items[0].item_id]  # the pipeline learns it
  assert store.counters()["failures"] >= 2
  store.close()
