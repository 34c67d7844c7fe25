"""Dated spans, the rolling window, retention, drift, and the retraining cycle (its lock, its
clean exit on no new data, a fully cached re-run, the closed loop through a running server's
feedback and a warm start), on real MovieLens rows split into daily spans by their
timestamps."""
import datetime
import json
import os
import shutil
import time

import grpc
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from pipeline.components import drift
from pipeline.data import contract, parsing, span_split, spans
from pipeline.data.examples import encode_example
from pipeline.runners import cycle
from serving.protos import recommender_pb2 as pb
from serving.protos import recommender_pb2_grpc
from tests.conftest import pipeline_config
from tests.serving_stack import ServeProcess

AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE


def _write_jsonl(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write("".join(span_split.json_line(row) for row in rows))


def spanned_root(slice_root, root, days=None):
  """The slice with its interactions in daily spans (UTC date of each timestamp) and its
  catalog and users as one snapshot span; `days`: keep only the latest N days."""
  written = span_split.write_daily_interactions(slice_root, root)
  for day in written[:-days] if days else []:
    shutil.rmtree(os.path.join(root, contract.INTERACTIONS, spans.span_name(day)))
  chosen = written[-days:] if days else written
  span_split.write_snapshots(slice_root, root, chosen[-1])
  return root, chosen


def test_window_reads_latest_spans_and_snapshots(slice_root, tmp_path):
  root, days = spanned_root(slice_root, str(tmp_path / "data"))
  assert len(days) > 5
  window = spans.SpanWindow(spans=3)
  read = spans.window_spans(root, contract.INTERACTIONS, window)
  assert read == [spans.span_name(day) for day in days[-3:]]
  files = parsing.list_table_files(root, contract.INTERACTIONS, window)
  assert len(files) == 3 and all(spans.span_of(path) for path in files)
  # Items and users are snapshots: only their newest span, whatever the window.
  assert parsing.list_table_files(root, contract.ITEMS, window) == [
      os.path.join(root, contract.ITEMS, spans.span_name(days[-1]), "part.jsonl")]
  # Everything by default; a flat table as before.
  assert len(parsing.list_table_files(root, contract.INTERACTIONS)) == len(days)
  assert parsing.list_table_files(slice_root, contract.INTERACTIONS) == sorted(
      tf.io.gfile.glob(os.path.join(slice_root, contract.INTERACTIONS, "*")))


def test_retention_ignores_old_spans_and_deletes_only_when_asked(slice_root, tmp_path):
  root, days = spanned_root(slice_root, str(tmp_path / "data"))
  window = spans.SpanWindow(max_age_days=7)
  kept = spans.window_spans(root, contract.INTERACTIONS, window)
  assert kept and all((days[-1] - spans.span_date(name, "x")).days <= 7 for name in kept)
  expired = spans.expired_spans(root, window)
  assert len(kept) + len(expired) == len(days)
  assert all(os.path.isdir(path) for path in expired)  # ignored, never deleted by reading
  config = pipeline_config(str(tmp_path), root, max_span_age_days=7)
  assert cycle.delete_expired(config) == expired
  assert not any(os.path.exists(path) for path in expired)
  assert spans.window_spans(root, contract.INTERACTIONS, window) == kept


def test_fingerprint_covers_exactly_the_files_read(slice_root, tmp_path):
  root, days = spanned_root(slice_root, str(tmp_path / "data"), days=10)
  window = spans.SpanWindow(spans=5)
  before = spans.snapshot(root, window)
  newest = os.path.join(root, contract.INTERACTIONS, spans.span_name(days[-1]))
  # The serving log's open file is not read, so it changes nothing.
  with open(os.path.join(newest, "feedback-x.jsonl.open"), "w") as f:
    f.write('{"user_id": "1", "item_id": "1", "event": "click", "timestamp": 1}\n')
  assert spans.snapshot(root, window).fingerprint == before.fingerprint
  # A late span outside the window changes nothing; inside it, it is new data.
  old = days[0] - datetime.timedelta(days=30)
  _write_jsonl(os.path.join(root, contract.INTERACTIONS, spans.span_name(old), "late.jsonl"),
               [{"user_id": "1", "item_id": "1", "event": "rating", "rating": 4.0,
                 "timestamp": 1}])
  assert spans.snapshot(root, window).fingerprint == before.fingerprint
  os.rename(os.path.join(newest, "feedback-x.jsonl.open"),
            os.path.join(root, contract.INTERACTIONS, spans.span_name(days[-2]), "late.jsonl"))
  after = spans.snapshot(root, window)
  assert after.fingerprint != before.fingerprint
  assert after.latest_span == spans.span_number(spans.span_name(days[-1]))


def test_mixed_layout_and_bad_span_names_are_refused(slice_root, tmp_path):
  root, days = spanned_root(slice_root, str(tmp_path / "data"), days=2)
  shutil.copy(os.path.join(root, contract.INTERACTIONS, spans.span_name(days[-1]), "part.jsonl"),
              os.path.join(root, contract.INTERACTIONS, "loose.jsonl"))
  with pytest.raises(contract.ContractError, match="loose.jsonl"):
    parsing.list_table_files(root, contract.INTERACTIONS)
  os.remove(os.path.join(root, contract.INTERACTIONS, "loose.jsonl"))
  os.makedirs(os.path.join(root, contract.INTERACTIONS, "span=yesterday"))
  with pytest.raises(contract.ContractError, match="span=yesterday.*YYYY-MM-DD"):
    parsing.list_table_files(root, contract.INTERACTIONS)


def test_feedback_log_writes_into_todays_span(slice_root, tmp_path):
  from serving.feedback_log import FeedbackLog, feedback_row
  root, _ = spanned_root(slice_root, str(tmp_path / "data"), days=2)
  log = FeedbackLog(root)
  log.append([feedback_row("r1", "1", "50", contract.CLICK, 0, 1.0, "a")])
  closed = log.close()
  today = datetime.datetime.now(datetime.timezone.utc).date()
  assert os.path.dirname(closed) == os.path.join(root, contract.INTERACTIONS,
                                                 spans.span_name(today))
  assert spans.window_spans(root, contract.INTERACTIONS)[-1] == spans.span_name(today)


def _span_statistics(tmp_path, rows_by_span):
  path = str(tmp_path / "examples.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    for span, rows in rows_by_span.items():
      for row in rows:
        writer.write(encode_example({"span": span, "item_id": row["item_id"],
                                     "user_id": row["user_id"]}))
  return tfdv.generate_statistics_from_tfrecord(path, stats_options=drift.STATS_OPTIONS)


def test_drift_between_spans(slice_root, tmp_path):
  rows = list(parsing.read_table(slice_root, contract.INTERACTIONS))
  schema = text_format.Parse(open(contract.CURATED_SCHEMA).read(), schema_pb2.Schema())
  settings = drift.DriftSettings(min_span_rows=100)
  # Two ordinary days of the same log: no drift.
  calm = drift.compare_spans(_span_statistics(tmp_path, {
      "2026-11-30": rows[0:2000:2], "2026-12-01": rows[1:2000:2]}), "train", schema, settings)
  assert calm["drifted"] == [] and calm["features"]["item_id"]["distance"] < 0.5
  # A day whose clicks all went to one item (a bot, a broken logger): drift, named.
  bot = [dict(row, item_id="50") for row in rows[:1000]]
  stormy = drift.compare_spans(_span_statistics(tmp_path, {
      "2026-11-30": rows[:1000], "2026-12-01": bot}), "train", schema, settings)
  assert stormy["drifted"] == ["item_id"]
  assert "2026-12-01" in drift.describe([stormy]) and "threshold 0.5" in drift.describe([stormy])
  # Too few rows to judge: compared as skipped, never halting.
  small = drift.compare_spans(_span_statistics(tmp_path, {
      "2026-11-30": rows[:50], "2026-12-01": bot[:50]}), "train", schema, settings)
  assert small["drifted"] == [] and "drift_min_span_rows" in small["skipped"]


def test_a_run_in_the_same_second_as_the_last_gets_a_folder_of_its_own(tmp_path):
  """A fully cached cycle takes under a second: the next run's id must not be the same."""
  from pipeline.runners.local_runner import new_run_id
  now = datetime.datetime.now(datetime.timezone.utc)
  for second in range(5):
    os.makedirs(tmp_path / (now + datetime.timedelta(seconds=second)).strftime("%Y%m%dT%H%M%S"))
  run_id = new_run_id(str(tmp_path))
  assert run_id.endswith("-2") and not (tmp_path / run_id).exists()


def test_second_cycle_refuses_while_one_holds_the_lock(tmp_path, capsys):
  config = pipeline_config(str(tmp_path), str(tmp_path / "data"))
  held = cycle.acquire_lock(config.output_root)
  try:
    assert cycle.run_cycle(config) == cycle.BUSY
    assert "another cycle holds" in capsys.readouterr().err
  finally:
    held.close()
  assert cycle.acquire_lock(config.output_root) is not None


def _newest_training_report(output_root):
  """The newest retrieval Model artifact's training report (its warm start, its epochs)."""
  reports = tf.io.gfile.glob(os.path.join(output_root, "pipeline_root", "*", "Trainer", "model",
                                          "*", "training.json"))
  with open(max(reports, key=lambda path: int(path.split(os.sep)[-2]))) as f:
    return json.load(f)


def _served_feedback(root, serving_root, log_path):
  """Starts serve as README does on the cycle's data and serving roots, shows users their
  recommendations, clicks the first item for half of them, and waits for the feedback file to
  rotate (the pipeline reads closed files only); returns the running server and the clicks."""
  server = ServeProcess(["--data_root", root, "--serving_root", serving_root,
                         "--file_system_poll_wait_seconds", "0.5", "--feedback_rotate_s", "2"],
                        log_path).start()
  stub = recommender_pb2_grpc.RecommenderStub(grpc.insecure_channel(server.grpc))
  clicks = []
  for user in map(str, range(1, 41)):
    shown = stub.Recommend(pb.RecommendRequest(user=pb.UserContext(user_id=user), k=5),
                           timeout=60)
    if int(user) % 2:
      stub.Feedback(pb.FeedbackRequest(request_id=shown.request_id, user_id=user,
                                       item_id=shown.items[0].item_id, event="click"),
                    timeout=30)
      clicks.append((user, shown.items[0].item_id))
  time.sleep(2.5)
  stub.Recommend(pb.RecommendRequest(user=pb.UserContext(user_id="1"), k=5), timeout=60)
  return server, clicks


def _version_available(server, version, timeout_s=180):
  """Waits until the running model server has `version` of the retrieval model AVAILABLE."""
  models = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(server.model_server))
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    status = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "retrieval"}), timeout=10)
    if any(s.version == version and s.state == AVAILABLE for s in status.model_version_status):
      return True
    time.sleep(1)
  return False


def test_the_loop_closes_cycle_serve_feedback_cycle(slice_root, tmp_path, capsys):
  """One cycle trains (cold) and pushes; the next, with no new file, exits 0 without running;
  forced, every component, the evaluator and the pusher included, is a cache hit. Then the
  pushed model is served, users click, the feedback lands in today's span, and the next cycle
  ingests it, trains warm from the blessed model, pushes a new version, and the running server
  loads it without a restart."""
  root, _ = spanned_root(slice_root, str(tmp_path / "data"))
  outputs = str(tmp_path / "outputs")
  argv = ["--data_root", root, "--output_root", outputs, "--epochs", "3",
          "--no_ranker", "--no_bandit", "--gate_metrics", "recall@100",
          "--regression_tolerance", "1.0", "--drift_min_span_rows", "50", "--warm_start"]
  assert cycle.main(argv) == cycle.OK
  first = cycle.last_cycle(outputs)
  assert first["status"] == "succeeded" and first["pushed"]["retrieval"]
  assert cycle.main(argv) == cycle.OK
  assert "no new data since cycle" in capsys.readouterr().out
  assert cycle.main(argv + ["--force"]) == cycle.OK
  forced = cycle.last_cycle(outputs)
  assert forced["run_id"] != first["run_id"]
  with open(forced["summary"]) as f:
    summary = json.load(f)
  ran = {name for name in summary["component_seconds"] if not name.endswith("_resolver")}
  assert {"RetrievalEvaluator", "retrieval_pusher"} <= ran <= set(summary["cached_components"])
  assert summary["pushed_to"] == first["pushed"]["retrieval"]  # the same version, not a new one
  assert not _newest_training_report(outputs)["warm_start"]["warm"]

  server, clicks = _served_feedback(root, os.path.join(outputs, "serving"),
                                    str(tmp_path / "serve.log"))
  try:
    today = spans.span_name(datetime.datetime.now(datetime.timezone.utc).date())
    closed = tf.io.gfile.glob(os.path.join(root, contract.INTERACTIONS, today, "feedback-*.jsonl"))
    rows = [row for path in closed for row in parsing.read_file_rows(path,
                                                                     contract.INTERACTIONS)]
    assert {(r["user_id"], r["item_id"]) for r in rows if r["event"] == "click"} == set(clicks)

    assert cycle.main(argv) == cycle.OK
    loop = cycle.last_cycle(outputs)
    assert loop["status"] == "succeeded", loop
    assert today[len(spans.SPAN_PREFIX):] in loop["window"], loop
    report = _newest_training_report(outputs)
    assert report["warm_start"]["warm"], report["warm_start"]
    assert report["warm_start"]["vocabularies"]["item_id"]["kept"] > 0
    assert len(report["epochs"]) == 3 and "val_sampled_top_10_hit_rate" in report["epochs"][0]
    pushed = loop["pushed"]["retrieval"]
    assert pushed and pushed != first["pushed"]["retrieval"], loop
    assert _version_available(server, int(os.path.basename(pushed))), server.log_tail()
  finally:
    server.stop()
