"""Dated spans, the rolling window, retention, drift, and the retraining cycle (its lock, its
clean exit on no new data, a fully cached re-run), on real MovieLens rows split into daily
spans by their timestamps."""
import datetime
import json
import os
import shutil

import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from pipeline.components import drift
from pipeline.data import contract, parsing, spans
from pipeline.data.examples import encode_example
from pipeline.runners import cycle
from tests.conftest import pipeline_config


def _write_jsonl(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    for row in rows:
      f.write(json.dumps({k: v for k, v in row.items()
                          if k != contract.SOURCE_FIELD and v not in (None, "", [])}) + "\n")


def spanned_root(slice_root, root, days=None):
  """The slice with its interactions in daily spans (UTC date of each timestamp) and its
  catalog and users as one snapshot span; `days`: keep only the latest N days."""
  by_day = {}
  for row in parsing.read_table(slice_root, contract.INTERACTIONS):
    day = datetime.datetime.fromtimestamp(row["timestamp"], datetime.timezone.utc).date()
    by_day.setdefault(day, []).append(row)
  chosen = sorted(by_day)[-days:] if days else sorted(by_day)
  for day in chosen:
    _write_jsonl(os.path.join(root, contract.INTERACTIONS, spans.span_name(day), "part.jsonl"),
                 by_day[day])
  newest = spans.span_name(chosen[-1])
  for table in (contract.ITEMS, contract.USERS):
    _write_jsonl(os.path.join(root, table, newest, "part.jsonl"),
                 parsing.read_table(slice_root, table))
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


def test_second_cycle_refuses_while_one_holds_the_lock(tmp_path, capsys):
  config = pipeline_config(str(tmp_path), str(tmp_path / "data"))
  held = cycle.acquire_lock(config.output_root)
  try:
    assert cycle.run_cycle(config) == cycle.BUSY
    assert "another cycle holds" in capsys.readouterr().err
  finally:
    held.close()
  assert cycle.acquire_lock(config.output_root) is not None


def test_cycles_run_then_exit_cleanly_then_rerun_fully_cached(slice_root, tmp_path, capsys):
  """One cycle trains and pushes; the next, with no new file, exits 0 without running; forced,
  every component, the evaluator and the pusher included, is a cache hit."""
  root, _ = spanned_root(slice_root, str(tmp_path / "data"))
  argv = ["--data_root", root, "--output_root", str(tmp_path / "outputs"), "--epochs", "3",
          "--no_ranker", "--no_bandit", "--gate_metrics", "recall@100",
          "--regression_tolerance", "1.0", "--drift_min_span_rows", "50"]
  assert cycle.main(argv) == cycle.OK
  first = cycle.last_cycle(str(tmp_path / "outputs"))
  assert first["status"] == "succeeded" and first["pushed"]["retrieval"]
  assert cycle.main(argv) == cycle.OK
  assert "no new data since cycle" in capsys.readouterr().out
  assert cycle.main(argv + ["--force"]) == cycle.OK
  forced = cycle.last_cycle(str(tmp_path / "outputs"))
  with open(forced["summary"]) as f:
    summary = json.load(f)
  ran = {name for name in summary["component_seconds"] if not name.endswith("_resolver")}
  assert {"RetrievalEvaluator", "retrieval_pusher"} <= ran <= set(summary["cached_components"])
  assert summary["pushed_to"] == first["pushed"]["retrieval"]  # the same version, not a new one
