"""Trains an agent from logged (context, shown arm, reward, propensity) tuples.

Each logged row becomes a one-step trajectory, exactly what the agent would have stored had it
chosen that arm itself: the global features, the chosen arm's features (per-arm agents learn from
`policy_info.chosen_arm_features`, not from the action index) and the reward. The logging
propensity does not weight training: every agent regresses the reward on the shown arm's
features, a conditional mean that any logging policy with full support identifies, and weights
would mostly add variance. Propensities are what the off-policy evaluation (`agents.ope`) needs.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Tuple

import numpy as np
import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.specs import bandit_spec_utils
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from agents.bandit_agents import LINUCB, NEURAL_LINUCB, AgentConfig, create_agent
from agents.logged import LoggedFeedback


def experience(agent: tf_agent.TFAgent, contexts: np.ndarray, chosen_arm_features: np.ndarray,
               num_candidates: np.ndarray, rewards: np.ndarray) -> trajectory.Trajectory:
  """A batch of one-step trajectories [B, 1] in the agent's training spec."""
  batch = len(rewards)
  info = tf.nest.map_structure(lambda spec: tf.zeros([batch] + spec.shape.as_list(), spec.dtype),
                               agent.training_data_spec.policy_info)
  info = info._replace(chosen_arm_features=tf.constant(chosen_arm_features, tf.float32))
  observation = {
      bandit_spec_utils.GLOBAL_FEATURE_KEY: tf.constant(contexts, tf.float32),
      bandit_spec_utils.NUM_ACTIONS_FEATURE_KEY: tf.constant(num_candidates, tf.int32),
  }
  steps = trajectory.Trajectory(
      step_type=tf.fill([batch], ts.StepType.FIRST), observation=observation,
      action=tf.zeros([batch], tf.int32), policy_info=info,
      next_step_type=tf.fill([batch], ts.StepType.LAST),
      reward=tf.constant(rewards, tf.float32), discount=tf.zeros([batch]))
  return tf.nest.map_structure(lambda t: tf.expand_dims(t, 1), steps)


@dataclasses.dataclass(frozen=True)
class TrainingStats:
  rows: int
  passes: int
  train_steps: int
  seconds: float

  @property
  def steps_per_second(self) -> float:
    return self.train_steps / max(self.seconds, 1e-9)


def _passes(name: str, epochs: int) -> int:
  """LinUCB's statistics are exact sums, so one pass; a second would count every row twice.
  NeuralLinUCB trains its encoder for `epochs` passes, then one pass fills its LinUCB statistics."""
  if name == LINUCB:
    return 1
  return epochs + 1 if name == NEURAL_LINUCB else epochs


def train_from_logs(config: AgentConfig, data: LoggedFeedback, rows: np.ndarray, epochs: int = 3,
                    batch_size: int = 256) -> Tuple[tf_agent.TFAgent, TrainingStats]:
  """(agent, TrainingStats) after replaying `rows` of the log in shuffled batches."""
  if len(rows) == 0:
    raise ValueError("no logged rows to train on")
  n_batches = math.ceil(len(rows) / batch_size)
  agent = create_agent(config, data.global_dim, data.arm_dim, data.max_candidates,
                       encoding_steps=epochs * n_batches)
  rng = np.random.default_rng(config.seed)
  passes = _passes(config.name, epochs)
  start, steps = time.perf_counter(), 0
  for _ in range(passes):
    order = rng.permutation(rows)
    for first in range(0, len(order), batch_size):
      batch = order[first:first + batch_size]
      agent.train(experience(agent, data.contexts[data.request[batch]],
                             data.shown_arm_features(batch),
                             data.num_candidates[data.request[batch]], data.reward[batch]))
      steps += 1
  return agent, TrainingStats(len(rows), passes, steps, time.perf_counter() - start)
