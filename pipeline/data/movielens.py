"""Converts the MovieLens-100K copy shipped in the recbole wheel into the raw data contract.

The point is a real, offline dataset in exactly the layout a user's own logs come in, so the
pipeline and its tests exercise the same reading path as production data.

    python -m pipeline.data.movielens --data_root DIR [--max_users N]
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
from typing import IO, Dict, Iterator, Optional, Set

from pipeline.data import contract

_INTERACTION_HEADER = ("user_id", "item_id", "event", "rating", "timestamp", "query", "session_id")
_ITEM_HEADER = ("item_id", "title", "description", "categories", "year", "image_uri")
_USER_HEADER = ("user_id", "age", "gender", "occupation")

# MovieLens marks genre-less movies with the pseudo-genre "unknown"; it is not a category.
_NO_GENRE = "unknown"


def movielens_100k_dir() -> str:
  """The ml-100k folder inside the installed recbole package (no download needed)."""
  spec = importlib.util.find_spec("recbole")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("MovieLens-100K comes from the recbole wheel; install recbole==1.2.1")
  return os.path.join(list(spec.submodule_search_locations)[0], "dataset_example", "ml-100k")


def _read_atomic(path: str) -> Iterator[Dict[str, str]]:
  """Streams a RecBole atomic file: tab-separated, header cells typed as `name:type`."""
  with open(path, encoding="utf-8") as f:
    header = [cell.split(":", 1)[0] for cell in f.readline().rstrip("\r\n").split("\t")]
    for line in f:
      line = line.rstrip("\r\n")
      if line:
        yield dict(zip(header, line.split("\t")))


def _kept_users(source_dir: str, max_users: Optional[int]) -> Optional[Set[str]]:
  if max_users is None:
    return None
  if max_users < 1:
    raise ValueError(f"max_users must be positive, got {max_users}")
  users = _read_atomic(os.path.join(source_dir, "ml-100k.user"))
  user_ids = sorted((row["user_id"] for row in users), key=int)
  return set(user_ids[:max_users])


def _year(value: str) -> str:
  # The release year is sometimes garbage ("V", "unkonwn"); the contract wants an int or nothing.
  value = value.strip()
  return value if len(value) == 4 and value.isdigit() else ""


def _open_table_csv(data_root: str, table: str, file_name: str) -> IO[str]:
  import tensorflow as tf  # here, so that --help answers without loading TensorFlow
  folder = f"{data_root.rstrip('/')}/{table}"
  tf.io.gfile.makedirs(folder)
  return tf.io.gfile.GFile(f"{folder}/{file_name}", "w")


def convert_movielens_100k(data_root: str, max_users: Optional[int] = None) -> Dict[str, int]:
  """Writes interactions/ratings.csv, items/movies.csv and users/users.csv under data_root.

  `max_users` keeps the N smallest user ids (a small, still-consistent slice for tests); the
  item catalog is always kept whole. Returns the row count written per table.
  """
  source_dir = movielens_100k_dir()
  kept = _kept_users(source_dir, max_users)
  counts = {contract.INTERACTIONS: 0, contract.ITEMS: 0, contract.USERS: 0}

  with _open_table_csv(data_root, contract.INTERACTIONS, "ratings.csv") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(_INTERACTION_HEADER)
    for row in _read_atomic(os.path.join(source_dir, "ml-100k.inter")):
      if kept is None or row["user_id"] in kept:
        writer.writerow(
            (row["user_id"], row["item_id"], "rating", row["rating"], row["timestamp"], "", ""))
        counts[contract.INTERACTIONS] += 1

  with _open_table_csv(data_root, contract.ITEMS, "movies.csv") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(_ITEM_HEADER)
    for row in _read_atomic(os.path.join(source_dir, "ml-100k.item")):
      genres = [g for g in row.get("class", "").split() if g != _NO_GENRE]
      year = _year(row.get("release_year", ""))
      writer.writerow((row["item_id"], row["movie_title"].strip(), "",
                       contract.LIST_SEPARATOR.join(genres), year, ""))
      counts[contract.ITEMS] += 1

  with _open_table_csv(data_root, contract.USERS, "users.csv") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(_USER_HEADER)
    for row in _read_atomic(os.path.join(source_dir, "ml-100k.user")):
      if kept is None or row["user_id"] in kept:
        writer.writerow((row["user_id"], row["age"], row["gender"], row["occupation"]))
        counts[contract.USERS] += 1

  return counts


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_root", required=True, help="Folder (or gs:// path) to write into.")
  parser.add_argument("--max_users", type=int, default=None,
                      help="Keep only the N smallest user ids (small test slices).")
  args = parser.parse_args()
  print(json.dumps(convert_movielens_100k(args.data_root, args.max_users)))


if __name__ == "__main__":
  main()
