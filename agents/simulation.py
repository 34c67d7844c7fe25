"""A MovieLens bandit environment with rewards from the ratings matrix, as TF-Agents' builds it.

TF-Agents' MovieLens environment factorises the user x movie ratings matrix (missing = 0) with a
rank-k SVD, A ~ U S V^T, and rewards recommending movie j to user i with (U S V^T)_ij. Here the
factorisation that gives the rewards sees every rating, while the features the agents see come
from a second factorisation without each user's latest ratings (held out): rewards reflect tastes
the features were not fitted on, as with a model serving users it was trained before.

Context: the user's row of the feature factorisation (the stand-in for the query-tower
embedding). Arms: `agents.features.arm_features` of the movie's row, exactly as in the pipeline,
with the dot product as the upstream score.
"""
from __future__ import annotations

import dataclasses
import tempfile
from typing import Dict, Optional, Sequence

import numpy as np
from tf_agents.bandits.environments import bandit_py_environment
from tf_agents.specs import array_spec, bandit_spec_utils

from agents.features import arm_features
from pipeline.data import contract
from pipeline.data.parsing import read_table
from pipeline.data.movielens import convert_movielens_100k


@dataclasses.dataclass(frozen=True)
class Ratings:
  user_ids: np.ndarray    # [n] str
  item_ids: np.ndarray    # [n] str
  ratings: np.ndarray     # [n] float
  timestamps: np.ndarray  # [n] int

  def subset(self, mask: np.ndarray) -> "Ratings":
    return Ratings(self.user_ids[mask], self.item_ids[mask], self.ratings[mask],
                   self.timestamps[mask])


def read_ratings(data_root: str) -> Ratings:
  """Every interaction with a rating under a contract data root, through the project's readers."""
  rows = [row for row in read_table(data_root, contract.INTERACTIONS)
          if row["rating"] is not None]
  return Ratings(np.array([r["user_id"] for r in rows]), np.array([r["item_id"] for r in rows]),
                 np.array([r["rating"] for r in rows], float),
                 np.array([r["timestamp"] for r in rows], np.int64))


def movielens_ratings(max_users: Optional[int] = None) -> Ratings:
  """MovieLens-100K from the recbole wheel, converted to the data contract and read back."""
  with tempfile.TemporaryDirectory() as root:
    convert_movielens_100k(root, max_users=max_users)
    return read_ratings(root)


def latest_per_user(ratings: Ratings, fraction: float) -> np.ndarray:
  """Mask of each user's latest `fraction` of ratings (at least one kept for training)."""
  held_out = np.zeros(len(ratings.ratings), bool)
  order = np.lexsort((ratings.item_ids, ratings.timestamps, ratings.user_ids))
  users = ratings.user_ids[order]
  starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
  ends = np.r_[starts[1:], len(order)]
  for start, end in zip(starts, ends):
    count = min(end - start - 1, int(round((end - start) * fraction)))
    held_out[order[end - count:end]] = count > 0
  return held_out


class LowRankRatings:
  """A rank-k SVD of the ratings matrix over fixed user and item index maps."""

  def __init__(self, ratings: Ratings, users: Sequence[str], items: Sequence[str], rank: int):
    user_index = {u: i for i, u in enumerate(users)}
    item_index = {m: j for j, m in enumerate(items)}
    matrix = np.zeros((len(users), len(items)), np.float32)
    matrix[[user_index[u] for u in ratings.user_ids],
           [item_index[m] for m in ratings.item_ids]] = ratings.ratings
    u, s, vh = np.linalg.svd(matrix, full_matrices=False)
    root = np.sqrt(s[:rank])
    self.user_vectors = (u[:, :rank] * root).astype(np.float32)   # U sqrt(S)
    self.item_vectors = (vh[:rank].T * root).astype(np.float32)   # V sqrt(S)

  def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(U S V^T)[users, items] for index arrays of equal shape."""
    return np.sum(self.user_vectors[users] * self.item_vectors[items], axis=-1)


class MovieLensBanditEnvironment(bandit_py_environment.BanditPyEnvironment):
  """Per step, `batch_size` random users each get `num_candidates` random movies."""

  def __init__(self, ratings: Ratings, rank: int = 20, num_candidates: int = 20,
               batch_size: int = 8, held_out_fraction: float = 0.2, seed: int = 0):
    users, items = np.unique(ratings.user_ids), np.unique(ratings.item_ids)
    self._rewards = LowRankRatings(ratings, users, items, rank)
    self._features = LowRankRatings(
        ratings.subset(~latest_per_user(ratings, held_out_fraction)), users, items, rank)
    self._rng = np.random.default_rng(seed)
    self._batch_size = batch_size
    self._num_candidates = num_candidates
    self._users = np.zeros(batch_size, int)
    self._movies = np.zeros((batch_size, num_candidates), int)
    self.global_dim = rank
    self.arm_dim = 2 * rank + 1
    observation_spec = {
        bandit_spec_utils.GLOBAL_FEATURE_KEY: array_spec.ArraySpec([rank], np.float32),
        bandit_spec_utils.PER_ARM_FEATURE_KEY: array_spec.ArraySpec(
            [num_candidates, self.arm_dim], np.float32),
        bandit_spec_utils.NUM_ACTIONS_FEATURE_KEY: array_spec.ArraySpec([], np.int32),
    }
    action_spec = array_spec.BoundedArraySpec((), np.int32, 0, num_candidates - 1)
    super().__init__(observation_spec, action_spec, name="movielens_per_arm")

  @property
  def batch_size(self) -> int:
    return self._batch_size

  @property
  def batched(self) -> bool:
    return True

  @property
  def num_candidates(self) -> int:
    return self._num_candidates

  def _observe(self) -> Dict[str, np.ndarray]:
    n_users, n_items = len(self._features.user_vectors), len(self._features.item_vectors)
    self._users = self._rng.integers(n_users, size=self._batch_size)
    self._movies = np.stack([self._rng.choice(n_items, self._num_candidates, replace=False)
                             for _ in range(self._batch_size)])
    query = self._features.user_vectors[self._users]
    items = self._features.item_vectors[self._movies]
    scores = np.einsum("bd,bnd->bn", query, items)[:, :, np.newaxis]
    return {
        bandit_spec_utils.GLOBAL_FEATURE_KEY: query,
        bandit_spec_utils.PER_ARM_FEATURE_KEY: arm_features(items, query, scores),
        bandit_spec_utils.NUM_ACTIONS_FEATURE_KEY: np.full(self._batch_size, self._num_candidates,
                                                           np.int32),
    }

  def expected_rewards(self) -> np.ndarray:
    """[batch, num_candidates]: every candidate's reward for the current observation."""
    return self._rewards.predict(self._users[:, np.newaxis], self._movies)

  def _apply_action(self, action: np.ndarray) -> np.ndarray:
    return self.expected_rewards()[np.arange(self._batch_size), action].astype(np.float32)
