"""The online user-state stores (serving/user_state.py, serving/redis_state.py): one contract,
checked on both, the Redis one against a real redis-server (tests/conftest.py `redis_server`);
their bounds; durability of the embedded store across a crash; Redis outages."""
import json
import os
import random
import subprocess
import sys
import time

import pytest
import redis

from pipeline.data import contract
from serving.feedback_log import FeedbackLog
from serving.redis_state import Breaker, RedisUserState
from serving.user_state import Bounds, EmbeddedUserState, Profiles, recent_events

BASE = [("u1", "i1", "rating", 10), ("u1", "i2", "click", 20), ("u1", "i1", "purchase", 30),
        ("u1", "i3", "view", 5), ("u1", "i9", "impression", 40), ("u2", "i4", "click", 7),
        ("anonymous-r6", "i9", "impression", 41)]  # row 6: an anonymous search's impression


def write_data_root(root, rows=BASE, users=("u1",)):
  """A data root with these interaction rows (user, item, event, time; request r<n> for row n,
  shown at position 1) and profiles."""
  for table, lines in ((contract.INTERACTIONS, [
      {"user_id": u, "item_id": i, "event": e, "timestamp": t, "request_id": f"r{n}",
       "position": 1} for n, (u, i, e, t) in enumerate(rows)]),
                       (contract.USERS, [{"user_id": u, "age": 30, "gender": "F"}
                                         for u in users])):
    os.makedirs(os.path.join(root, table), exist_ok=True)
    with open(os.path.join(root, table, "base.jsonl"), "w") as f:
      f.writelines(json.dumps(line) + "\n" for line in lines)
  return str(root)


def open_store(kind, root, request, bounds=Bounds(), **options):
  if kind == "embedded":
    return EmbeddedUserState(root, Profiles(root), bounds, **options)
  server = request.getfixturevalue("redis_server")
  return RedisUserState(server.url, Profiles(root), recent_events(root, bounds), bounds,
                        **options)


@pytest.fixture(params=["embedded", "redis"])
def kind(request):
  return request.param


def test_history_is_newest_first_each_item_once_and_bounded(kind, tmp_path, request):
  root = write_data_root(tmp_path)
  store = open_store(kind, root, request, Bounds(history=3, impressions=10))
  state = store.state("u1")
  assert state.history == (("i1", 30), ("i2", 20), ("i3", 5))  # impressions are not positives
  assert state.impressions == ("i9",) and state.last_seen == 40
  assert state.profile["gender"] == "F" and state.known and state.available
  assert store.record_positive("u1", "i4", 50)
  assert store.record_positive("u1", "i2", 15)  # older than what is known: the latest stays
  assert store.state("u1").history == (("i4", 50), ("i1", 30), ("i2", 20))
  assert store.record_positive("u1", "i6", 60) and store.record_positive("u1", "i5", 60)
  assert store.state("u1").history == (("i6", 60), ("i5", 60), ("i4", 50))  # ties: by item id
  unknown = store.state("nobody")
  assert (unknown.history, unknown.impressions, unknown.known) == ((), (), False)
  assert store.state("u2").known and not store.state("u2").profile  # known by a click alone
  store.close()


def test_impressions_are_bounded_and_tired_items_are_the_unclicked_ones(kind, tmp_path, request):
  root = write_data_root(tmp_path)
  store = open_store(kind, root, request, Bounds(history=5, impressions=10))
  for n in range(6):
    assert store.record_impressions("u3", f"q{n}", ["a", "b"], 100 + n)
  state = store.state("u3")
  assert state.impressions == ("b", "a") * 5 and state.last_seen == 105
  assert state.tired(5) == {"a", "b"} and state.tired(6) == set() and state.tired(0) == set()
  assert not state.known  # shown, never clicked: still a cold start
  store.record_positive("u3", "a", 106)
  assert store.state("u3").tired(5) == {"b"}
  store.close()


def test_both_stores_agree_on_a_random_sequence(tmp_path, request):
  """The same operations give the same states, step by step, in either store."""
  root = write_data_root(tmp_path)
  bounds = Bounds(history=4, impressions=6)
  stores = [open_store(kind, root, request, bounds) for kind in ("embedded", "redis")]
  rng = random.Random(7)
  for step in range(300):
    user, timestamp = f"u{rng.randint(1, 4)}", 50 + step // 3  # equal times happen
    items = rng.sample([f"i{n}" for n in range(12)], rng.randint(1, 3))
    positive = rng.random() < 0.4
    for store in stores:
      if positive:
        store.record_positive(user, items[0], timestamp)
      else:
        store.record_impressions(user, f"q{step}", items, timestamp)
    embedded, in_redis = (store.state(user) for store in stores)
    assert embedded == in_redis, step
  for store in stores:
    store.close()


def test_redis_keys_are_prefixed_strings_with_a_ttl(tmp_path, request):
  root = write_data_root(tmp_path)
  store = open_store("redis", root, request, ttl_s=600)
  store.record_impressions("u1", "q1", ["i7"], 99)
  client = request.getfixturevalue("redis_server").client()
  keys = sorted(client.keys("*"))
  assert keys == ["recsys:user:u1:history", "recsys:user:u1:impressions", "recsys:user:u1:seen",
                  "recsys:user:u2:history", "recsys:user:u2:seen"]
  assert all(0 < client.ttl(key) <= 600 for key in keys)
  assert {client.type(key) for key in keys} == {"zset"}
  assert client.zrange("recsys:user:u1:impressions", 0, -1, withscores=True) == [
      ("r4\t1\ti9", 40.0), ("q1\t1\ti7", 99.0)]
  store.close()


def test_redis_reads_and_writes_are_one_round_trip_each(tmp_path, request, monkeypatch):
  root = write_data_root(tmp_path)
  store = open_store("redis", root, request)
  store.state("u1")  # the first read also loads the read script (once per Redis start)
  sends = []
  original = redis.connection.Connection.send_packed_command
  monkeypatch.setattr(redis.connection.Connection, "send_packed_command",
                      lambda self, *args, **kwargs: sends.append(1) or original(self, *args,
                                                                                 **kwargs))
  store.state("u1")
  store.record_positive("u1", "i5", 60)
  store.record_impressions("u1", "q1", ["i5", "i6"], 60)
  assert len(sends) == 3
  store.close()


def test_a_restarted_redis_store_merges_the_data_root_without_losing_newer_events(tmp_path,
                                                                                  request):
  """A cascade restart over a Redis that kept its state: the start-up merge is idempotent."""
  root = write_data_root(tmp_path)
  first = open_store("redis", root, request)
  first.record_positive("u1", "i2", 70)  # newer than the data root's i2 (20)
  first.record_impressions("u1", "q1", ["i8"], 70)
  first.close()
  second = open_store("redis", root, request)
  state = second.state("u1")
  assert state.history[0] == ("i2", 70) and len(state.history) == 3
  assert state.impressions == ("i8", "i9") and state.last_seen == 70  # i9 not counted twice
  assert second.counters()["seeded_users"] == 2
  second.close()


def test_redis_killed_mid_run_answers_with_the_profile_fast_and_counts(tmp_path, request):
  root = write_data_root(tmp_path)
  server = request.getfixturevalue("redis_server")
  store = open_store("redis", root, request, retry_s=0.5)
  assert store.state("u1").available
  server.kill()
  started = time.perf_counter()
  state = store.state("u1")
  assert not state.available and state.history == () and state.profile["gender"] == "F"
  assert not store.record_positive("u1", "i5", 80)
  skipped = [store.state("u1") for _ in range(200)]  # the breaker is open: no Redis call
  assert time.perf_counter() - started < 0.5 and not any(s.available for s in skipped)
  assert store.counters()["failures"] == 1 and store.counters()["skipped"] == 201
  server.start()  # back on its port, empty (no persistence in the tests)
  time.sleep(0.6)
  assert store.state("u1").available and store.record_positive("u1", "i5", 81)
  assert store.state("u1").history == (("i5", 81),)
  store.close()


def test_a_frozen_redis_costs_one_timeout_then_nothing(tmp_path, request):
  """A hung server (SIGSTOP): a call waits its socket timeout, then the breaker holds."""
  root = write_data_root(tmp_path)
  server = request.getfixturevalue("redis_server")
  store = open_store("redis", root, request, timeout_s=0.05, retry_s=30)
  assert store.state("u1").available
  server.freeze()
  try:
    started = time.perf_counter()
    assert not store.state("u1").available
    first = time.perf_counter() - started
    assert not any(store.state("u1").available for _ in range(100))
    assert first < 0.5 and time.perf_counter() - started < first + 0.1, first
  finally:
    server.thaw()
  store.close()


def test_redis_down_at_start_is_merged_once_it_comes_up(tmp_path, request):
  root = write_data_root(tmp_path)
  server = request.getfixturevalue("redis_server")
  server.kill()
  store = open_store("redis", root, request, retry_s=0.2)
  assert not store.state("u1").available
  server.start()
  deadline = time.monotonic() + 10
  while store.counters()["seeded_users"] < 2:
    assert time.monotonic() < deadline, store.counters()
    time.sleep(0.1)
  assert store.state("u1").history[0] == ("i1", 30)
  store.close()


def test_the_breaker_holds_for_its_interval_and_lets_one_trial_through():
  now = [0.0]
  breaker = Breaker(5.0, clock=lambda: now[0])
  assert breaker.allow()
  breaker.failed()
  now[0] = 4.9
  assert not breaker.allow()
  now[0] = 5.0
  assert breaker.allow() and not breaker.allow()  # one trial; the others wait
  breaker.succeeded()
  assert breaker.allow() and breaker.allow()


def test_the_embedded_store_holds_at_most_max_users_least_recently_used_first(tmp_path):
  root = write_data_root(tmp_path, rows=[("a", "i1", "click", 1), ("b", "i1", "click", 3),
                                         ("c", "i1", "click", 2)])
  store = EmbeddedUserState(root, Profiles(root), max_users=2)
  assert store.counters() == {"users": 2, "evicted": 1}
  assert store.state("a").history == ()  # seen longest ago: not loaded
  store.state("c")  # used: now more recent than b
  store.record_positive("d", "i2", 9)
  assert store.counters() == {"users": 2, "evicted": 2}
  assert store.state("b").history == () and store.state("c").history == (("i1", 2),)


# A server in its own process: a FeedbackLog and an embedded store updated as the cascade does,
# one event per line read on stdin; "crash" dies (SIGKILL) right after acknowledging a click.
_SERVER = """
import sys
from serving.feedback_log import FeedbackLog, feedback_row
from serving.user_state import EmbeddedUserState, Profiles
log = FeedbackLog(sys.argv[1])
store = EmbeddedUserState(sys.argv[1], Profiles(sys.argv[1]))
for n, line in enumerate(sys.stdin):
  event, item = line.split()
  log.append([feedback_row(f"r{n}", "u7", item, event, 1, 1.0, "a", timestamp=100 + n)])
  if event == "impression":
    store.record_impressions("u7", f"r{n}", [item], 100 + n)
  else:
    store.record_positive("u7", item, 100 + n)
  print(store.state("u7").history, flush=True)  # acknowledged
"""


def test_a_crashed_embedded_store_restarts_with_every_acknowledged_event(tmp_path):
  root = write_data_root(tmp_path)
  server = subprocess.Popen([sys.executable, "-c", _SERVER, root], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  for line in ("impression i5", "impression i5", "click i6"):
    server.stdin.write(line + "\n")
    server.stdin.flush()
    acknowledged = server.stdout.readline().strip()
  assert acknowledged == "(('i6', 102),)"
  server.kill()  # SIGKILL: no clean-up, the feedback file is left open
  assert server.wait(60) == -9
  FeedbackLog(root)  # the next start hands the dead writer's file over first
  state = EmbeddedUserState(root, Profiles(root)).state("u7")
  assert state.history == (("i6", 102),) and state.impressions == ("i5", "i5")
  assert state.last_seen == 102
