"""A SYNTHETIC shop in the raw data contract: real Fashion-MNIST photos, SIMULATED users and clicks.

No offline dataset pairs real interactions with item images, so this demo of the image modality
simulates them: each user likes a few garment classes (a Dirichlet(0.3) taste over the 10
classes) and picks, within a class, by a Zipf popularity that is independent of the class. Only
the image reveals an item's class; titles, descriptions and categories are neutral on purpose, so
a model that recommends "items of the user's kind" must have learnt it from the pixels. The data
root gets the same layout as pipeline/data/movielens.py, plus images/, SYNTHETIC_README.txt and
ground_truth.json (outside every table folder, so the readers never take them for tables).

    python -m pipeline.data.synthetic_shop --data_root DIR [--items N] [--users U] [--seed S]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import sys
from typing import Any, Dict, List, Optional

DEFAULT_SOURCE_DIR = "/usr/share/datasets/fashion-mnist"


def parse_args(argv: List[str]) -> argparse.Namespace:
  """Above the imports of numpy and TensorFlow, so that --help and a bad flag answer at once."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_root", required=True, help="Folder (or gs:// path) to write into.")
  parser.add_argument("--items", type=int, default=2000, help="Catalog size (class-balanced).")
  parser.add_argument("--users", type=int, default=1000, help="Number of simulated users.")
  parser.add_argument("--seed", type=int, default=0, help="Seed of the simulated users.")
  parser.add_argument("--fashion_mnist_dir", default=None, help=f"Default {DEFAULT_SOURCE_DIR}.")
  return parser.parse_args(argv)


if __name__ == "__main__":
  parse_args(sys.argv[1:])

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline.data import contract  # noqa: E402
from pipeline.data.csv_files import write_csv  # noqa: E402

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
_IMAGES_FILE, _LABELS_FILE = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
_SIDE = 28
# Neutral words only: no class word (nor one as a substring) may appear in any text column.
_BRANDS = ("Norra", "Velmo", "Astri", "Kenvo", "Lumin", "Orsa", "Piran", "Quell", "Risa", "Solen",
           "Tavi", "Umber", "Vanta", "Wren", "Yarro", "Zeph")
_PHRASES = ("Everyday piece", "Studio edition", "Limited run", "Staple", "New arrival",
            "Classic cut", "Weekend pick", "Signature item")
_COLLECTIONS = ("spring", "summer", "autumn", "winter", "core", "outlet", "archive")
_OCCUPATIONS = ("engineer", "teacher", "student", "artist", "nurse", "clerk", "writer", "retired")
_INTERACTION_HEADER = ("user_id", "item_id", "event", "rating", "timestamp", "query", "session_id")
_ITEM_HEADER = ("item_id", "title", "description", "categories", "year", "image_uri")
_USER_HEADER = ("user_id", "age", "gender", "occupation")
SETTINGS = {"taste_concentration": 0.3, "popularity_exponent": 1.0, "mean_interactions": 30,
            "min_interactions": 5, "epoch": 1704067200, "window_days": 90, "years": [2018, 2024],
            "event": contract.CLICK}
_README = """SYNTHETIC DATA. The interactions and the users in this data root are SIMULATED by
pipeline/data/synthetic_shop.py; no real person made them. The item images are REAL photos from
Fashion-MNIST (Zalando Research, MIT licence), 28x28 greyscale PNGs under images/. Titles,
descriptions and categories are made up and carry no information about an item's class.
Each user's taste is a Dirichlet({taste_concentration}) mixture over the 10 Fashion-MNIST classes;
within a class, items are picked by a Zipf(exponent {popularity_exponent}) popularity that is
independent of the class. ground_truth.json holds each item's class and the generator's settings,
for benchmarks only; it must never be used as a training feature.
"""


def _check_source(source_dir: str) -> None:
  """Fails with the fix in the message: the images come from a Debian package, never a download."""
  missing = [name for name in (_IMAGES_FILE, _LABELS_FILE)
             if not os.path.isfile(os.path.join(source_dir, name))]
  if missing:
    raise FileNotFoundError(
        f"Fashion-MNIST not found in {source_dir} (missing {', '.join(missing)}); install it with "
        "`apt-get install dataset-fashion-mnist` or pass the folder that holds the idx .gz files")


def read_labels(source_dir: str) -> np.ndarray:
  """All training labels (uint8 [60000]): small, so read whole to pick a class-balanced sample."""
  with gzip.open(os.path.join(source_dir, _LABELS_FILE), "rb") as f:
    magic, count = struct.unpack(">II", f.read(8))
    if magic != 0x801:
      raise ValueError(f"{_LABELS_FILE}: not an idx1 label file (magic {magic:#x})")
    return np.frombuffer(f.read(count), dtype=np.uint8)


def read_images(source_dir: str, indices: np.ndarray) -> np.ndarray:
  """The images at `indices` (uint8 [len, 28, 28]), read by forward seeks so memory stays O(N)."""
  out = np.empty((len(indices), _SIDE, _SIDE), dtype=np.uint8)
  with gzip.open(os.path.join(source_dir, _IMAGES_FILE), "rb") as f:
    magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
    if magic != 0x803 or (rows, cols) != (_SIDE, _SIDE):
      raise ValueError(f"{_IMAGES_FILE}: not a 28x28 idx3 image file (magic {magic:#x})")
    for k in np.argsort(indices, kind="stable"):
      f.seek(16 + int(indices[k]) * _SIDE * _SIDE)
      out[k] = np.frombuffer(f.read(_SIDE * _SIDE), dtype=np.uint8).reshape(_SIDE, _SIDE)
  return out


def _sample_catalog(labels: np.ndarray, items: int, rng: np.random.Generator) -> np.ndarray:
  """Source indices of a class-balanced sample, shuffled: an item's id says nothing of its class."""
  per_class = [items // 10 + (c < items % 10) for c in range(10)]
  chosen = [rng.choice(np.flatnonzero(labels == c), n, replace=False)
            for c, n in enumerate(per_class)]
  return rng.permutation(np.concatenate(chosen))


def _simulate_user(item_class: np.ndarray, popularity: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
  """One user's item sequence: a class from the taste, then an unseen item of it by popularity."""
  taste = rng.dirichlet(np.full(10, SETTINGS["taste_concentration"]))
  count = max(SETTINGS["min_interactions"], rng.poisson(SETTINGS["mean_interactions"]))
  count = min(len(item_class), count)
  weights = popularity.copy()
  picked = np.empty(count, dtype=np.int64)
  for k in range(count):
    left = np.bincount(item_class, weights=weights > 0, minlength=10)
    class_p = taste * (left > 0)
    # When every liked class has run dry (small catalogs), any class with items left.
    c = (rng.choice(10, p=class_p / class_p.sum()) if class_p.sum() > 0
         else rng.choice(np.flatnonzero(left)))
    in_class = np.where(item_class == c, weights, 0.0)
    picked[k] = rng.choice(len(weights), p=in_class / in_class.sum())
    weights[picked[k]] = 0.0  # no repeats per user
  return picked


def write_synthetic_shop(data_root: str, items: int = 2000, users: int = 1000, seed: int = 0,
                         source_dir: Optional[str] = None) -> Dict[str, int]:
  """Writes the SYNTHETIC shop under data_root (same seed, same bytes); returns counts per table.

  The catalog depends only on (items, seed), so a benchmark can vary the user count alone.
  """
  source_dir = source_dir or DEFAULT_SOURCE_DIR
  _check_source(source_dir)
  if not 10 <= items <= 60000 or users < 1:
    raise ValueError(f"items must be in [10, 60000] and users >= 1; got {items}, {users}")
  data_root = data_root.rstrip("/")
  labels = read_labels(source_dir)
  catalog_rng, user_rng = (np.random.default_rng([seed, stream]) for stream in (0, 1))
  source_index = _sample_catalog(labels, items, catalog_rng)
  item_class = labels[source_index].astype(np.int64)
  item_ids = [f"p{i + 1:05d}" for i in range(items)]
  brands = catalog_rng.choice(_BRANDS, items)
  # Distinct model codes, so titles are unique (searching a title finds one item).
  codes = catalog_rng.choice(np.arange(1000, 10000 if items <= 9000 else 100000), items,
                             replace=False)
  phrases = catalog_rng.choice(_PHRASES, items)
  collections = catalog_rng.choice(_COLLECTIONS, items)
  years = catalog_rng.integers(SETTINGS["years"][0], SETTINGS["years"][1] + 1, items)
  ranks = catalog_rng.permutation(items) + 1  # popularity rank, independent of the class
  popularity = ranks.astype(np.float64) ** -SETTINGS["popularity_exponent"]

  tf.io.gfile.makedirs(f"{data_root}/images")
  for item_id, image in zip(item_ids, read_images(source_dir, source_index)):
    # Greyscale is enough: the image preprocessing decodes with channels=3.
    with tf.io.gfile.GFile(f"{data_root}/images/{item_id}.png", "wb") as f:
      f.write(tf.io.encode_png(image[:, :, None]).numpy())
  counts = {contract.ITEMS: write_csv(
      f"{data_root}/{contract.ITEMS}/products.csv", _ITEM_HEADER, (
          (item_ids[i], f"{brands[i]} {codes[i]}", f"{phrases[i]} from the {brands[i]} line.",
           collections[i], int(years[i]), f"images/{item_ids[i]}.png") for i in range(items)))}

  user_ids = [f"u{u + 1:05d}" for u in range(users)]
  window = SETTINGS["window_days"] * 86400

  def interactions():
    for user_id in user_ids:
      picked = _simulate_user(item_class, popularity, user_rng)
      n = len(picked)  # sorted draws + 0..n-1: timestamps strictly increase per user
      offsets = np.sort(user_rng.integers(0, window - n, n)) + np.arange(n)
      for item, offset in zip(picked, offsets):
        yield (user_id, item_ids[item], SETTINGS["event"], "", SETTINGS["epoch"] + int(offset),
               "", "")

  counts[contract.INTERACTIONS] = write_csv(
      f"{data_root}/{contract.INTERACTIONS}/clicks.csv", _INTERACTION_HEADER, interactions())
  profile_rng = np.random.default_rng([seed, 2])  # profiles are independent of taste
  counts[contract.USERS] = write_csv(
      f"{data_root}/{contract.USERS}/users.csv", _USER_HEADER, (
          (user_id, int(profile_rng.integers(18, 71)), str(profile_rng.choice(["M", "F"])),
           str(profile_rng.choice(_OCCUPATIONS))) for user_id in user_ids))

  truth: Dict[str, Any] = {
      "synthetic": True, "classes": list(CLASS_NAMES),
      "settings": dict(SETTINGS, items=items, users=users, seed=seed, source=_IMAGES_FILE),
      "item_class": {i: CLASS_NAMES[c] for i, c in zip(item_ids, item_class)},
      "source_index": {i: int(s) for i, s in zip(item_ids, source_index)}}
  with tf.io.gfile.GFile(f"{data_root}/ground_truth.json", "w") as f:
    json.dump(truth, f, indent=1, sort_keys=True)
  with tf.io.gfile.GFile(f"{data_root}/SYNTHETIC_README.txt", "w") as f:
    f.write(_README.format(**SETTINGS))
  return dict(counts, images=items)


def main() -> None:
  args = parse_args(sys.argv[1:])
  counts = write_synthetic_shop(args.data_root, args.items, args.users, args.seed,
                                args.fashion_mnist_dir)
  print(json.dumps({"data_root": args.data_root, "synthetic": True, **counts}))


if __name__ == "__main__":
  main()
