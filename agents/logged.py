"""Logged bandit feedback in memory: requests with their candidates, and the items shown.

One request is one decision: a context and a candidate set (padded to a common width). One row is
one shown item: which request, which candidate, at which slate position, the reward it got and
the logging policy's propensity for showing that candidate at that position. This is the shape of
the serving feedback log (an `impression` per shown item) and of the Open Bandit Dataset.
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class LoggedFeedback:
  """Requests [R] with candidates [R, N], and shown-item rows [n] that point into them."""
  contexts: np.ndarray        # [R, global_dim] float32
  arm_features: np.ndarray    # [R, N, arm_dim] float32, zero-padded beyond num_candidates
  candidate_ids: np.ndarray   # [R, N] str, "" beyond num_candidates
  num_candidates: np.ndarray  # [R] int32
  request: np.ndarray         # [n] int, index into the requests
  shown: np.ndarray           # [n] int, index of the shown item within its request's candidates
  position: np.ndarray        # [n] int, 0-based slate position (0 = top)
  reward: np.ndarray          # [n] float
  propensity: np.ndarray      # [n] float, P(logging policy shows this candidate at this position)
  timestamp: np.ndarray       # [R] int, when the request was served; orders the train/OPE split
  simulated: bool = False     # True when rewards and logging policy come from a simulator

  def __post_init__(self):
    n_requests, width = self.candidate_ids.shape
    if self.arm_features.shape[:2] != (n_requests, width) or len(self.contexts) != n_requests:
      raise ValueError(f"requests disagree: contexts {self.contexts.shape}, arm_features "
                       f"{self.arm_features.shape}, candidate_ids {self.candidate_ids.shape}")
    n_rows = len(self.request)
    for name in ("shown", "position", "reward", "propensity"):
      if len(getattr(self, name)) != n_rows:
        raise ValueError(f"{name} has {len(getattr(self, name))} rows, request has {n_rows}")
    if n_rows and np.any(self.shown >= self.num_candidates[self.request]):
      raise ValueError("a shown index points past its request's candidates")

  @property
  def n_rows(self) -> int:
    return len(self.request)

  @property
  def global_dim(self) -> int:
    return self.contexts.shape[1]

  @property
  def arm_dim(self) -> int:
    return self.arm_features.shape[2]

  @property
  def max_candidates(self) -> int:
    return self.candidate_ids.shape[1]

  def shown_arm_features(self, rows: np.ndarray) -> np.ndarray:
    """[len(rows), arm_dim]: the features of the item each row showed."""
    return self.arm_features[self.request[rows], self.shown[rows]]

  def split_by_time(self, holdout_fraction: float) -> Tuple[np.ndarray, np.ndarray]:
    """(train rows, holdout rows): the latest `holdout_fraction` of requests are held out, so a
    policy is never judged on the decisions it learned from."""
    if not 0.0 < holdout_fraction < 1.0:
      raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    order = np.argsort(self.timestamp, kind="stable")
    n_holdout = max(1, int(round(len(order) * holdout_fraction)))
    held_out = np.zeros(len(order), bool)
    held_out[order[len(order) - n_holdout:]] = True
    rows = np.arange(self.n_rows)
    return rows[~held_out[self.request]], rows[held_out[self.request]]
