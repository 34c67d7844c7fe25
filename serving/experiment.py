"""A/B experiments in the online path: deterministic user-hash routing to variants.

An experiment config (JSON) names variants with weights and, per model, the version label (or
version) each variant is served from:

    {"experiment": "retrieval-v2",
     "variants": [{"name": "control", "weight": 0.5, "models": {"retrieval": "stable"}},
                  {"name": "treatment", "weight": 0.5, "models": {"retrieval": "canary"}}]}

A user always lands in the same variant (SHA-256 of experiment and user id). The offline report
on what each variant got is `pipeline/ab_report.py`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Mapping, Tuple

from serving.limits import MAX_VARIANT_CHARS


@dataclasses.dataclass(frozen=True)
class Variant:
  name: str
  weight: float
  models: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Experiment:
  name: str
  variants: Tuple[Variant, ...]

  @classmethod
  def from_json(cls, text: str) -> "Experiment":
    """Parses and checks a config; every refusal names the variant and field at fault."""
    spec = json.loads(text)
    if not isinstance(spec, dict) or not isinstance(spec.get("variants"), list):
      raise ValueError('an experiment config is a JSON object with a "variants" list')
    variants = tuple(_variant(v, i) for i, v in enumerate(spec["variants"]))
    if not variants:
      raise ValueError("an experiment needs at least one variant")
    total = sum(v.weight for v in variants)
    if not math.isfinite(total) or total <= 0:
      raise ValueError(f"variant weights must sum to a finite number above 0, got {total}")
    if len({v.name for v in variants}) != len(variants):
      raise ValueError("variant names must be unique")
    return cls(str(spec.get("experiment", "default")), variants)

  def route(self, user_id: str) -> Variant:
    """The variant of a user: the same every time, split by the weights."""
    digest = hashlib.sha256(f"{self.name}:{user_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2 ** 64 * sum(v.weight for v in self.variants)
    total = 0.0
    for variant in self.variants:
      total += variant.weight
      if point < total:
        return variant
    return self.variants[-1]


def _variant(spec: object, index: int) -> Variant:
  """One variant of a config; NaN, infinite (1e309 parses as inf) or negative weights are
  refused, since the router's cumulative split would silently send no one, or everyone, there."""
  if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
    raise ValueError(f"variants[{index}] needs a non-empty string name")
  name, weight = spec["name"], spec.get("weight")
  if len(name) > MAX_VARIANT_CHARS:
    raise ValueError(f"variant {name[:20]!r}...: name is longer than {MAX_VARIANT_CHARS}")
  if isinstance(weight, bool) or not isinstance(weight, (int, float)):
    raise ValueError(f"variant {name!r}: weight must be a number, got {weight!r}")
  try:
    weight = float(weight)  # a JSON integer of 400 digits overflows here
  except OverflowError:
    weight = math.inf
  if not math.isfinite(weight) or weight < 0:
    raise ValueError(f"variant {name!r}: weight must be finite and >= 0, got {spec['weight']!r}")
  models = spec.get("models", {})
  if not isinstance(models, dict) or not all(
      isinstance(k, str) and isinstance(v, str) for k, v in models.items()):
    raise ValueError(f"variant {name!r}: models must map model names to version labels or "
                     f"version numbers (strings), got {models!r}")
  return Variant(name, weight, dict(models))


# The variant of traffic outside any experiment (and of feedback rows that name none).
DEFAULT_VARIANT = "default"
SINGLE_VARIANT = Experiment(DEFAULT_VARIANT, (Variant(DEFAULT_VARIANT, 1.0),))
