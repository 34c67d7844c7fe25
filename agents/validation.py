"""Checks logged bandit feedback before anything learns from it or is judged on it.

A missing or zero propensity makes importance weights infinite or undefined, a reward outside its
scale and an item the catalog does not know silently bias every estimate, so none of them may slip
through. Two stated policies: `reject` (the default) fails, naming each field at fault with its row
count; `skip` drops the bad rows and returns the counts, which go into the OPE report.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from pipeline.data.contract import CURATED_SCHEMA
from transform import features as F

REJECT, SKIP = "reject", "skip"
BINARY, RATING = "binary", "rating"


class LogValidationError(ValueError):
  """Logged feedback that cannot be used as it is; the message names fields and row counts."""


@functools.lru_cache(maxsize=None)
def rating_scale() -> Tuple[float, float]:
  """The rating range of the curated schema, the one place the project states it."""
  with tf.io.gfile.GFile(CURATED_SCHEMA) as f:
    schema = text_format.Parse(f.read(), schema_pb2.Schema())
  domain = next(feature.float_domain for feature in schema.feature if feature.name == F.RATING)
  return domain.min, domain.max


@dataclasses.dataclass(frozen=True)
class ValidationReport:
  n_rows: int
  n_kept: int
  policy: str
  problems: Dict[str, int]  # "<field>: <what is wrong>" -> rows

  def problem_list(self) -> str:
    return "; ".join(f"{problem} in {count} of {self.n_rows} rows"
                     for problem, count in self.problems.items())

  def summary(self) -> str:
    if not self.problems:
      return f"all {self.n_rows} logged rows valid"
    return f"{self.problem_list()}; {self.n_rows - self.n_kept} rows dropped ({self.policy})"


def validate_rows(propensity: np.ndarray, reward: np.ndarray, item_known: np.ndarray,
                  position: Optional[np.ndarray] = None, reward_kind: str = BINARY,
                  policy: str = REJECT, extra_checks: Optional[Mapping[str, np.ndarray]] = None
                  ) -> Tuple[np.ndarray, ValidationReport]:
  """(rows to keep, report). Missing values are NaN; `position` is 0-based; `extra_checks` are
  further "<field>: <problem>" -> bad-row masks. Raises LogValidationError under `reject` when
  any row is bad."""
  if policy not in (REJECT, SKIP):
    raise ValueError(f"invalid-row policy must be {REJECT!r} or {SKIP!r}, got {policy!r}")
  propensity = np.asarray(propensity, float)
  reward = np.asarray(reward, float)
  if reward_kind == BINARY:
    reward_check = ("reward: outside {0, 1}", ~np.isnan(reward) & ~np.isin(reward, (0.0, 1.0)))
  elif reward_kind == RATING:
    low, high = rating_scale()
    reward_check = (f"reward: outside the rating scale [{low:g}, {high:g}]",
                    ~np.isnan(reward) & ((reward < low) | (reward > high)))
  else:
    raise ValueError(f"reward_kind must be {BINARY!r} or {RATING!r}, got {reward_kind!r}")
  with np.errstate(invalid="ignore"):
    checks = [
        ("propensity: missing", np.isnan(propensity)),
        ("propensity: zero or negative", propensity <= 0),
        ("propensity: above 1", propensity > 1),
        ("reward: missing", np.isnan(reward)),
        reward_check,
        ("item_id: not in the catalog", ~np.asarray(item_known, bool)),
    ]
    if position is not None:
      position = np.asarray(position, float)
      checks += [("position: missing", np.isnan(position)),
                 ("position: before the first slot", position < 0)]
  checks += list((extra_checks or {}).items())
  bad = np.zeros(len(reward), bool)
  problems = {}
  for name, mask in checks:
    if mask.any():
      problems[name] = int(mask.sum())
      bad |= mask
  report = ValidationReport(len(reward), int((~bad).sum()), policy, problems)
  if problems and policy == REJECT:
    raise LogValidationError(
        f"logged feedback rejected: {report.problem_list()}. Fix the log, or set "
        f"invalid_rows='{SKIP}' to drop these rows and count them in the report")
  return ~bad, report
