"""Contexts and candidate sets for the bandit, from the pipeline's retrieval SavedModel.

Per request: the query-tower embedding is the context; the candidates are the retrieval model's
top-N for that user (history excluded, its `serving_default`), plus any items a log says were
shown but that are not among them; each candidate's arm features are `agents.features` of its
item embedding (`item_embeddings`), the query embedding and the retrieval score (q . e).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from agents.features import arm_features
from trainer.retrieval import signature

_BATCH = 256


@dataclasses.dataclass(frozen=True)
class Request:
  """One decision's user side, in raw serving features ("" / 0 = unknown)."""
  user_id: str
  history: Sequence[str]  # most recent first
  age: int
  gender: str
  occupation: str
  timestamp: int


@dataclasses.dataclass(frozen=True)
class CandidateSets:
  contexts: np.ndarray        # [R, embedding_dim]
  arm_features: np.ndarray    # [R, N, arm_dim]
  candidate_ids: np.ndarray   # [R, N] str
  num_candidates: np.ndarray  # [R]


def _padded(rows: Sequence[Sequence[str]]) -> np.ndarray:
  width = max([len(row) for row in rows] + [1])
  return np.array([list(row) + [""] * (width - len(row)) for row in rows], dtype=object)


class RetrievalFeaturizer:
  """Wraps a loaded retrieval SavedModel and the catalog's item embeddings."""

  def __init__(self, model_dir: str, catalog: Mapping[str, Mapping[str, object]]):
    """`catalog`: item id -> contract item row (title, categories, year)."""
    self._model = tf.saved_model.load(model_dir)
    self.item_ids = sorted(catalog)
    self.item_index = {item: i for i, item in enumerate(self.item_ids)}
    parts = []
    for first in range(0, len(self.item_ids), _BATCH):
      inputs = signature.item_inputs([catalog[item]
                                      for item in self.item_ids[first:first + _BATCH]])
      parts.append(self._model.signatures["item_embeddings"](
          **signature.as_tensors(inputs))[signature.EMBEDDING].numpy())
    self.item_embeddings = np.concatenate(parts)

  def _query_inputs(self, requests: Sequence[Request]) -> Dict[str, tf.Tensor]:
    # Request's fields are named as the raw features are.
    return signature.as_tensors(signature.query_inputs([dataclasses.asdict(r)
                                                         for r in requests]))

  def candidate_sets(self, requests: Sequence[Request], max_candidates: int,
                     required: Optional[Sequence[Sequence[str]]] = None) -> CandidateSets:
    """The retrieval top-`max_candidates` of each request, then its `required` items (those a
    log showed) if missing; rows are padded to the widest."""
    queries, top_ids = [], []
    for first in range(0, len(requests), _BATCH):
      inputs = self._query_inputs(requests[first:first + _BATCH])
      queries.append(self._model.signatures["query_embedding"](
          **inputs)[signature.EMBEDDING].numpy())
      top = self._model.signatures["serving_default"](**inputs)
      top_ids += [[item for item, _ in signature.retrieved(ids, scores, max_candidates)]
                  for ids, scores in zip(top[signature.ITEM_IDS].numpy(),
                                         top[signature.SCORES].numpy())]
    query = np.concatenate(queries)
    unknown = {item for row in top_ids for item in row} - set(self.item_index)
    if unknown:
      raise ValueError(f"the retrieval model returned items the catalog does not have (e.g. "
                       f"{sorted(unknown)[:5]}); was it trained on another catalog?")
    ids: List[List[str]] = []
    for row, chosen in enumerate(top_ids):
      extra = [item for item in (required[row] if required else ()) if item not in chosen]
      ids.append(chosen + list(dict.fromkeys(extra)))
    width = max(len(row) for row in ids)
    if width == 0:
      raise ValueError("no request has any candidate")
    index = np.zeros((len(ids), width), int)
    valid = np.zeros((len(ids), width), bool)
    for row, items in enumerate(ids):
      index[row, :len(items)] = [self.item_index[item] for item in items]
      valid[row, :len(items)] = True
    items = self.item_embeddings[index] * valid[:, :, np.newaxis]
    scores = np.einsum("rd,rnd->rn", query, items)[:, :, np.newaxis]
    return CandidateSets(
        contexts=query.astype(np.float32),
        arm_features=arm_features(items, query, scores) * valid[:, :, np.newaxis],
        candidate_ids=_padded(ids).astype(str),
        num_candidates=valid.sum(axis=1).astype(np.int32))
