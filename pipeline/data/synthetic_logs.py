"""SYNTHETIC interaction logs of any size in the raw data contract, for measuring how the
pipeline's cost grows with the log (benchmarks/pipeline_scaling.py). No real person made them.

A shop of `items` products over `CATEGORIES` categories, each item in one to three of them,
with a Zipf popularity inside its category and a release year. Users have a profile (age,
gender, occupation) and a taste: a sparse Dirichlet over the categories, pulled towards their
occupation's taste, so the profile carries signal. A user's activity is heavy-tailed
(lognormal, at least `min_rows` rows). Activity comes in sessions: each session has an intent
(one category from the taste), its items are drawn from that category by popularity, its
events follow a funnel (view, click, add to cart, purchase) and some shown items are logged as
impressions (not positives); seconds apart inside a session, hours or days apart between
sessions, every user's log inside one year.

Memory is bounded by the catalog and one user, never the log: rows are written as they are
drawn, into CSV shards of `rows_per_shard` rows (tf.io.gfile, so `gs://` works). Same
arguments, same bytes.

    python -m pipeline.data.synthetic_logs --data_root DIR --interactions 1000000
        [--items 20000] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, Iterator, List, Tuple

MIN_ITEMS, MAX_ITEMS = 100, 1_000_000


def parse_args(argv: List[str]) -> argparse.Namespace:
  """Above the imports of numpy and TensorFlow, so that --help and a bad flag answer at once."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_root", required=True, help="Folder (or gs:// path) to write into.")
  parser.add_argument("--interactions", type=int, required=True,
                      help="Rows of the interaction log to write (impressions included).")
  parser.add_argument("--items", type=int, default=20000,
                      help="Catalog size (default %(default)s).")
  parser.add_argument("--seed", type=int, default=0, help="Seed (default %(default)s).")
  return parser.parse_args(argv)


if __name__ == "__main__":
  parse_args(sys.argv[1:])

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline.data import contract  # noqa: E402
from pipeline.data.csv_files import write_csv  # noqa: E402

CATEGORIES = 60
SETTINGS = {
    "popularity_exponent": 1.0, "taste_concentration": 0.15, "occupation_pull": 0.3,
    "mean_rows_per_user": 40, "activity_sigma": 1.0, "min_rows": 3, "mean_session_picks": 4,
    "impression_share": 0.15, "funnel": {"view": 0.62, "click": 0.25, "add_to_cart": 0.08,
                                         "purchase": 0.05},
    "epoch": 1735689600, "window_days": 365, "years": [1990, 2025], "rows_per_shard": 500_000}
_OCCUPATIONS = ("engineer", "teacher", "student", "artist", "nurse", "clerk", "writer",
                "retired", "sales", "doctor", "lawyer", "homemaker")
_ADJECTIVES = ("classic", "compact", "deluxe", "everyday", "light", "modern", "pro", "rugged",
               "smart", "soft", "vintage", "wireless", "organic", "premium", "travel", "mini")
_NOUNS = ("lamp", "jacket", "kettle", "backpack", "speaker", "notebook", "chair", "mug",
          "sneaker", "blender", "tent", "watch", "scarf", "drill", "camera", "novel", "puzzle",
          "helmet", "desk", "pillow")
_INTERACTION_HEADER = ("user_id", "item_id", "event", "timestamp", "session_id")
_ITEM_HEADER = ("item_id", "title", "description", "categories", "year")
_USER_HEADER = ("user_id", "age", "gender", "occupation")
_README = """SYNTHETIC DATA. Every row under this data root was SIMULATED by
pipeline/data/synthetic_logs.py for pipeline cost benchmarks; no real person, item or event.
Settings: {settings}
"""


class Catalog:
  """The items: ids, categories and, per category, its items' cumulative popularity."""

  def __init__(self, items: int, rng: np.random.Generator):
    self.ids = [f"i{i:07d}" for i in range(items)]
    self.categories = [rng.choice(CATEGORIES, rng.integers(1, 4), replace=False)
                       for _ in range(items)]
    self.years = rng.integers(SETTINGS["years"][0], SETTINGS["years"][1] + 1, items)
    weight = rng.permutation(items).astype(np.float64) + 1.0
    weight **= -SETTINGS["popularity_exponent"]
    members: List[List[int]] = [[] for _ in range(CATEGORIES)]
    for item, categories in enumerate(self.categories):
      for category in categories:
        members[int(category)].append(item)
    self.members = [np.asarray(m, dtype=np.int64) for m in members]
    self.cumulative = [np.cumsum(weight[m]) / weight[m].sum() if len(m) else np.ones(0)
                       for m in self.members]
    self._adjectives = rng.choice(_ADJECTIVES, items)
    self._nouns = rng.choice(_NOUNS, items)

  def draw(self, category: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` items of `category` by popularity (repeats possible, as in real logs)."""
    members = self.members[category]
    if not len(members):
      return rng.integers(0, len(self.ids), count)
    return members[np.searchsorted(self.cumulative[category], rng.random(count))
                   .clip(0, len(members) - 1)]

  def rows(self) -> Iterator[Tuple]:
    for i, item_id in enumerate(self.ids):
      categories = [f"c{int(c):02d}" for c in self.categories[i]]
      yield (item_id, f"{self._adjectives[i].title()} {self._nouns[i]} {i}",
             f"A {self._adjectives[i]} {self._nouns[i]} from {categories[0]}.",
             contract.LIST_SEPARATOR.join(categories), int(self.years[i]))


def _user_count(interactions: int) -> int:
  return max(1, interactions // SETTINGS["mean_rows_per_user"])


def _activity(users: int, interactions: int, rng: np.random.Generator) -> np.ndarray:
  """Rows per user: lognormal, at least min_rows, summing to `interactions` exactly."""
  raw = rng.lognormal(0.0, SETTINGS["activity_sigma"], users)
  rows = np.maximum(SETTINGS["min_rows"],
                    np.floor(raw / raw.sum() * interactions)).astype(np.int64)
  rows[np.argmax(rows)] += interactions - rows.sum()  # the heaviest user absorbs the rest
  if rows.min() < 1:
    raise ValueError(f"{interactions} interactions are too few for {users} users")
  return rows


def _user_rows(user: str, rows: int, taste: np.ndarray, catalog: Catalog,
               rng: np.random.Generator) -> Iterator[Tuple]:
  """One user's log: sessions with an intent, a funnel of events and some impressions."""
  events = list(SETTINGS["funnel"])
  funnel = np.asarray([SETTINGS["funnel"][e] for e in events])
  window_s = SETTINGS["window_days"] * 86400
  clock = SETTINGS["epoch"] + int(rng.integers(0, window_s // 2))
  # Sessions days apart, closer for heavy users, so every user's log ends inside the window.
  sessions = max(1.0, rows / (1 + SETTINGS["mean_session_picks"]))
  gap_s = min(3 * 86400, (SETTINGS["epoch"] + window_s - clock) / (2 * sessions))
  session, written = 0, 0
  while written < rows:
    picks = min(rows - written, 1 + int(rng.geometric(1.0 / SETTINGS["mean_session_picks"])))
    impressions = rng.random(picks) < SETTINGS["impression_share"]
    items = catalog.draw(int(rng.choice(CATEGORIES, p=taste)), picks, rng)
    kinds = rng.choice(len(events), picks, p=funnel)
    for item, kind, impression in zip(items, kinds, impressions):
      clock += int(rng.integers(5, 300))
      yield (user, catalog.ids[item], contract.IMPRESSION if impression else events[kind],
             clock, f"{user}-s{session}")
    written += picks
    session += 1
    clock += int(rng.exponential(gap_s))


def write_synthetic_logs(data_root: str, interactions: int, items: int = 20000,
                         seed: int = 0) -> Dict[str, int]:
  """Writes the SYNTHETIC log under data_root; returns rows per table and the shard count."""
  if not MIN_ITEMS <= items <= MAX_ITEMS:
    raise ValueError(f"items must be in [{MIN_ITEMS}, {MAX_ITEMS}]; got {items}")
  if interactions < SETTINGS["min_rows"]:
    raise ValueError(f"interactions must be at least {SETTINGS['min_rows']}; got {interactions}")
  data_root = data_root.rstrip("/")
  catalog_rng, user_rng, log_rng = (np.random.default_rng([seed, s]) for s in range(3))
  catalog = Catalog(items, catalog_rng)
  counts = {contract.ITEMS: write_csv(f"{data_root}/{contract.ITEMS}/items.csv", _ITEM_HEADER,
                                       catalog.rows())}
  users = _user_count(interactions)
  activity = _activity(users, interactions, log_rng)
  occupation_taste = catalog_rng.dirichlet(np.full(CATEGORIES, 0.3), len(_OCCUPATIONS))
  profiles = []  # (age, gender, occupation index): small per user, the log is not kept

  def log() -> Iterator[Tuple]:
    for u in range(users):
      occupation = int(user_rng.integers(len(_OCCUPATIONS)))
      profiles.append((int(user_rng.integers(16, 80)), str(user_rng.choice(["F", "M", ""])),
                       occupation))
      taste = (1 - SETTINGS["occupation_pull"]) * user_rng.dirichlet(
          np.full(CATEGORIES, SETTINGS["taste_concentration"]))
      taste += SETTINGS["occupation_pull"] * occupation_taste[occupation]
      yield from _user_rows(f"u{u:07d}", int(activity[u]), taste / taste.sum(), catalog,
                            log_rng)

  shard_rows, shards, written, rows = SETTINGS["rows_per_shard"], 0, 0, log()
  while written < interactions:
    take = min(shard_rows, interactions - written)
    written += write_csv(f"{data_root}/{contract.INTERACTIONS}/part-{shards:05d}.csv",
                          _INTERACTION_HEADER, (next(rows) for _ in range(take)))
    shards += 1
  counts[contract.INTERACTIONS] = written
  counts[contract.USERS] = write_csv(
      f"{data_root}/{contract.USERS}/users.csv", _USER_HEADER,
      ((f"u{u:07d}", age, gender, _OCCUPATIONS[o]) for u, (age, gender, o) in enumerate(profiles)))
  with tf.io.gfile.GFile(f"{data_root}/SYNTHETIC_README.txt", "w") as f:
    f.write(_README.format(settings=json.dumps(dict(SETTINGS, items=items, seed=seed,
                                                    interactions=interactions))))
  return dict(counts, interaction_shards=shards)


def main() -> None:
  args = parse_args(sys.argv[1:])
  counts = write_synthetic_logs(args.data_root, args.interactions, args.items, args.seed)
  print(json.dumps({"data_root": args.data_root, "synthetic": True, **counts}))


if __name__ == "__main__":
  main()
