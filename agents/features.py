"""The bandit's feature layout, built the same way for logs, simulations and serving.

Context (global features): the user's query-tower embedding, which the retrieval model computes
from the user's id, history, age, gender and occupation. Arm (per-candidate) features: the item
embedding, its elementwise product with the query embedding, and one column per upstream score
(the retrieval score today; the ranker score is one more column). The product term is what lets a
linear model such as LinUCB personalise: with per-arm features TF-Agents scores `[context, arm]`
linearly, so a context term alone would shift every candidate equally.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

# Upstream scores an arm carries, in column order; a ranker score is appended when it exists.
RETRIEVAL_SCORE = "retrieval_score"
DEFAULT_SCORE_NAMES: Sequence[str] = (RETRIEVAL_SCORE,)


def arm_features(item_vectors: np.ndarray, query: Optional[np.ndarray] = None,
                 scores: Optional[np.ndarray] = None) -> np.ndarray:
  """[..., N, d] item vectors (+ [..., d] query, + [..., N, s] scores) -> [..., N, D] float32."""
  parts = [item_vectors]
  if query is not None:
    parts.append(query[..., np.newaxis, :] * item_vectors)
  if scores is not None:
    parts.append(scores)
  return np.concatenate(parts, axis=-1).astype(np.float32)


def arm_feature_names(item_dim: int, with_query: bool, score_names: Sequence[str]) -> list:
  """Column names of `arm_features`' output, written beside the exported policy."""
  names = [f"item_{i}" for i in range(item_dim)]
  if with_query:
    names += [f"query_x_item_{i}" for i in range(item_dim)]
  return names + list(score_names)
