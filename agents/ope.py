"""Off-policy estimators (IPS, self-normalised IPS, doubly robust) with bootstrap intervals.

Inputs follow obp's conventions so the two can be compared on the same arrays: per logged row the
action (candidate index), its slate position, reward and the logging propensity; `action_dist`
[n, n_actions, n_positions] is the evaluated policy's probability of each candidate at each
position, `estimated_rewards` (same shape) a reward model's predictions for DR.

Every estimator here is a ratio of sums over rows, sum(numerator) / sum(denominator):
  IPS    numerator w*r,                              denominator 1
  SNIPS  numerator w*r,                              denominator w
  DR     numerator sum_a pi(a) q(a) + w*(r - q(a_i)), denominator 1
with w = pi(a_i | x_i, p_i) / propensity_i. The bootstrap redraws rows with replacement and
recomputes each ratio on the same redraw, and the logging policy's observed reward too, so the
policy-minus-logging difference gets a paired interval. Redraws come from
`np.random.RandomState(seed).randint(0, n, n)`, the stream obp's `estimate_interval` uses: IPS and
DR intervals equal obp's for the same seed. SNIPS differs on purpose: obp resamples w*r/mean(w)
with the full-sample mean fixed; here the normalisation is redone within each redraw.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

IPS, SNIPS, DR = "ips", "snips", "dr"
ESTIMATORS: Tuple[str, ...] = (IPS, SNIPS, DR)
LOGGING = "logging"
_BOOTSTRAP_CHUNK = 100  # redraws per vectorised batch; bounds memory at chunk * n indices


@dataclasses.dataclass(frozen=True)
class OPEInputs:
  reward: np.ndarray       # [n]
  action: np.ndarray       # [n] int
  position: np.ndarray     # [n] int
  pscore: np.ndarray       # [n] logging propensity of (action, position)
  action_dist: np.ndarray  # [n, n_actions, n_positions]
  estimated_rewards: Optional[np.ndarray] = None  # [n, n_actions, n_positions], for DR

  def __post_init__(self):
    n = len(self.reward)
    if self.action_dist.ndim != 3 or self.action_dist.shape[0] != n:
      raise ValueError(f"action_dist must be [n={n}, n_actions, n_positions], got "
                       f"{self.action_dist.shape}")
    for name in ("action", "position", "pscore"):
      if len(getattr(self, name)) != n:
        raise ValueError(f"{name} has {len(getattr(self, name))} rows, reward has {n}")
    if np.any(self.pscore <= 0):
      raise ValueError("pscore must be positive (validate logs with agents.validation first)")


@dataclasses.dataclass(frozen=True)
class Interval:
  value: float
  lower: float
  upper: float


@dataclasses.dataclass(frozen=True)
class OPETable:
  """Each estimator's policy value and lift over the logging policy, with intervals."""
  n_rows: int
  n_positive_rewards: int
  confidence: float
  n_bootstrap: int
  logging: Interval                  # the logging policy's observed mean reward
  policy: Dict[str, Interval]        # estimator -> estimated value of the evaluated policy
  lift: Dict[str, Interval]          # estimator -> policy value minus logging value (paired)
  effective_sample_size: float       # (sum w)^2 / sum w^2: how many rows the estimate rests on
  # Positive-reward rows where the evaluated policy is at least as likely as the logging policy
  # to make the logged choice (w >= 1). Near zero, the importance-weighted estimates rest on no
  # observed success of this policy, and their bootstrap intervals are too narrow to trust.
  positive_rewards_matched: int


def importance_weights(inputs: OPEInputs) -> np.ndarray:
  rows = np.arange(len(inputs.reward))
  return inputs.action_dist[rows, inputs.action, inputs.position] / inputs.pscore


def _terms(inputs: OPEInputs, estimator: str) -> Tuple[np.ndarray, np.ndarray]:
  """(numerator, denominator) per row; the estimate is their ratio of sums."""
  w = importance_weights(inputs)
  ones = np.ones_like(w)
  if estimator == LOGGING:
    return inputs.reward.astype(float), ones
  if estimator == IPS:
    return w * inputs.reward, ones
  if estimator == SNIPS:
    return w * inputs.reward, w
  if estimator == DR:
    if inputs.estimated_rewards is None:
      raise ValueError("DR needs estimated_rewards from a reward model")
    rows = np.arange(len(w))
    q_all = inputs.estimated_rewards[rows, :, inputs.position]
    pi_all = inputs.action_dist[rows, :, inputs.position]
    q_logged = inputs.estimated_rewards[rows, inputs.action, inputs.position]
    return np.sum(pi_all * q_all, axis=1) + w * (inputs.reward - q_logged), ones
  raise ValueError(f"unknown estimator {estimator!r}; choose from {ESTIMATORS}")


def estimate(inputs: OPEInputs, estimator: str) -> float:
  numerator, denominator = _terms(inputs, estimator)
  return float(numerator.sum() / denominator.sum())


def _bootstrap(terms: Dict[str, Tuple[np.ndarray, np.ndarray]], n_bootstrap: int, seed: int
               ) -> Dict[str, np.ndarray]:
  """Estimator -> [n_bootstrap] values, every estimator on the same redraws."""
  n = len(next(iter(terms.values()))[0])
  random_state = np.random.RandomState(seed)
  draws: Dict[str, list] = {name: [] for name in terms}
  for first in range(0, n_bootstrap, _BOOTSTRAP_CHUNK):
    index = random_state.randint(0, n, size=(min(_BOOTSTRAP_CHUNK, n_bootstrap - first), n))
    for name, (numerator, denominator) in terms.items():
      draws[name].append(numerator[index].sum(axis=1) / denominator[index].sum(axis=1))
  return {name: np.concatenate(values) for name, values in draws.items()}


def _interval(value: float, draws: np.ndarray, confidence: float) -> Interval:
  alpha = 1.0 - confidence
  return Interval(value, float(np.percentile(draws, 100 * alpha / 2)),
                  float(np.percentile(draws, 100 * (1 - alpha / 2))))


def evaluate(inputs: OPEInputs, estimators: Sequence[str] = ESTIMATORS, confidence: float = 0.95,
             n_bootstrap: int = 1000, seed: int = 0) -> OPETable:
  """The OPE table of one evaluated policy against the policy that logged `inputs`."""
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  if len(inputs.reward) == 0:
    raise ValueError("no logged rows to evaluate on")
  terms = {name: _terms(inputs, name) for name in (LOGGING,) + tuple(estimators)}
  values = {name: float(num.sum() / den.sum()) for name, (num, den) in terms.items()}
  draws = _bootstrap(terms, n_bootstrap, seed)
  w = importance_weights(inputs)
  return OPETable(
      n_rows=len(inputs.reward),
      n_positive_rewards=int(np.sum(inputs.reward > 0)),
      confidence=confidence,
      n_bootstrap=n_bootstrap,
      logging=_interval(values[LOGGING], draws[LOGGING], confidence),
      policy={name: _interval(values[name], draws[name], confidence) for name in estimators},
      lift={name: _interval(values[name] - values[LOGGING], draws[name] - draws[LOGGING],
                            confidence) for name in estimators},
      effective_sample_size=float(w.sum() ** 2 / max(np.sum(w ** 2), 1e-12)),
      positive_rewards_matched=int(np.sum((inputs.reward > 0) & (w >= 1.0))))


def blessing_decision(table: OPETable, gate_estimator: str, tolerance: float,
                      min_positive_rewards: int) -> Tuple[bool, str]:
  """(blessed, reason). Blessed only with enough positive rewards to tell, and when the lower
  confidence bound of (policy - logging) under `gate_estimator` is above -tolerance: with
  confidence, the policy is no worse than the logging policy by more than `tolerance`."""
  if table.n_positive_rewards < min_positive_rewards:
    return False, (f"too few logged rewards to tell: {table.n_positive_rewards} positive rewards "
                   f"in {table.n_rows} held-out rows, fewer than min_positive_rewards="
                   f"{min_positive_rewards}; the current policy stays")
  lift = table.lift[gate_estimator]
  bound = (f"{gate_estimator}: lower {100 * table.confidence:g}% bound of policy - logging = "
           f"{lift.lower:+.5f}")
  threshold = f"-tolerance ({0.0 - tolerance:+.5f})"  # 0.0 - 0.0 prints +0, not -0
  if lift.lower > -tolerance:
    return True, f"{bound} > {threshold}"
  return False, f"{bound} <= {threshold}; not confidently no worse than the logging policy"
