"""Online regret of each agent in the MovieLens environment, with a PNG plot and JSON numbers.

Every agent faces the same users and candidates (the environment is rebuilt with the same seed),
chooses one movie per user per step with its collect policy, and trains on that step's batch at
once. Regret per decision is the best candidate's reward minus the chosen one's.
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf
from tf_agents.specs import bandit_spec_utils
from tf_agents.trajectories import time_step as ts

from agents.bandit_agents import AgentConfig, create_agent
from agents.replay import experience
from agents.simulation import MovieLensBanditEnvironment

UNIFORM_RANDOM = "uniform_random"


@dataclasses.dataclass(frozen=True)
class RegretCurve:
  agent: str
  cumulative_regret: np.ndarray  # [steps], summed over the batch's decisions
  mean_reward: float
  train_steps_per_second: Optional[float]  # agent.train calls per second (one call = one
                                           # step's batch); None for uniform random
  decisions_per_second: float    # decisions (policy + environment + training) per second

  def to_json(self) -> Dict[str, object]:
    return {"agent": self.agent, "steps": len(self.cumulative_regret),
            "cumulative_regret": float(self.cumulative_regret[-1]),
            "mean_reward": self.mean_reward,
            "train_steps_per_second": self.train_steps_per_second,
            "decisions_per_second": self.decisions_per_second}


def _to_tensors(observation: Dict[str, np.ndarray]) -> Dict[str, tf.Tensor]:
  return {key: tf.constant(value) for key, value in observation.items()}


def run_agent(make_env: Callable[[], MovieLensBanditEnvironment], name: str, steps: int,
              config: AgentConfig = AgentConfig()) -> RegretCurve:
  """`name` is an agent name of `agents.bandit_agents` or UNIFORM_RANDOM."""
  env = make_env()
  observation = env.reset().observation
  agent, action_fn = None, None
  if name != UNIFORM_RANDOM:
    agent = create_agent(dataclasses.replace(config, name=name), env.global_dim, env.arm_dim,
                         env.num_candidates)
    action_fn = tf.function(agent.collect_policy.action)
  rng = np.random.default_rng(config.seed)
  regret, rewards, train_seconds = np.zeros(steps), [], 0.0
  start = time.perf_counter()
  for step in range(steps):
    expected = env.expected_rewards()
    if agent is None:
      action = rng.integers(env.num_candidates, size=env.batch_size).astype(np.int32)
    else:
      policy_step = action_fn(ts.restart(_to_tensors(observation), batch_size=env.batch_size))
      action = policy_step.action.numpy()
    next_step = env.step(action)
    reward = np.asarray(next_step.reward)
    regret[step] = np.sum(expected.max(axis=1) - reward)
    rewards.append(reward)
    if agent is not None:
      chosen = observation[bandit_spec_utils.PER_ARM_FEATURE_KEY][np.arange(env.batch_size), action]
      batch = experience(agent, observation[bandit_spec_utils.GLOBAL_FEATURE_KEY], chosen,
                         observation[bandit_spec_utils.NUM_ACTIONS_FEATURE_KEY], reward)
      train_start = time.perf_counter()
      agent.train(batch)
      train_seconds += time.perf_counter() - train_start
    observation = next_step.observation
  elapsed = time.perf_counter() - start
  return RegretCurve(name, np.cumsum(regret), float(np.mean(rewards)),
                     steps / train_seconds if agent is not None else None,
                     steps * env.batch_size / elapsed)


def write_outputs(curves: Dict[str, RegretCurve], png_path: str, json_path: str,
                  settings: Dict[str, object]) -> None:
  """The regret curves as a PNG plot, and their final numbers (plus `settings`) as JSON."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  figure, axes = plt.subplots(figsize=(7, 4.5))
  for curve in curves.values():
    axes.plot(np.arange(1, len(curve.cumulative_regret) + 1), curve.cumulative_regret,
              label=curve.agent)
  axes.set_xlabel("step")
  axes.set_ylabel("cumulative regret (rating points, summed per step)")
  axes.set_title("MovieLens-100K per-arm bandit")
  axes.legend()
  figure.tight_layout()
  with tf.io.gfile.GFile(png_path, "wb") as f:
    figure.savefig(f, format="png", dpi=100)
  plt.close(figure)
  with tf.io.gfile.GFile(json_path, "w") as f:
    json.dump({"settings": settings,
               "agents": {name: curve.to_json() for name, curve in curves.items()},
               "curves": {name: curve.cumulative_regret.tolist()
                          for name, curve in curves.items()}},
              f, indent=2)
