"""The ranker SavedModel's request contract: what its callers send it and how they form it.

The cascade, the list miner and the evaluator all build the ranker's requests here: the raw
query features (the retrieval model's, `trainer/retrieval/signature.py`), the timestamps of the
history items, and the candidates, the union of the sources' answers, so the ranker is trained
and judged on the lists it serves.
"""
from __future__ import annotations

from typing import Collection, Dict, Iterable, List, Mapping, Sequence

import numpy as np
import tensorflow as tf

from trainer.retrieval.signature import QUERY_SPEC, build_inputs
from transform import features as F

CANDIDATE_IDS = "candidate_ids"
REQUEST_SPEC: Dict[str, tf.TensorSpec] = {
    **QUERY_SPEC,
    F.HISTORY_TIMESTAMPS: tf.TensorSpec([None, None], tf.int64, name=F.HISTORY_TIMESTAMPS),
    CANDIDATE_IDS: tf.TensorSpec([None, None], tf.string, name=CANDIDATE_IDS),
}
# Besides `scores`, the ranker answers each source's raw score of every candidate under
# f"{source}_scores" (the explanation the cascade shows).


def union(answers: Iterable[Sequence[str]], exclude: Collection[str] = ()) -> List[str]:
  """Every source's ranked items, first occurrence kept, `exclude`d and empty ids dropped."""
  seen = set(exclude)
  merged: List[str] = []
  for answer in answers:
    for item in answer:
      if item and item not in seen:
        seen.add(item)
        merged.append(item)
  return merged


def training_request(user_id: str, rows: Sequence[Mapping[str, object]],
                     profile: Mapping[str, object]) -> Dict[str, object]:
  """The request the cascade sends for a user whose interactions are `rows` (ITEM_ID and
  TIMESTAMP each): the items most recent first, each once at its latest time, at most
  MAX_HISTORY, as the serving user store holds them; `profile` gives age, gender, occupation."""
  latest: Dict[str, int] = {}
  for row in sorted(rows, key=lambda r: (-int(r[F.TIMESTAMP]), str(r[F.ITEM_ID]))):
    latest.setdefault(str(row[F.ITEM_ID]), int(row[F.TIMESTAMP]))
  history = list(latest.items())[:F.MAX_HISTORY]
  return {F.USER_ID: user_id, F.HISTORY: [item for item, _ in history],
          F.HISTORY_TIMESTAMPS: [timestamp for _, timestamp in history],
          **{name: profile.get(name) for name in (F.AGE, F.GENDER, F.OCCUPATION)}}


def request_inputs(rows: Sequence[Mapping[str, object]],
                   candidates: Sequence[Sequence[str]]) -> Dict[str, np.ndarray]:
  """One batch of ranker inputs: rows keyed by the raw feature names (history_timestamps
  aligned with history, 0 = unknown), and each row's candidates (padded with "")."""
  return build_inputs(REQUEST_SPEC, [dict(row, **{CANDIDATE_IDS: list(c)})
                                     for row, c in zip(rows, candidates)])
