"""The SYNTHETIC Fashion-MNIST shop: readable through the project's own readers, its images decode
in the model's preprocessing, its text hides the class, it is deterministic, and its simulated
users concentrate on a few classes (the signal an image tower has to find)."""
import collections
import json
import os
import re
import sys

import numpy as np
import pytest

from pipeline.data import synthetic_shop

if not os.path.isdir(synthetic_shop.DEFAULT_SOURCE_DIR):
  pytest.skip(f"Fashion-MNIST is not installed at {synthetic_shop.DEFAULT_SOURCE_DIR} "
              "(apt-get install dataset-fashion-mnist)", allow_module_level=True)

import tensorflow as tf  # noqa: E402

from pipeline.data import contract, parsing  # noqa: E402
from pipeline.data.images import resolve_image_uri  # noqa: E402
from trainer.encoders.image_preprocessing import preprocess_images_with_mask  # noqa: E402

# 20 items per class: enough that a user's ~30 clicks need not leave the liked classes.
ITEMS, USERS = 200, 40
CLASS_WORDS = sorted({w for name in synthetic_shop.CLASS_NAMES
                      for w in re.split(r"[\s/-]+", name.lower()) if len(w) > 1} |
                     {"t-shirt", "tshirt", "tee", "sweater", "jacket", "pant", "shoe"})


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("shop"))
  return root, synthetic_shop.write_synthetic_shop(root, items=ITEMS, users=USERS, seed=0)


def _rows(root, table):
  return list(parsing.read_table(root, table))


def _truth(root):
  with open(os.path.join(root, "ground_truth.json")) as f:
    return json.load(f)


def test_tables_read_through_the_contract_reader(shop):
  root, counts = shop
  items, users, clicks = (_rows(root, t) for t in
                          (contract.ITEMS, contract.USERS, contract.INTERACTIONS))
  assert (len(items), len(users), len(clicks)) == (ITEMS, USERS, counts[contract.INTERACTIONS])
  assert counts[contract.INTERACTIONS] >= USERS * 5
  assert all(r["event"] in contract.POSITIVE_EVENT_TYPES for r in clicks)
  assert all(2018 <= r["year"] <= 2024 and len(r["categories"]) == 1 for r in items)
  assert all(18 <= r["age"] <= 70 and r["gender"] in ("M", "F") for r in users)
  item_ids, user_ids = {r["item_id"] for r in items}, {r["user_id"] for r in users}
  by_user = collections.defaultdict(list)
  for r in clicks:
    assert r["item_id"] in item_ids and r["user_id"] in user_ids
    by_user[r["user_id"]].append(r)
  assert set(by_user) == user_ids
  for events in by_user.values():
    stamps = [r["timestamp"] for r in events]
    assert stamps == sorted(set(stamps)), "timestamps strictly increase per user"
    assert len({r["item_id"] for r in events}) == len(events), "no repeats per user"
    assert stamps[-1] - synthetic_shop.SETTINGS["epoch"] < 90 * 86400


def test_images_decode_in_the_model_preprocessing(shop):
  root, _ = shop
  items = _rows(root, contract.ITEMS)
  data = []
  for r in items:
    with tf.io.gfile.GFile(resolve_image_uri(root, r["image_uri"]), "rb") as f:
      data.append(f.read())
  pixels, valid = preprocess_images_with_mask(tf.constant(data))
  assert bool(tf.reduce_all(valid)) and pixels.shape == (ITEMS, 224, 224, 3)
  # The PNGs are the source photos, byte for byte in pixel values.
  source_index = _truth(root)["source_index"]
  first = [r["item_id"] for r in items[:5]]
  expected = synthetic_shop.read_images(synthetic_shop.DEFAULT_SOURCE_DIR,
                                        np.array([source_index[i] for i in first]))
  for k in range(5):
    np.testing.assert_array_equal(tf.io.decode_png(data[k]).numpy()[:, :, 0], expected[k])


def test_text_never_names_the_class(shop):
  root, _ = shop
  for r in _rows(root, contract.ITEMS):
    text = " ".join([r["title"], r["description"] or ""] + r["categories"]).lower()
    assert not [w for w in CLASS_WORDS if w in text], text


def _files(root):
  out = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = f.read()
  return out


def test_deterministic_given_the_seed(shop, tmp_path):
  root, _ = shop
  synthetic_shop.write_synthetic_shop(str(tmp_path / "same"), items=ITEMS, users=USERS, seed=0)
  synthetic_shop.write_synthetic_shop(str(tmp_path / "other"), items=ITEMS, users=USERS, seed=1)
  first, same, other = _files(root), _files(str(tmp_path / "same")), _files(str(tmp_path / "other"))
  assert first == same
  for name in ("interactions/clicks.csv", "items/products.csv", "ground_truth.json"):
    assert first[name] != other[name], name


def test_users_concentrate_on_few_classes(shop):
  root, _ = shop
  item_class = _truth(root)["item_class"]
  per_user = collections.defaultdict(collections.Counter)
  for r in _rows(root, contract.INTERACTIONS):
    per_user[r["user_id"]][item_class[r["item_id"]]] += 1
  top2 = [sum(sorted(c.values())[-2:]) / sum(c.values()) for c in per_user.values()]
  # Uniform tastes would give ~0.36 at ~30 clicks a user; Dirichlet(0.3) tastes give ~0.7.
  assert np.mean(top2) > 0.6, np.mean(top2)
  assert collections.Counter(item_class.values()) == {n: ITEMS // 10
                                                      for n in synthetic_shop.CLASS_NAMES}


def test_side_files_are_not_tables(shop):
  root, _ = shop
  assert os.path.isfile(os.path.join(root, "ground_truth.json"))
  with open(os.path.join(root, "SYNTHETIC_README.txt")) as f:
    assert "SYNTHETIC" in f.read()
  read = [p for t in contract.TABLES for p in parsing.list_table_files(root, t)]
  assert sorted(os.path.relpath(p, root) for p in read) == [
      "interactions/clicks.csv", "items/products.csv", "users/users.csv"]


def test_missing_source_names_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
    synthetic_shop.write_synthetic_shop(str(tmp_path / "root"), source_dir=str(tmp_path / "no"))


def test_cli_prints_one_line(tmp_path, monkeypatch, capsys):
  root = str(tmp_path / "cli")
  monkeypatch.setattr(sys, "argv", ["synthetic_shop", "--data_root", root, "--items", "20",
                                    "--users", "3", "--seed", "7"])
  synthetic_shop.main()
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1 and json.loads(lines[0])["items"] == 20
