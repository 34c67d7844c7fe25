"""The Beam join behind InteractionExampleGen: history, splits, folds, join and its errors."""
import csv
import json
import os

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
import tensorflow as tf

from pipeline.components.interaction_example_gen import (SKIP, JoinInteractions, RowPolicy,
                                                         SplitSettings)
from pipeline.data.contract import ContractError
from pipeline.data.examples import EVAL, TRAIN
from transform import features as F
from transform.features import HISTORY_ALL_TRAINING, HISTORY_EARLIER

INTERACTIONS = [
    # user u1: five interactions, out of order in the file
    ("u1", "i3", "rating", "4", "300"), ("u1", "i1", "click", "", "100"),
    ("u1", "i2", "purchase", "", "200"), ("u1", "i5", "rating", "5", "500"),
    ("u1", "i4", "impression", "", "400"),  # an impression is not a positive: dropped
    ("u2", "i1", "view", "", "150"),  # a single interaction: train only
]
ITEMS = [("i1", "Toy Story", "Animation|Comedy", "1995"), ("i2", "Heat", "Crime", "1995"),
         ("i3", "Alien", "Horror|Sci-Fi", "1979"), ("i4", "Up", "", ""),
         ("i5", "Fargo", "Crime|Drama", "1996")]
USERS = [("u1", "30", "F", "writer")]


def _write(path, header, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)


def make_data_root(root, interactions=INTERACTIONS, items=ITEMS, users=USERS):
  _write(f"{root}/interactions/log.csv", ["user_id", "item_id", "event", "rating", "timestamp"],
         interactions)
  _write(f"{root}/items/catalog.csv", ["item_id", "title", "categories", "year"], items)
  _write(f"{root}/users/users.csv", ["user_id", "age", "gender", "occupation"], users)
  return str(root)


def _run(data_root, eval_fraction=0.25, history_scope=HISTORY_EARLIER, folds=0,
         policy=RowPolicy(), report_path=None, beam_args=(), out_dir=None, parse=True):
  """Runs the join in a real Beam pipeline; returns {split: [parsed example dicts]} (with
  `parse=False`, the serialized examples)."""
  out_dir = out_dir or os.path.join(data_root, "_examples")
  with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
    splits = p | JoinInteractions(data_root, SplitSettings(eval_fraction, history_scope,
                                                           folds=folds), policy, report_path)
    for split, examples in splits.items():
      _ = examples | f"Write[{split}]" >> beam.io.WriteToTFRecord(
          os.path.join(out_dir, split), shard_name_template="")
  return {split: [_parse(r.numpy()) if parse else r.numpy()
                  for r in tf.data.TFRecordDataset(os.path.join(out_dir, split))]
          for split in (TRAIN, EVAL)}


def _parse(serialized):
  features = tf.train.Example.FromString(serialized).features.feature
  out = {}
  for name, feature in features.items():
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value)
    out[name] = [v.decode() if isinstance(v, bytes) else v for v in values]
  return out


def test_examples_come_grouped_by_user_the_same_from_the_multi_process_runner(slice_root,
                                                                               tmp_path):
  """On the MovieLens slice: each user's examples are contiguous and a user's items are not (a
  trainer's bounded shuffle buffer then spans the catalog, however long the log); DirectRunner's
  multi-process mode writes the same serialized examples as one process."""
  runs = {mode: _run(slice_root, 0.1, HISTORY_ALL_TRAINING, out_dir=str(tmp_path / mode),
                     parse=False,
                     beam_args=[f"--direct_running_mode={mode}", "--direct_num_workers=2"])
          for mode in ("in_memory", "multi_processing")}
  for split in (TRAIN, EVAL):
    assert sorted(runs["in_memory"][split]) == sorted(runs["multi_processing"][split])
  train = [_parse(serialized) for serialized in runs["in_memory"][TRAIN]]
  assert len(train) > 1000
  for key in (F.USER_ID, F.ITEM_ID):
    values = [example[key][0] for example in train]
    runs[key] = sum(1 for i, v in enumerate(values) if i == 0 or v != values[i - 1])
    runs[f"distinct {key}"] = len(set(values))
  assert runs[F.USER_ID] == runs[f"distinct {F.USER_ID}"] == 120
  assert runs[F.ITEM_ID] > 0.9 * len(train)  # items scattered, not in blocks


def test_history_is_prior_items_most_recent_first_and_split_is_by_time(tmp_path):
  results = _run(make_data_root(tmp_path))
  u1 = sorted((e for split in (TRAIN, EVAL) for e in results[split] if e["user_id"] == ["u1"]),
              key=lambda e: e["timestamp"][0])
  assert [e["item_id"][0] for e in u1] == ["i1", "i2", "i3", "i5"]  # impression i4 dropped
  assert u1[3]["history"] == ["i3", "i2", "i1"]
  assert u1[0]["history"] == []
  assert [e["user_history_length"][0] for e in u1] == [0, 1, 2, 3]
  # 25% of u1's 4 positives = the single latest one is eval; u2's single interaction trains.
  assert [(e["user_id"][0], e["item_id"][0]) for e in results[EVAL]] == [("u1", "i5")]
  assert {e["user_id"][0] for e in results[TRAIN]} == {"u1", "u2"}


def test_no_example_sees_its_future(tmp_path):
  results = _run(make_data_root(tmp_path))
  time_of = {row[1]: int(row[4]) for row in INTERACTIONS if row[0] == "u1"}
  for example in results[TRAIN] + results[EVAL]:
    if example["user_id"] == ["u1"]:
      assert all(time_of[item] < example["timestamp"][0] for item in example["history"])


def test_join_attaches_catalog_and_user_features(tmp_path):
  results = _run(make_data_root(tmp_path))
  alien = next(e for e in results[TRAIN] if e["item_id"] == ["i3"])
  assert alien["title"] == ["Alien"]
  assert alien["categories"] == ["Horror", "Sci-Fi"]
  assert alien["year"] == [1979]
  assert alien["rating"] == [4.0]
  assert alien["gender"] == ["F"] and alien["age"] == [30] and alien["occupation"] == ["writer"]
  u2 = next(e for e in results[TRAIN] if e["user_id"] == ["u2"])
  assert "gender" not in u2 and "rating" not in u2  # missing stays missing, not a fake value


def test_duplicate_catalog_ids_name_both_rows(tmp_path):
  root = make_data_root(tmp_path, items=ITEMS + [("i2", "Heat (duplicate)", "Crime", "1995")])
  with pytest.raises(Exception, match=r"duplicate item id 'i2'.*catalog\.csv:3.*catalog\.csv:7"):
    _run(root)


def test_interaction_with_unknown_item_names_the_row(tmp_path):
  root = make_data_root(tmp_path, interactions=INTERACTIONS + [("u2", "i9", "click", "", "160")])
  with pytest.raises(Exception, match=r"log\.csv:8: item_id 'i9' is not in the item catalog"):
    _run(root)


def test_unparseable_timestamp_names_file_and_line(tmp_path):
  root = make_data_root(tmp_path,
                        interactions=INTERACTIONS + [("u2", "i2", "click", "", "yesterday")])
  with pytest.raises(Exception, match=r"log\.csv:8.*timestamp.*yesterday"):
    _run(root)


def test_missing_required_column_names_file_and_column(tmp_path):
  root = make_data_root(tmp_path)
  _write(f"{root}/items/catalog.csv", ["item_id", "categories"], [("i1", "Comedy")])
  with pytest.raises(Exception, match=r"catalog\.csv.*title"):
    _run(root)


def test_contract_error_type_survives_beam(tmp_path):
  root = make_data_root(tmp_path, items=ITEMS + [("i1", "Again", "", "")])
  with pytest.raises(Exception) as raised:
    _run(root)
  assert "ContractError" in repr(raised.value) or isinstance(raised.value, ContractError)


def test_interactions_in_the_same_second_are_not_each_others_history(tmp_path):
  interactions = [("u1", "i1", "rating", "3", "100"), ("u1", "i2", "rating", "4", "200"),
                  ("u1", "i3", "rating", "5", "200"), ("u1", "i4", "rating", "5", "300")]
  results = _run(make_data_root(tmp_path, interactions=interactions))
  history = {e["item_id"][0]: e["history"] for e in results[TRAIN] + results[EVAL]}
  assert history == {"i1": [], "i2": ["i1"], "i3": ["i1"], "i4": ["i3", "i2", "i1"]}


def _by_item(results, user):
  return {e["item_id"][0]: e for split in (TRAIN, EVAL) for e in results[split]
          if e["user_id"] == [user]}


def test_all_training_scope_gives_every_example_the_other_training_items(tmp_path):
  results = _run(make_data_root(tmp_path), history_scope=HISTORY_ALL_TRAINING)
  u1 = _by_item(results, "u1")
  (held_out,) = [e["item_id"][0] for e in results[EVAL] if e["user_id"] == ["u1"]]
  training = [i for i in ("i5", "i3", "i2", "i1") if i != held_out]  # most recent first
  # The eval item is in no history; each training item is left out of its own.
  assert u1[held_out]["history"] == training
  for item in training:
    assert u1[item]["history"] == [i for i in training if i != item]
  assert u1[held_out]["user_history_length"] == [3]


def test_all_training_scope_keeps_the_most_recent_items_of_a_long_history(tmp_path):
  n = F.HISTORY_LENGTH + 5
  interactions = [("u1", f"i{t}", "rating", "4", str(100 + t)) for t in range(n)]
  items = [(f"i{t}", f"Film {t}", "Drama", "1990") for t in range(n)]
  results = _run(make_data_root(tmp_path, interactions=interactions, items=items),
                 eval_fraction=0.01, history_scope=HISTORY_ALL_TRAINING)
  (held_out,) = [e["item_id"][0] for e in results[EVAL]]  # at least one eval item
  training = [f"i{t}" for t in range(n - 1, -1, -1) if f"i{t}" != held_out]
  history = {item: e["history"] for item, e in _by_item(results, "u1").items()}
  assert history[held_out] == training[:F.HISTORY_LENGTH]
  assert history[training[-1]] == training[:F.HISTORY_LENGTH]  # an old item: the latest
  assert history[training[0]] == training[1:F.HISTORY_LENGTH + 1]  # its own left out
  assert history[training[3]] == [i for i in training[:F.HISTORY_LENGTH + 1]
                                  if i != training[3]]


def test_random_eval_split_holds_out_a_share_of_each_user_anywhere_in_time(tmp_path):
  interactions = [(f"u{u}", f"i{t}", "rating", "4", str(100 + t))
                  for u in range(30) for t in range(8)]
  items = [(f"i{t}", f"Film {t}", "Drama", "1990") for t in range(8)]
  root = make_data_root(tmp_path, interactions=interactions, items=items, users=[])
  results = _run(root, history_scope=HISTORY_ALL_TRAINING)
  held_out = {}
  for e in results[EVAL]:
    held_out.setdefault(e["user_id"][0], []).append(e["item_id"][0])
  assert all(len(items) == 2 for items in held_out.values()) and len(held_out) == 30
  assert len({tuple(sorted(items)) for items in held_out.values()}) > 5  # not the latest ones
  again = _run(root, history_scope=HISTORY_ALL_TRAINING)  # the same on every run
  assert sorted((e["user_id"][0], e["item_id"][0]) for e in again[EVAL]) == sorted(
      (u, i) for u, items in held_out.items() for i in items)


def test_folds_and_history_folds_agree_and_eval_is_in_no_fold(tmp_path):
  interactions = [(f"u{u}", f"i{t}", "rating", "4", str(100 + t))
                  for u in range(10) for t in range(12)]
  items = [(f"i{t}", f"Film {t}", "Drama", "1990") for t in range(12)]
  root = make_data_root(tmp_path, interactions=interactions, items=items, users=[])
  results = _run(root, history_scope=HISTORY_ALL_TRAINING, folds=3)
  fold_of = {(e["user_id"][0], e["item_id"][0]): e["fold"][0] for e in results[TRAIN]}
  assert set(fold_of.values()) == {0, 1, 2}
  assert all(e["fold"] == [F.NO_FOLD] for e in results[EVAL])
  for e in results[TRAIN] + results[EVAL]:
    user = e["user_id"][0]
    assert e["history_folds"] == [fold_of[(user, item)] for item in e["history"]]


def test_sequences_hold_out_only_their_latest_training_fold(tmp_path):
  interactions = [("u1", f"i{t}", "rating", "4", str(100 + t)) for t in range(9)]
  items = [(f"i{t}", f"Film {t}", "Drama", "1990") for t in range(9)]
  results = _run(make_data_root(tmp_path, interactions=interactions, items=items),
                 eval_fraction=0.1, history_scope=HISTORY_EARLIER, folds=4)
  folds = {e["item_id"][0]: e["fold"][0] for e in results[TRAIN]}
  # 8 training items, the latest quarter (2) held out as fold 0, the rest in no fold.
  assert folds == {**{f"i{t}": F.NO_FOLD for t in range(6)}, "i6": 0, "i7": 0}
  assert F.held_out_folds(HISTORY_EARLIER, 4) == (0,)
  assert F.held_out_folds(HISTORY_ALL_TRAINING, 4) == (0, 1, 2, 3)


def test_unknown_history_scope_and_mismatched_eval_split_are_rejected():
  with pytest.raises(ValueError, match="history_scope"):
    SplitSettings(history_scope="future")
  with pytest.raises(ValueError, match="does not pair with history_scope 'all_training'"):
    SplitSettings(history_scope=HISTORY_ALL_TRAINING, eval_split=F.EVAL_LATEST)


# --- Every bad row in one pass; --invalid_rows skip (issue 13) ---------------------------------

# Five untitled movies, an interaction with an item not in the catalog, one in the future, one
# with a bad timestamp: all reported by one run.
UNTITLED = [(f"m{k}", "", "Drama", "1990") for k in range(5)]
BAD_INTERACTIONS = [("u2", "i9", "click", "", "160"), ("u2", "i2", "click", "", "4102444800"),
                    ("u2", "i3", "click", "", "yesterday")]


def test_every_bad_row_of_every_kind_is_reported_in_one_run(tmp_path):
  root = make_data_root(tmp_path, interactions=INTERACTIONS + BAD_INTERACTIONS,
                        items=ITEMS + UNTITLED)
  report = os.path.join(str(tmp_path), "report", "invalid_rows.json")
  with pytest.raises(Exception) as raised:
    _run(root, report_path=report)
  message = str(raised.value)
  assert "ContractError" in repr(raised.value) or isinstance(raised.value, ContractError)
  assert "8 invalid row(s) of 20 read" in message and "--invalid_rows skip" in message
  assert "items: required column 'title' missing or empty: 5 row(s)" in message
  for line in range(7, 12):  # every untitled movie, not just the first
    assert f"catalog.csv:{line}: required column 'title'" in message
  assert "log.csv:8: item_id 'i9' is not in the item catalog" in message
  assert "log.csv:9: column 'timestamp'" in message and "in the future" in message
  assert "log.csv:10: column 'timestamp' value 'yesterday'" in message
  with open(report) as f:
    kinds = json.load(f)["kinds"]
  assert kinds["items: required column 'title' missing or empty"]["count"] == 5


def test_bad_rows_per_kind_are_bounded_but_all_counted(tmp_path):
  untitled = [(f"m{k}", "", "Drama", "1990") for k in range(30)]
  root = make_data_root(tmp_path, items=ITEMS + untitled)
  with pytest.raises(Exception) as raised:
    _run(root)
  message = str(raised.value)
  assert "missing or empty: 30 row(s)" in message and "... and 10 more" in message
  assert message.count("required column 'title' is missing") == 20
  assert "catalog.csv:7:" in message and "catalog.csv:36:" not in message  # the first 20


def test_skip_drops_bad_rows_counts_and_reports_them(tmp_path):
  interactions = [(f"u{u}", "i1", "view", "", str(100 + u)) for u in range(40)]
  root = make_data_root(tmp_path, interactions=interactions + BAD_INTERACTIONS[:2], users=[])
  report = os.path.join(str(tmp_path), "report", "invalid_rows.json")
  results = _run(root, policy=RowPolicy(invalid_rows=SKIP, max_invalid_share=0.1),
                 report_path=report)
  examples = results[TRAIN] + results[EVAL]
  assert len(examples) == 40 and all(e["item_id"] == ["i1"] for e in examples)
  with open(report) as f:
    summary = json.load(f)
  assert summary["invalid_rows"] == 2 and summary["rows_read"] == 47 and summary["policy"] == SKIP


def test_skip_still_halts_beyond_the_share_and_on_duplicates(tmp_path):
  root = make_data_root(tmp_path, interactions=INTERACTIONS + BAD_INTERACTIONS)
  with pytest.raises(Exception, match=r"more than --max_invalid_share 0.01"):
    _run(root, policy=RowPolicy(invalid_rows=SKIP))
  root = make_data_root(tmp_path / "dup", items=ITEMS + [("i1", "Again", "", "")])
  with pytest.raises(Exception, match=r"never drops these: items: duplicate item id"):
    _run(root, policy=RowPolicy(invalid_rows=SKIP, max_invalid_share=1.0))


def test_clock_skew_is_configurable():
  with pytest.raises(ValueError, match="invalid_rows"):
    RowPolicy(invalid_rows="drop")
  with pytest.raises(ValueError, match="max_invalid_share"):
    RowPolicy(max_invalid_share=2.0)
  now = 1_000_000.0
  assert JoinInteractions("/nowhere", policy=RowPolicy(max_clock_skew_s=60), now=now
                          )._max_timestamp == now + 60
  assert JoinInteractions("/nowhere", policy=RowPolicy(max_clock_skew_s=None)
                          )._max_timestamp is None


def test_component_under_skip_records_the_skipped_rows(tmp_path):
  """Through TFX: the executor writes the report beside the Examples artifact, sets
  `invalid_rows_skipped` on it, and the run summary reads it back."""
  from tfx import v1 as tfx
  from tfx.orchestration import metadata

  from pipeline import run_report
  from pipeline.components.interaction_example_gen import interaction_example_gen
  interactions = [(f"u{u}", "i1", "view", "", str(100 + u)) for u in range(40)]
  root = make_data_root(tmp_path / "data", interactions=interactions + BAD_INTERACTIONS[:1],
                        users=[])
  db = str(tmp_path / "metadata.sqlite")
  example_gen = interaction_example_gen(root, SplitSettings(0.25, HISTORY_EARLIER),
                                        RowPolicy(invalid_rows=SKIP, max_invalid_share=0.05))
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name="skip", pipeline_root=str(tmp_path / "root"), components=[example_gen],
      metadata_connection_config=metadata.sqlite_metadata_connection_config(db)))
  with metadata.Metadata(metadata.sqlite_metadata_connection_config(db)) as m:
    found = run_report.invalid_rows(m.store, "skip")
    (examples,) = m.store.get_artifacts_by_type("Examples")
  assert found["skipped"] == 1 and found["kinds"] == {
      "interactions: item_id not in the item catalog": 1}
  assert examples.custom_properties["invalid_rows_skipped"].int_value == 1
  summary = {"run_id": "r", "status": "succeeded", "seconds": 1, "summary_path": "s.json",
             "invalid_rows": found}
  assert "skipped 1 invalid row(s) of 46 read (--invalid_rows skip)" in run_report.report(
      summary, stages=())
