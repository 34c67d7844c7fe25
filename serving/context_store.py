"""What the cascade knows besides the models and the users: the catalog (loaded from the same
data root the pipeline reads, streamed file by file), and how a request's features are made
from a user's history and profile. The users' state is `serving/user_state.py`'s.
"""
from __future__ import annotations

import collections
from typing import Dict, List, Mapping, Sequence, Tuple

from pipeline.data import contract
from pipeline.data.parsing import read_table
from trainer.cross_encoder.texts import item_text
from transform import features as F
from transform.features import tokens

# A history entry: (item id, unix seconds; 0 = unknown).
TimedItem = Tuple[str, int]


class Catalog:
  """Item id -> title, categories, description, year; a token index for lexical search."""

  def __init__(self, data_root: str):
    self._data_root = data_root
    self.items: Dict[str, Mapping[str, object]] = {}
    self._index: Dict[str, List[str]] = collections.defaultdict(list)
    self.refresh()

  def refresh(self) -> List[str]:
    """Reads the items table again and adds the items it did not have (rows of known items
    are kept as they were); returns the new ids. Readers see the old or the new catalog."""
    items, index = dict(self.items), collections.defaultdict(list, {
        token: list(ids) for token, ids in self._index.items()})
    added = []
    for row in read_table(self._data_root, contract.ITEMS):
      if row["item_id"] in items:
        continue
      items[row["item_id"]] = row
      added.append(row["item_id"])
      for token in set(tokens(" ".join([row["title"], *row["categories"]]))):
        index[token].append(row["item_id"])
    if added:
      self.items, self._index = items, index
    return added

  def title(self, item_id: str) -> str:
    return str(self.items.get(item_id, {}).get("title", ""))

  def text(self, item_id: str) -> str:
    """The item text the cross-encoder reads."""
    return item_text(self.items.get(item_id, {}))

  def lexical_matches(self, query: str, limit: int) -> List[Tuple[str, float]]:
    """Items sharing query tokens, scored by the fraction of query tokens they contain."""
    query_tokens = set(tokens(query))
    counts: Dict[str, int] = collections.Counter(
        item for token in query_tokens for item in self._index.get(token, []))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [(item, count / max(len(query_tokens), 1)) for item, count in ranked]


def merge_history(requested: Sequence[str], known: Sequence[TimedItem], length: int
                  ) -> List[TimedItem]:
  """The request's history first (it is the freshest; its times are unknown, 0), then what
  the store knows, de-duplicated."""
  seen, merged = set(), []
  for item, timestamp in [(i, 0) for i in requested] + list(known):
    if item and item not in seen:
      seen.add(item)
      merged.append((item, timestamp))
  return merged[:length]


def optional(value: object, default: object) -> object:
  return value if value not in (None, "", 0) else default


def user_features(user_id: str, history: Sequence[TimedItem], profile: Mapping[str, object],
                  age: int = 0, gender: str = "", occupation: str = "") -> Dict[str, object]:
  """The raw request features of the retrieval model and the ranker (history timestamps),
  request values overriding the profile."""
  return {F.USER_ID: user_id, F.HISTORY: [item for item, _ in history],
          F.HISTORY_TIMESTAMPS: [timestamp for _, timestamp in history],
          F.AGE: int(optional(age, profile.get("age") or 0)),
          F.GENDER: str(optional(gender, profile.get("gender") or "")),
          F.OCCUPATION: str(optional(occupation, profile.get("occupation") or ""))}
