"""Learn a slate policy from the older part of a log, judge it off-policy on the newer part.

The one path the pipeline component and the benchmarks share, so what is benchmarked is what is
blessed: split by time, replay the training rows into a TF-Agents agent, wrap its policy as a
SlatePolicy, fit the DR reward model on the training rows, compute the policy's position
probabilities for the held-out requests, and run the estimators.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from agents import ope
from agents.bandit_agents import AgentConfig, score_field, scoring_policy
from agents.logged import LoggedFeedback
from agents.replay import TrainingStats, train_from_logs
from agents.reward_model import RewardModel
from agents.slate_policy import SlatePolicy

_SCORING_BATCH = 512


@dataclasses.dataclass(frozen=True)
class OffPolicySettings:
  """How a policy learns from the older part of a log and is judged on the newer part."""
  slate_size: int = 3
  epsilon: float = 0.1           # the slate's exploration: every propensity is >= epsilon / n
  holdout_fraction: float = 0.3  # latest share of requests kept for OPE
  epochs: int = 3                # passes of the neural agents over the training rows
  batch_size: int = 256
  confidence: float = 0.95
  n_bootstrap: int = 1000
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class Outcome:
  policy: SlatePolicy
  training: TrainingStats
  table: ope.OPETable
  inputs: ope.OPEInputs          # the held-out rows as the estimators saw them
  held_out_requests: np.ndarray  # request index of each held-out row in `inputs`
  rows_beyond_slate: int         # held-out rows at positions the policy's slate does not have


def position_probabilities(policy: SlatePolicy, data: LoggedFeedback, requests: np.ndarray
                           ) -> np.ndarray:
  """[len(requests), k, N]: the policy's probability of each candidate at each position."""
  parts = []
  for first in range(0, len(requests), _SCORING_BATCH):
    batch = requests[first:first + _SCORING_BATCH]
    parts.append(policy.position_probabilities(
        data.contexts[batch], data.arm_features[batch],
        data.num_candidates[batch].astype(np.int32))["probabilities"].numpy())
  return np.concatenate(parts) if parts else np.zeros((0, policy.slate_size, data.max_candidates))


def is_binary(rewards: np.ndarray) -> bool:
  return bool(np.all(np.isin(rewards, (0.0, 1.0))))


def ope_inputs(policy: SlatePolicy, data: LoggedFeedback, rows: np.ndarray,
               reward_model: RewardModel) -> ope.OPEInputs:
  """The estimators' arrays for `rows` (all at positions inside the policy's slate)."""
  requests, inverse = np.unique(data.request[rows], return_inverse=True)
  probabilities = position_probabilities(policy, data, requests)         # [R, k, N]
  rewards = reward_model.predict_all(data.contexts[requests], data.arm_features[requests])
  return ope.OPEInputs(
      reward=data.reward[rows].astype(float), action=data.shown[rows], position=data.position[rows],
      pscore=data.propensity[rows].astype(float),
      action_dist=np.transpose(probabilities, (0, 2, 1))[inverse],
      estimated_rewards=rewards[inverse][:, :, :policy.slate_size])


def train_and_evaluate(config: AgentConfig, data: LoggedFeedback,
                       settings: OffPolicySettings) -> Outcome:
  train_rows, held_out = data.split_by_time(settings.holdout_fraction)
  agent, stats = train_from_logs(config, data, train_rows, settings.epochs, settings.batch_size)
  policy = SlatePolicy(scoring_policy(agent), score_field(agent), settings.slate_size,
                       settings.epsilon)
  n_positions = int(data.position.max()) + 1
  reward_model = RewardModel(max(n_positions, settings.slate_size),
                             binary=is_binary(data.reward)).fit(data, train_rows)
  inside = held_out[data.position[held_out] < settings.slate_size]
  inputs = ope_inputs(policy, data, inside, reward_model)
  table = ope.evaluate(inputs, confidence=settings.confidence, n_bootstrap=settings.n_bootstrap,
                       seed=settings.seed)
  return Outcome(policy, stats, table, inputs, data.request[inside], len(held_out) - len(inside))
