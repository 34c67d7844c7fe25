"""A/B routing and statistics, the feedback log's durability, the record of issued requests,
the cascade's per-version item embeddings."""
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from pipeline.data import contract, parsing
from pipeline.ab_report import (MIN_CLICKS, MIN_IMPRESSIONS, TOO_FEW, count_feedback, report,
                                table, two_proportion_p_value, wilson_interval)
from serving.experiment import Experiment
from serving.feedback_log import FeedbackLog, feedback_row, recent_feedback_rows
from serving.issued import IssuedRequests, rebuilt
from serving.item_vectors import ItemVectors
from serving.validation import CascadeError


def _experiment(weights):
  return Experiment.from_json(json.dumps({"experiment": "x", "variants": [
      {"name": f"v{i}", "weight": w} for i, w in enumerate(weights)]}))


def test_routing_is_deterministic_and_follows_the_split():
  experiment = _experiment([0.2, 0.8])
  users = [f"user-{i}" for i in range(20000)]
  first = [experiment.route(u).name for u in users]
  assert first == [experiment.route(u).name for u in users]
  share = first.count("v0") / len(users)
  assert abs(share - 0.2) < 0.015  # 4.5 standard errors at n = 20000


def test_routing_depends_on_the_experiment_name():
  a, b = _experiment([0.5, 0.5]), Experiment.from_json(json.dumps({"experiment": "y", "variants": [
      {"name": "v0", "weight": 0.5}, {"name": "v1", "weight": 0.5}]}))
  users = [str(i) for i in range(2000)]
  agree = sum(a.route(u).name == b.route(u).name for u in users) / len(users)
  assert 0.4 < agree < 0.6  # independent assignments across experiments


def test_bad_experiment_configs_are_refused():
  with pytest.raises(ValueError, match="unique"):
    Experiment.from_json('{"variants": [{"name": "a", "weight": 1}, {"name": "a", "weight": 1}]}')
  with pytest.raises(ValueError, match="weights"):
    Experiment.from_json('{"variants": [{"name": "a", "weight": 0}]}')


@pytest.mark.parametrize("weight, detail", [
    ("NaN", "got nan"), ("Infinity", "got inf"), ("1e309", "got inf"), ("-1", "got -1"),
    ("9" * 400, "must be finite"), ('"0.5"', "must be a number"), ("true", "must be a number"),
    ("null", "must be a number")])
def test_experiment_weights_must_be_finite_and_non_negative(weight, detail):
  """Issue 9 #14: NaN and 1e309 (inf) were accepted; the message names the variant."""
  with pytest.raises(ValueError, match="variant 'treatment': weight") as error:
    Experiment.from_json('{"variants": [{"name": "control", "weight": 1}, '
                         f'{{"name": "treatment", "weight": {weight}}}]}}')
  assert detail in str(error.value)
  with pytest.raises(ValueError, match="finite number above 0"):  # 1e308 + 1e308 = inf
    Experiment.from_json('{"variants": [{"name": "a", "weight": 1e308}, '
                         '{"name": "b", "weight": 1e308}]}')


def test_statistics_match_textbook_values():
  low, high = wilson_interval(10, 100)
  assert (round(low, 4), round(high, 4)) == (0.0552, 0.1744)
  # 10/100 vs 20/100: z = 1.98, two-sided p = 0.0477
  assert two_proportion_p_value(10, 100, 20, 100) == pytest.approx(0.0477, abs=2e-4)
  rows = report({"a": {"impressions": 100, "clicks": 10}, "b": {"impressions": 100, "clicks": 20}})
  assert rows[0]["control"] and rows[1]["p_value_vs_control"] == pytest.approx(0.0477, abs=2e-4)


def test_wilson_interval_holds_the_observed_rate_at_the_extremes():
  # Round-off once put the bound of 0/3 above 0 and of 10/10 below 1 (a CI failure).
  for shown in range(1, 400):
    for clicks in (0, 1, shown // 2, shown - 1, shown):
      low, high = wilson_interval(clicks, shown)
      assert 0.0 <= low <= clicks / shown <= high <= 1.0, (clicks, shown)
  assert wilson_interval(0, 3)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_feedback_rows_are_durable_and_readable_by_the_pipeline(tmp_path):
  log = FeedbackLog(str(tmp_path))
  log.append([feedback_row("r1", "u1", "i1", "impression", 1, 0.5, "control", timestamp=10),
              feedback_row("r1", "u1", "i1", "click", 1, 0.5, "control", timestamp=11)])
  with pytest.raises(contract.ContractError):  # still open: invisible to the pipeline
    parsing.list_table_files(str(tmp_path), contract.INTERACTIONS)
  path = log.close()
  rows = list(parsing.read_file_rows(path, contract.INTERACTIONS))
  assert [(r["event"], r["propensity"], r["position"], r["variant"]) for r in rows] == [
      ("impression", 0.5, 1, "control"), ("click", 0.5, 1, "control")]


def test_concurrent_appends_share_fsyncs_and_each_returns_after_one_that_covers_it(
    tmp_path, monkeypatch):
  """Group commit: every append returns only after an fsync of a file size that includes its
  row has completed, and concurrent appends need fewer fsyncs than appends."""
  real_fsync, synced_sizes = os.fsync, []

  def fsync(fd):
    size = os.fstat(fd).st_size  # what this fsync makes durable (flushed before it)
    time.sleep(0.002)  # a slow disk, so appends arrive while one syncs
    real_fsync(fd)
    synced_sizes.append(size)

  monkeypatch.setattr(os, "fsync", fsync)
  log = FeedbackLog(str(tmp_path))
  durable_when_returned = {}

  def writer(t):
    for n in range(25):
      request_id = f"r{t}-{n}"
      log.append([feedback_row(request_id, "u1", "i1", "click", 1, 1.0, "a", timestamp=10)])
      durable_when_returned[request_id] = max(synced_sizes)

  threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  with open(log.path, "rb") as f:
    content = f.read()
  ends, offset = {}, 0
  for line in content.splitlines(keepends=True):
    offset += len(line)
    ends[json.loads(line)["request_id"]] = offset
  assert set(ends) == set(durable_when_returned) and len(ends) == 200
  assert all(durable_when_returned[r] >= ends[r] for r in ends)
  assert len(synced_sizes) < 200
  log.close()


# A writer in its own process: appends one row per line read on stdin, prints its file's path;
# "close" closes the log, "crash" dies mid-write (SIGKILL after a torn line, no clean-up).
_WRITER = """
import os, sys
from serving.feedback_log import FeedbackLog, feedback_row
log = FeedbackLog(sys.argv[1])
for n, line in enumerate(sys.stdin):
  if line.strip() == "close":
    print(log.close(), flush=True)
    break
  log.append([feedback_row(f"r{n}", "u1", "i1", "click", 1, 1.0, "a", timestamp=10)])
  if line.strip() == "crash":
    log._file.write(b'{"user_id": "u2", "item_')
    log._file.flush()
    os.kill(os.getpid(), 9)
  print(log.path, flush=True)
"""


def _writer(data_root):
  return subprocess.Popen([sys.executable, "-c", _WRITER, data_root], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def _send(writer, line):
  writer.stdin.write(line + "\n")
  writer.stdin.flush()
  return writer.stdout.readline().strip()


def test_a_crash_leaves_nothing_torn(tmp_path):
  writer = _writer(str(tmp_path))
  open_path = _send(writer, "row")
  _send(writer, "crash")  # the process died mid-write
  assert writer.wait(60) == -9
  recovered = FeedbackLog(str(tmp_path)).recovered  # the next start
  assert len(recovered) == 1 and not os.path.exists(open_path)
  rows = list(parsing.read_file_rows(recovered[0], contract.INTERACTIONS))
  assert [r["user_id"] for r in rows] == ["u1", "u1"]


def test_a_second_server_never_takes_a_live_writers_file(tmp_path):
  """Issue 9 #13: two processes on one data root: the second's start-up recovery leaves the
  first's open file alone (its lock is held), each writes its own file, and both close cleanly
  with every row."""
  first = _writer(str(tmp_path))
  first_path = _send(first, "row")
  second = FeedbackLog(str(tmp_path))  # this test's process: a second server starting
  assert second.recovered == [] and os.path.exists(first_path)
  second.append([feedback_row("s1", "u2", "i2", "click", 1, 1.0, "a", timestamp=11)])
  assert second.path != first_path
  assert _send(first, "row") == first_path  # still its file, still open
  closed = _send(first, "close")
  assert first.wait(60) == 0 and closed == first_path[:-len(".open")]
  assert len(list(parsing.read_file_rows(closed, contract.INTERACTIONS))) == 2
  mine = second.close()
  assert [r["request_id"] for r in parsing.read_file_rows(mine, contract.INTERACTIONS)] == [
      "s1"]


def test_rotation_by_size(tmp_path):
  log = FeedbackLog(str(tmp_path), max_bytes=200)
  for i in range(10):
    log.append([feedback_row(f"r{i}", "u", "i", "click", 1, 1.0, "a", timestamp=i)])
  log.close()
  files = parsing.list_table_files(str(tmp_path), contract.INTERACTIONS)
  assert len(files) > 1
  assert sum(1 for f in files for _ in parsing.read_file_rows(f, contract.INTERACTIONS)) == 10


def test_rows_outside_the_contract_are_refused(tmp_path):
  with pytest.raises(ValueError, match="outside the contract"):
    FeedbackLog(str(tmp_path)).append([{"user_id": "u", "clicked_at": 1}])


def test_the_ab_report_reads_what_a_running_server_acknowledged(tmp_path):
  """Issue 9 #3: the open file (complete lines only) is counted; the pipeline still skips it."""
  log = FeedbackLog(str(tmp_path))
  log.append([feedback_row("r1", "u1", "i1", "impression", 1, 1.0, "control", timestamp=10),
              feedback_row("r1", "u1", "i2", "impression", 2, 1.0, "control", timestamp=10),
              feedback_row("r1", "u1", "i1", "click", 1, 1.0, "control", timestamp=11)])
  with open(log.path, "ab") as f:
    f.write(b'{"event": "impression", "item_id": "i3"')  # a write in progress
  assert count_feedback(str(tmp_path)) == {"control": {"impressions": 2, "clicks": 1}}
  with pytest.raises(contract.ContractError):
    parsing.list_table_files(str(tmp_path), contract.INTERACTIONS)


def test_the_ab_report_gives_no_verdict_on_too_few_data():
  """Issue 9 #4: 1 click in 3 impressions against 0 in 3 is not a result; both the table and
  the JSON rows say "too few" below MIN_IMPRESSIONS impressions or MIN_CLICKS clicks."""
  rows = report({"control": {"impressions": 3, "clicks": 0},
                 "forged": {"impressions": 3, "clicks": 3}}, control="control")
  assert rows[1]["p_value_vs_control"] is None and rows[1]["verdict"] == TOO_FEW
  assert TOO_FEW in table(rows).splitlines()[2]
  enough = {"impressions": MIN_IMPRESSIONS, "clicks": MIN_CLICKS}
  assert report({"a": enough, "b": {**enough, "clicks": MIN_CLICKS - 1}})[1]["verdict"] == TOO_FEW
  assert report({"a": enough, "b": enough})[1]["p_value_vs_control"] == pytest.approx(1.0)


def _shown(request_id, items, variant="control", user="u1", timestamp=None):
  return [feedback_row(request_id, user, item, "impression", position, 0.25, variant,
                       timestamp=timestamp) for position, item in enumerate(items, start=1)]


def test_feedback_must_match_an_issued_request():
  """Issue 9 #4: an unknown request id is NOT_FOUND; an item, position, propensity, variant or
  user the request did not have is INVALID_ARGUMENT naming the field."""
  issued = IssuedRequests()
  issued.record(_shown("r1", ["i1", "i2"]))
  entry, position, propensity = issued.check("r1", "i2", 0, 0.0, "", "")
  assert (entry.variant, entry.user_id, position, propensity) == ("control", "u1", 2, 0.25)
  assert issued.check("r1", "i2", 2, 0.25, "control", "u1")[1] == 2  # echoing is fine
  forged = [(("never", "i1", 0, 0.0, "", ""), "NOT_FOUND", "request_id 'never' was not issued"),
            (("r1", "i9", 0, 0.0, "", ""), "INVALID_ARGUMENT", "item_id 'i9' was not shown"),
            (("r1", "i1", 2, 0.0, "", ""), "INVALID_ARGUMENT", "position 2 does not match"),
            (("r1", "i1", 0, 0.5, "", ""), "INVALID_ARGUMENT", "propensity 0.5 does not match"),
            (("r1", "i1", 0, 0.0, "forged", ""), "INVALID_ARGUMENT",
             "variant 'forged' does not match"),
            (("r1", "i1", 0, 0.0, "", "u2"), "INVALID_ARGUMENT", "user_id 'u2' does not match")]
  for args, code, message in forged:
    with pytest.raises(CascadeError, match=message) as error:
      issued.check(*args)
    assert error.value.code == code
  with pytest.raises(CascadeError, match="already issued") as error:
    issued.record(_shown("r1", ["i3"]))
  assert error.value.code == "ALREADY_EXISTS"


def test_the_issued_record_is_bounded_by_count_and_age():
  issued = IssuedRequests(max_age_s=60, max_items=4)
  issued.record(_shown("old", ["i1"], timestamp=int(time.time()) - 120))
  issued.record(_shown("a", ["i1", "i2"]))
  issued.record(_shown("b", ["i1", "i2"]))
  issued.record(_shown("c", ["i1"]))  # 5 items: "a" goes; "old" had expired
  assert len(issued) == 2
  for gone in ("old", "a"):
    with pytest.raises(CascadeError, match="was not issued"):
      issued.check(gone, "i1", 0, 0.0, "", "")


def test_the_issued_record_is_rebuilt_from_the_log(tmp_path):
  """A restart must not refuse feedback on what the previous process showed (open files too)."""
  log = FeedbackLog(str(tmp_path))
  log.append(_shown("r1", ["i1", "i2"], variant="treatment"))
  log.close()
  log = FeedbackLog(str(tmp_path))
  log.append(_shown("r2", ["i3"]))
  issued = rebuilt(recent_feedback_rows(str(tmp_path), 3600, 1 << 20))
  assert issued.check("r1", "i2", 2, 0.25, "treatment", "u1")[1] == 2
  assert issued.check("r2", "i3", 0, 0.0, "", "")[0].variant == "control"
  assert len(rebuilt(recent_feedback_rows(str(tmp_path), 3600, 1))) == 1  # newest file only


def test_item_vectors_embed_each_item_once_per_version_and_keep_the_latest_versions():
  calls = []

  def embed(version, items):
    calls.append((version, list(items)))
    return np.array([[version, int(item[1:])] for item in items], np.float32)

  vectors = ItemVectors(embed, max_versions=2)
  np.testing.assert_array_equal(vectors.get(1, ["i3", "i1", "i3"]), [[1, 3], [1, 1], [1, 3]])
  np.testing.assert_array_equal(vectors.get(1, ["i1", "i2"]), [[1, 1], [1, 2]])
  assert calls == [(1, ["i3", "i1"]), (1, ["i2"])]
  vectors.get(2, ["i1"])
  vectors.get(3, ["i1"])
  np.testing.assert_array_equal(vectors.get(1, ["i1"]), [[1, 1]])  # evicted, embedded again
  assert calls[2:] == [(2, ["i1"]), (3, ["i1"]), (1, ["i1"])]
