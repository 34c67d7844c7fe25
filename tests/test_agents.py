"""The bandit package: estimators against obp, agents against uniform random, the exported
policy's propensities, and log validation."""
import functools
import json
import os

import agents  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import bandit_spec_utils

from agents import ope
from agents.bandit_agents import LINUCB, NEURAL_EPSILON_GREEDY, NEURAL_LINUCB, AgentConfig
from agents.bandit_agents import score_field, scoring_policy
from agents.logged import LoggedFeedback
from agents.open_bandit import load_open_bandit
from agents.regret import UNIFORM_RANDOM, run_agent, write_outputs
from agents.replay import train_from_logs
from agents.simulation import MovieLensBanditEnvironment, movielens_ratings
from agents.slate_policy import POLICY_SPEC_FILE, SlatePolicy, export_slate_policy
from agents.validation import BINARY, RATING, REJECT, SKIP, LogValidationError, validate_rows

GLOBAL = bandit_spec_utils.GLOBAL_FEATURE_KEY
PER_ARM = bandit_spec_utils.PER_ARM_FEATURE_KEY
NUM_ACTIONS = bandit_spec_utils.NUM_ACTIONS_FEATURE_KEY


# --- Off-policy estimators -------------------------------------------------------------------

@pytest.fixture(scope="module")
def open_bandit():
  data, report = load_open_bandit()
  return data, report


@pytest.fixture(scope="module")
def obd_inputs(open_bandit):
  """The real OBD log with a stochastic evaluation policy and a reward model's predictions."""
  data, _ = open_bandit
  rng = np.random.default_rng(7)
  n, n_items, n_positions = data.n_rows, data.max_candidates, 3
  action_dist = rng.dirichlet(np.full(n_items, 0.3), size=(n, n_positions)).transpose(0, 2, 1)
  estimated = rng.uniform(0.0, 0.02, size=(n, n_items, n_positions))
  return ope.OPEInputs(reward=data.reward.astype(float), action=data.shown,
                       position=data.position, pscore=data.propensity,
                       action_dist=action_dist, estimated_rewards=estimated)


def test_open_bandit_sample_loads_as_logged(open_bandit):
  data, report = open_bandit
  assert data.n_rows == 10_000 and report.problems == {}
  assert data.max_candidates == 80 and int(data.reward.sum()) == 38
  assert np.allclose(data.propensity, 1 / 80)
  assert set(np.unique(data.position)) == {0, 1, 2}


def test_estimates_match_obp(obd_inputs):
  from obp.ope import (DoublyRobust, InverseProbabilityWeighting,
                       SelfNormalizedInverseProbabilityWeighting)
  i = obd_inputs
  common = dict(reward=i.reward, action=i.action, position=i.position, pscore=i.pscore,
                action_dist=i.action_dist)
  reference = {
      ope.IPS: InverseProbabilityWeighting().estimate_policy_value(**common),
      ope.SNIPS: SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**common),
      ope.DR: DoublyRobust().estimate_policy_value(
          **common, estimated_rewards_by_reg_model=i.estimated_rewards),
  }
  for name, value in reference.items():
    assert ope.estimate(i, name) == pytest.approx(value, rel=1e-9, abs=1e-12), name
  assert len(set(round(v, 8) for v in reference.values())) == 3  # three different estimates


def test_bootstrap_intervals_match_obp(obd_inputs):
  from obp.ope import DoublyRobust, InverseProbabilityWeighting
  i = obd_inputs
  table = ope.evaluate(i, n_bootstrap=300, seed=3, confidence=0.9)
  common = dict(reward=i.reward, action=i.action, position=i.position, pscore=i.pscore,
                action_dist=i.action_dist, alpha=0.1, n_bootstrap_samples=300, random_state=3)
  reference = {
      ope.IPS: InverseProbabilityWeighting().estimate_interval(**common),
      ope.DR: DoublyRobust().estimate_interval(
          **common, estimated_rewards_by_reg_model=i.estimated_rewards),
  }
  for name, interval in reference.items():
    assert table.policy[name].lower == pytest.approx(interval["90.0% CI (lower)"], rel=1e-9)
    assert table.policy[name].upper == pytest.approx(interval["90.0% CI (upper)"], rel=1e-9)


def test_the_logging_policy_evaluates_to_its_own_click_rate(open_bandit):
  data, _ = open_bandit
  uniform = np.full((data.n_rows, data.max_candidates, 3), 1 / 80)
  inputs = ope.OPEInputs(reward=data.reward.astype(float), action=data.shown,
                         position=data.position, pscore=data.propensity, action_dist=uniform,
                         estimated_rewards=np.zeros_like(uniform))
  table = ope.evaluate(inputs, n_bootstrap=200)
  assert table.logging.value == pytest.approx(38 / 10_000)
  for name in ope.ESTIMATORS:
    assert table.policy[name].value == pytest.approx(table.logging.value)
    # Paired redraws: identical per-row terms give a lift of exactly zero on every redraw.
    assert table.lift[name].lower == pytest.approx(0.0, abs=1e-12)
    assert table.lift[name].upper == pytest.approx(0.0, abs=1e-12)
  assert table.logging.lower < table.logging.value < table.logging.upper
  assert table.effective_sample_size == pytest.approx(10_000)
  assert table.positive_rewards_matched == 38


def _table(n_positive, lift_lower):
  interval = ope.Interval(0.1, 0.05, 0.15)
  return ope.OPETable(n_rows=1000, n_positive_rewards=n_positive, confidence=0.95,
                      n_bootstrap=100, logging=interval, policy={ope.DR: interval},
                      lift={ope.DR: ope.Interval(0.01, lift_lower, 0.03)},
                      effective_sample_size=500.0, positive_rewards_matched=n_positive)


def test_blessing_needs_enough_rewards_and_a_confident_lower_bound():
  blessed, reason = ope.blessing_decision(_table(10, 0.02), ope.DR, 0.0, 50)
  assert not blessed and "too few logged rewards" in reason and "10 positive" in reason
  assert ope.blessing_decision(_table(80, 0.001), ope.DR, 0.0, 50)[0]
  assert not ope.blessing_decision(_table(80, -0.004), ope.DR, 0.0, 50)[0]
  assert ope.blessing_decision(_table(80, -0.004), ope.DR, 0.005, 50)[0]


# --- Log validation --------------------------------------------------------------------------

def test_bad_logs_are_rejected_naming_fields_and_counts():
  propensity = [0.1, float("nan"), 0.0, 0.1, 1.5, 0.1]
  reward = [1, 0, 0, 2, 0, 1]
  known = [True, True, True, True, True, False]
  with pytest.raises(LogValidationError) as error:
    validate_rows(propensity, reward, known, reward_kind=BINARY, policy=REJECT)
  message = str(error.value)
  for expected in ("propensity: missing in 1 of 6 rows", "propensity: zero or negative in 1 of 6",
                   "propensity: above 1 in 1 of 6", "reward: outside {0, 1} in 1 of 6",
                   "item_id: not in the catalog in 1 of 6", "invalid_rows='skip'"):
    assert expected in message


def test_bad_logs_are_skipped_and_counted():
  keep, report = validate_rows([0.1, 0.0, 0.2, 0.3], [4.0, 3.0, 7.0, 5.0],
                               [True, True, True, True], position=[0, 1, -1, 2],
                               reward_kind=RATING, policy=SKIP)
  assert keep.tolist() == [True, False, False, True]
  assert report.problems == {"propensity: zero or negative": 1,
                             "reward: outside the rating scale [0.5, 5]": 1,
                             "position: before the first slot": 1}
  assert report.n_kept == 2 and "2 rows dropped (skip)" in report.summary()


# --- Agents ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def make_env():
  ratings = movielens_ratings(max_users=150)
  return functools.partial(MovieLensBanditEnvironment, ratings, rank=8, num_candidates=10,
                           batch_size=16, seed=11)


def _uniform_log(env, steps, seed):
  """A uniform-random logging policy run in the environment, as LoggedFeedback."""
  rng = np.random.default_rng(seed)
  contexts, arms, rewards, shown = [], [], [], []
  observation = env.reset().observation
  for _ in range(steps):
    action = rng.integers(env.num_candidates, size=env.batch_size)
    step = env.step(action.astype(np.int32))
    contexts.append(observation[GLOBAL])
    arms.append(observation[PER_ARM])
    shown.append(action)
    rewards.append(step.reward)
    observation = step.observation
  n = steps * env.batch_size
  return LoggedFeedback(
      contexts=np.concatenate(contexts), arm_features=np.concatenate(arms),
      candidate_ids=np.full((n, env.num_candidates), "x"),
      num_candidates=np.full(n, env.num_candidates, np.int32), request=np.arange(n),
      shown=np.concatenate(shown), position=np.zeros(n, int),
      reward=np.concatenate(rewards).astype(np.float32),
      propensity=np.full(n, 1 / env.num_candidates), timestamp=np.arange(n), simulated=True)


def _true_value(policy, env, steps):
  """Expected reward of the policy's top slot against uniform random, on fresh requests."""
  values, random_values = [], []
  observation = env.reset().observation
  for _ in range(steps):
    probabilities = policy.position_probabilities(
        observation[GLOBAL], observation[PER_ARM], observation[NUM_ACTIONS])["probabilities"]
    expected = env.expected_rewards()
    values.append(np.sum(probabilities.numpy()[:, 0, :] * expected, axis=1))
    random_values.append(expected.mean(axis=1))
    observation = env.step(np.zeros(env.batch_size, np.int32)).observation
  return float(np.mean(values)), float(np.mean(random_values))


@pytest.mark.parametrize("name", [LINUCB, NEURAL_EPSILON_GREEDY])
def test_agent_trained_from_logs_beats_uniform_random(make_env, name):
  log = _uniform_log(make_env(), steps=40, seed=0)
  agent, stats = train_from_logs(AgentConfig(name=name, seed=1), log, np.arange(log.n_rows),
                                 epochs=5, batch_size=64)
  assert stats.train_steps > 0
  policy = SlatePolicy(scoring_policy(agent), score_field(agent), slate_size=1, epsilon=0.05)
  value, uniform = _true_value(policy, make_env(), steps=20)
  assert value > uniform + 0.5, (value, uniform)  # rewards are in rating points


def test_online_agents_have_less_regret_than_uniform_random(make_env, tmp_path):
  curves = {name: run_agent(make_env, name, steps=40)
            for name in (UNIFORM_RANDOM, LINUCB, NEURAL_LINUCB)}
  random_regret = curves[UNIFORM_RANDOM].cumulative_regret[-1]
  for name in (LINUCB, NEURAL_LINUCB):
    assert curves[name].cumulative_regret[-1] < 0.5 * random_regret, name
    assert curves[name].train_steps_per_second > 0
  write_outputs(curves, str(tmp_path / "regret.png"), str(tmp_path / "regret.json"), {"steps": 40})
  assert (tmp_path / "regret.png").read_bytes()[:4] == b"\x89PNG"
  with open(tmp_path / "regret.json") as f:
    assert set(json.load(f)["agents"]) == set(curves)


# --- The exported policy ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(make_env, tmp_path_factory):
  log = _uniform_log(make_env(), steps=10, seed=1)
  agent, _ = train_from_logs(AgentConfig(name=LINUCB), log, np.arange(log.n_rows))
  policy = SlatePolicy(scoring_policy(agent), score_field(agent), slate_size=3, epsilon=0.2)
  path = str(tmp_path_factory.mktemp("policy"))
  export_slate_policy(policy, path, {"agent": LINUCB})
  return policy, tf.saved_model.load(path), log, path


def test_exported_policy_returns_a_slate_with_valid_propensities(exported):
  policy, loaded, log, path = exported
  contexts, arms = log.contexts[:4], log.arm_features[:4, :7]   # 7 of the 10 columns
  ids = np.array([[f"item{r}_{c}" for c in range(7)] for r in range(4)])
  counts = np.array([7, 5, 2, 7], np.int32)
  out = loaded.signatures["serving_default"](
      context=tf.constant(contexts), arm_features=tf.constant(arms),
      candidate_ids=tf.constant(ids), num_candidates=tf.constant(counts))
  chosen = out["item_ids"].numpy().astype(str)
  propensities = out["propensities"].numpy()
  assert chosen.shape == propensities.shape == (4, 3)
  probabilities = loaded.signatures["position_probabilities"](
      context=tf.constant(contexts), arm_features=tf.constant(arms),
      num_candidates=tf.constant(counts))["probabilities"].numpy()
  assert probabilities.shape == (4, 3, 7)
  for row in range(4):
    filled = min(3, counts[row])
    assert len(set(chosen[row, :filled])) == filled               # distinct items
    assert set(chosen[row, :filled]) <= set(ids[row, :counts[row]])
    assert np.all(propensities[row, :filled] >= 0.2 / counts[row] - 1e-7)  # positive
    assert np.allclose(probabilities[row, :filled].sum(axis=1), 1.0)       # sum to one
    assert np.all(probabilities[row, :, counts[row]:] == 0)                # padding never
    for slot in range(filled):
      column = list(ids[row]).index(chosen[row, slot])
      assert propensities[row, slot] == pytest.approx(probabilities[row, slot, column])
    assert list(chosen[row, filled:]) == [""] * (3 - filled)
    assert np.all(propensities[row, filled:] == 0)
  # The loaded SavedModel is the in-memory policy.
  in_memory = policy.position_probabilities(contexts, arms, counts)["probabilities"].numpy()
  assert np.allclose(in_memory, probabilities)
  with open(os.path.join(path, POLICY_SPEC_FILE)) as f:
    assert json.load(f)["slate_size"] == 3


def test_exported_propensities_are_the_sampling_frequencies(exported):
  _, loaded, log, _ = exported
  draws = 4000
  out = loaded.signatures["serving_default"](
      context=tf.constant(np.repeat(log.contexts[:1], draws, axis=0)),
      arm_features=tf.constant(np.repeat(log.arm_features[:1], draws, axis=0)),
      candidate_ids=tf.constant(np.repeat([[str(c) for c in range(10)]], draws, axis=0)),
      num_candidates=tf.constant(np.full(draws, 10, np.int32)))
  chosen = out["item_ids"].numpy().astype(str)
  propensities = out["propensities"].numpy()
  for slot in range(3):
    for item in np.unique(chosen[:, slot]):
      at = chosen[:, slot] == item
      assert np.mean(at) == pytest.approx(propensities[at, slot][0], abs=0.03), (slot, item)
