"""Warm start of the ranking stage's scorers from the last blessed ranker's weights.

The ranker's inputs are dense features named in one list (trainer/ranker/features.py), not id
tables, so a later run can start every scorer of its ensemble from the blessed one's weights
when the two were built alike: the same feature names in the same order, the same scorer kinds
in the same order, the same width and cross layers. Anything else trains cold, and the training
record says why. The weights act on standardised features; each run standardises with its own
training moments, which move little from one span to the next.
"""
from __future__ import annotations

import io
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

STATE_FILE = "ranker_warm_start.npz"     # in the Model artifact, beside the training record
BUILD_FILE = "ranker_warm_start.json"    # what the weights fit: features and scorer shapes
Weights = List[np.ndarray]


def build_description(feature_names: Sequence[str], kinds: Sequence[str], width: int,
                      cross_layers: int) -> Dict[str, Any]:
  """What decides the scorers' weight shapes and meaning."""
  return {"features": list(feature_names), "scorers": list(kinds), "width": width,
          "cross_layers": cross_layers}


def save(scorers: Sequence[tf.keras.Model], build: Dict[str, Any], model_dir: str) -> None:
  """Writes every scorer's weights (all members, also those the ensemble left out: the next
  run trains each of them) and their build description into `model_dir`."""
  buffer = io.BytesIO()
  np.savez(buffer, **{f"{member}/{i}": array for member, scorer in enumerate(scorers)
                      for i, array in enumerate(scorer.get_weights())})
  with tf.io.gfile.GFile(os.path.join(model_dir, STATE_FILE), "wb") as f:
    f.write(buffer.getvalue())
  with tf.io.gfile.GFile(os.path.join(model_dir, BUILD_FILE), "w") as f:
    json.dump(build, f, indent=2)


def _differences(base: Dict[str, Any], build: Dict[str, Any]) -> List[str]:
  found = [f"{key} {base.get(key)!r} -> {build[key]!r}" for key in ("scorers", "width",
                                                                     "cross_layers")
           if base.get(key) != build[key]]
  if base.get("features") != build["features"]:
    added = sorted(set(build["features"]) - set(base.get("features", [])))
    dropped = sorted(set(base.get("features", [])) - set(build["features"]))
    found.append(f"features differ (new: {added}, gone: {dropped}, or reordered)")
  return found


def load(base_dir: Optional[str], build: Dict[str, Any]
         ) -> Tuple[Optional[List[Weights]], Dict[str, Any]]:
  """Each member's starting weights from the base ranker at `base_dir`, or None (train cold),
  with the report of what was done and why."""
  if not base_dir:
    return None, {"warm": False, "reason": "no blessed ranker to start from"}
  state, described = os.path.join(base_dir, STATE_FILE), os.path.join(base_dir, BUILD_FILE)
  if not (tf.io.gfile.exists(state) and tf.io.gfile.exists(described)):
    return None, {"warm": False, "base": base_dir,
                  "reason": "the base ranker saved no warm-start state"}
  with tf.io.gfile.GFile(described) as f:
    differences = _differences(json.load(f), build)
  if differences:
    return None, {"warm": False, "base": base_dir,
                  "reason": "the scorers changed: " + "; ".join(differences)}
  with tf.io.gfile.GFile(state, "rb") as f:
    arrays = np.load(io.BytesIO(f.read()))
    members: List[Weights] = [[] for _ in build["scorers"]]
    for key in sorted(arrays.files, key=lambda k: tuple(map(int, k.split("/")))):
      member, _ = key.split("/")
      members[int(member)].append(arrays[key])
  return members, {"warm": True, "base": base_dir, "members": len(members)}
