"""The Beam join behind InteractionExampleGen: history, time split, join and its errors."""
import csv
import os

import apache_beam as beam
import pytest
import tensorflow as tf

from pipeline.components.interaction_example_gen import JoinInteractions
from pipeline.data.contract import ContractError
from pipeline.data.examples import EVAL, TRAIN
from transform import features as F
from transform.features import HISTORY_ALL_TRAINING

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


def _run(data_root, eval_fraction=0.25, history_scope="earlier"):
  """Runs the join in a real Beam pipeline; returns {split: [parsed example dicts]}."""
  out_dir = os.path.join(data_root, "_examples")
  with beam.Pipeline() as p:
    splits = p | JoinInteractions(data_root, eval_fraction, history_scope)
    for split, examples in splits.items():
      _ = examples | f"Write[{split}]" >> beam.io.WriteToTFRecord(
          os.path.join(out_dir, split), shard_name_template="")
  return {split: [_parse(r.numpy()) for r in tf.data.TFRecordDataset(os.path.join(out_dir, split))]
          for split in (TRAIN, EVAL)}


def _parse(serialized):
  features = tf.train.Example.FromString(serialized).features.feature
  out = {}
  for name, feature in features.items():
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value)
    out[name] = [v.decode() if isinstance(v, bytes) else v for v in values]
  return out


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


def test_all_training_scope_gives_every_example_the_other_training_items(tmp_path):
  results = _run(make_data_root(tmp_path), history_scope=HISTORY_ALL_TRAINING)
  history = {e["item_id"][0]: e["history"] for e in results[TRAIN] + results[EVAL]
             if e["user_id"] == ["u1"]}
  # i5 is u1's eval item: in no history; each training item is left out of its own.
  assert history == {"i1": ["i3", "i2"], "i2": ["i3", "i1"], "i3": ["i2", "i1"],
                     "i5": ["i3", "i2", "i1"]}
  lengths = {e["item_id"][0]: e["user_history_length"][0] for e in results[TRAIN] + results[EVAL]
             if e["user_id"] == ["u1"]}
  assert lengths == {"i1": 2, "i2": 2, "i3": 2, "i5": 3}


def test_all_training_scope_keeps_the_most_recent_items_of_a_long_history(tmp_path):
  n = F.HISTORY_LENGTH + 5
  interactions = [("u1", f"i{t}", "rating", "4", str(100 + t)) for t in range(n)]
  items = [(f"i{t}", f"Film {t}", "Drama", "1990") for t in range(n)]
  results = _run(make_data_root(tmp_path, interactions=interactions, items=items),
                 eval_fraction=0.01, history_scope=HISTORY_ALL_TRAINING)
  assert [e["item_id"] for e in results[EVAL]] == [[f"i{n - 1}"]]  # at least one eval item
  history = {e["item_id"][0]: e["history"] for e in results[TRAIN] + results[EVAL]}
  latest = [f"i{t}" for t in range(n - 2, n - 2 - F.HISTORY_LENGTH - 1, -1)]  # training only
  assert history["i0"] == history[f"i{n - 1}"] == latest[:F.HISTORY_LENGTH]
  assert history[f"i{n - 2}"] == latest[1:]  # its own item is left out, one older comes in
  assert history[f"i{n - 4}"] == [item for item in latest if item != f"i{n - 4}"]


def test_unknown_history_scope_is_rejected(tmp_path):
  with pytest.raises(ValueError, match="history_scope"):
    JoinInteractions(str(tmp_path), 0.1, "future")
