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
from typing import Mapping, Tuple


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
    spec = json.loads(text)
    variants = tuple(Variant(v["name"], float(v["weight"]), dict(v.get("models", {})))
                     for v in spec["variants"])
    if not variants or any(v.weight < 0 for v in variants) or sum(
        v.weight for v in variants) <= 0:
      raise ValueError("an experiment needs variants with non-negative weights summing above 0")
    if len({v.name for v in variants}) != len(variants):
      raise ValueError("variant names must be unique")
    return cls(spec.get("experiment", "default"), variants)

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


# The variant of traffic outside any experiment (and of feedback rows that name none).
DEFAULT_VARIANT = "default"
SINGLE_VARIANT = Experiment(DEFAULT_VARIANT, (Variant(DEFAULT_VARIANT, 1.0),))
