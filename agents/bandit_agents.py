"""TF-Agents per-arm contextual bandit agents, configured in one place.

Every agent sees the same observation: global features, per-arm features for up to
`max_candidates` candidates, and a `num_actions` feature that says how many of them are real (a
request may have fewer candidates than the maximum).
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.bandits.agents import lin_ucb_agent, neural_epsilon_greedy_agent, neural_linucb_agent
from tf_agents.bandits.networks import global_and_arm_feature_network
from tf_agents.bandits.policies import policy_utilities
from tf_agents.policies import tf_policy
from tf_agents.specs import bandit_spec_utils, tensor_spec
from tf_agents.trajectories import time_step as ts

LINUCB = "linucb"
NEURAL_LINUCB = "neural_linucb"
NEURAL_EPSILON_GREEDY = "neural_epsilon_greedy"
AGENT_NAMES = (LINUCB, NEURAL_LINUCB, NEURAL_EPSILON_GREEDY)

_MEAN = policy_utilities.InfoFields.PREDICTED_REWARDS_MEAN
_OPTIMISTIC = policy_utilities.InfoFields.PREDICTED_REWARDS_OPTIMISTIC


@dataclasses.dataclass(frozen=True)
class AgentConfig:
  """Hyperparameters of the three agents; each reads the fields it needs."""
  name: str = LINUCB
  alpha: float = 1.0              # UCB width (LinUCB, NeuralLinUCB)
  tikhonov_weight: float = 1.0    # LinUCB's ridge prior
  epsilon: float = 0.1            # per-decision exploration: NeuralEpsilonGreedy, and
                                  # NeuralLinUCB while it trains its encoder
  tower_layers: Sequence[int] = (64,)    # global and arm towers of the neural agents
  common_layers: Sequence[int] = (32,)   # layers after the towers are joined
  encoding_dim: int = 16          # NeuralLinUCB: the encoding LinUCB runs on
  encoding_steps: int = 500       # NeuralLinUCB: network training steps before the LinUCB phase
  learning_rate: float = 0.005
  seed: int = 0

  def __post_init__(self):
    if self.name not in AGENT_NAMES:
      raise ValueError(f"unknown agent {self.name!r}; choose one of {AGENT_NAMES}")


def _check_keras_2() -> None:
  if not tf.keras.layers.Dense.__module__.startswith("tf_keras"):
    raise RuntimeError("TF-Agents needs Keras 2: set TF_USE_LEGACY_KERAS=1 before TensorFlow is "
                       "imported (or import `agents` first)")


def observation_spec(global_dim: int, arm_dim: int, max_candidates: int):
  return bandit_spec_utils.create_per_arm_observation_spec(
      global_dim, arm_dim, max_candidates, add_num_actions_feature=True)


def create_agent(config: AgentConfig, global_dim: int, arm_dim: int, max_candidates: int,
                 encoding_steps: Optional[int] = None) -> tf_agent.TFAgent:
  """A freshly initialised agent; `encoding_steps` overrides the config (offline training sets it
  to the number of network steps it will run)."""
  _check_keras_2()
  tf.keras.utils.set_random_seed(config.seed)
  obs_spec = observation_spec(global_dim, arm_dim, max_candidates)
  step_spec = ts.time_step_spec(obs_spec)
  action_spec = tensor_spec.BoundedTensorSpec((), tf.int32, 0, max_candidates - 1)
  if config.name == LINUCB:
    agent = lin_ucb_agent.LinearUCBAgent(
        step_spec, action_spec, alpha=config.alpha, tikhonov_weight=config.tikhonov_weight,
        add_bias=True, use_eigendecomp=True, accepts_per_arm_features=True,
        emit_policy_info=(_MEAN, _OPTIMISTIC))
  elif config.name == NEURAL_LINUCB:
    network = global_and_arm_feature_network.create_feed_forward_common_tower_network(
        obs_spec, tuple(config.tower_layers), tuple(config.tower_layers),
        tuple(config.common_layers), config.encoding_dim)
    agent = neural_linucb_agent.NeuralLinUCBAgent(
        step_spec, action_spec, encoding_network=network,
        encoding_network_num_train_steps=(
            config.encoding_steps if encoding_steps is None else encoding_steps),
        encoding_dim=config.encoding_dim,
        optimizer=tf.compat.v1.train.AdamOptimizer(config.learning_rate), alpha=config.alpha,
        epsilon_greedy=config.epsilon, accepts_per_arm_features=True,
        emit_policy_info=(_MEAN, _OPTIMISTIC))
  else:
    network = global_and_arm_feature_network.create_feed_forward_common_tower_network(
        obs_spec, tuple(config.tower_layers), tuple(config.tower_layers),
        tuple(config.common_layers))
    agent = neural_epsilon_greedy_agent.NeuralEpsilonGreedyAgent(
        step_spec, action_spec, reward_network=network,
        optimizer=tf.compat.v1.train.AdamOptimizer(config.learning_rate),
        epsilon=config.epsilon, accepts_per_arm_features=True, emit_policy_info=(_MEAN,),
        info_fields_to_inherit_from_greedy=[_MEAN])
  agent.initialize()
  return agent


def scoring_policy(agent: tf_agent.TFAgent) -> tf_policy.TFPolicy:
  """The policy whose per-candidate scores rank a slate: the UCB policy of the UCB agents, the
  greedy policy of the epsilon-greedy agent (the slate adds its own exploration)."""
  if isinstance(agent, neural_epsilon_greedy_agent.NeuralEpsilonGreedyAgent):
    return agent.policy.wrapped_policy
  return agent.policy


def score_field(agent: tf_agent.TFAgent) -> str:
  """Which PolicyInfo field holds the ranking scores: optimistic (UCB) or mean predictions."""
  if isinstance(agent, neural_epsilon_greedy_agent.NeuralEpsilonGreedyAgent):
    return _MEAN
  return _OPTIMISTIC
