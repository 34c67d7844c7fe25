"""The Open Bandit Dataset sample shipped in the obp wheel, as LoggedFeedback.

10,000 rows logged by a uniform-random policy over 80 fashion items in 3 positions (propensity
1/80 per position), 38 clicks. obp's own loader reads it (offline, from the wheel). Context: obp's
one-hot user features. Arm features: the item's one-hot categories, its standardised numeric
feature, and the user-item affinity (a user-dependent score, the analogue of our retrieval score).
"""
from __future__ import annotations

import importlib.util
import pathlib
from typing import Tuple

import numpy as np
import pandas as pd

from agents.features import arm_features
from agents.logged import LoggedFeedback
from agents.validation import BINARY, REJECT, ValidationReport, validate_rows


def open_bandit_dir() -> pathlib.Path:
  """The `obd` folder inside the installed obp package."""
  spec = importlib.util.find_spec("obp")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the Open Bandit sample comes from the obp wheel; install obp==0.4.1")
  return pathlib.Path(list(spec.submodule_search_locations)[0]) / "dataset" / "obd"


def _item_vectors(item_context: pd.DataFrame) -> np.ndarray:
  """[n_items, d]: one-hot categorical item features and the standardised numeric one."""
  categorical = pd.get_dummies(item_context[["item_feature_1", "item_feature_2",
                                             "item_feature_3"]].astype(str)).to_numpy(float)
  numeric = item_context["item_feature_0"].to_numpy(float)
  numeric = (numeric - numeric.mean()) / (numeric.std() or 1.0)
  return np.concatenate([categorical, numeric[:, np.newaxis]], axis=1)


def load_open_bandit(behavior_policy: str = "random", campaign: str = "all",
                     invalid_rows: str = REJECT) -> Tuple[LoggedFeedback, ValidationReport]:
  """Every row is one request whose candidates are all items; rows are in time order."""
  from obp.dataset import OpenBanditDataset  # imports torch; only loaded when OBD is used
  dataset = OpenBanditDataset(behavior_policy=behavior_policy, campaign=campaign,
                              data_path=open_bandit_dir())
  item_context = dataset.item_context.sort_values("item_id").reset_index(drop=True)
  item_ids = item_context["item_id"].to_numpy()
  n_items = len(item_ids)
  keep, report = validate_rows(
      dataset.pscore, dataset.reward, np.isin(dataset.action, item_ids), dataset.position,
      reward_kind=BINARY, policy=invalid_rows)
  frame = dataset.data.iloc[keep]
  affinity = frame[[f"user-item_affinity_{i}" for i in item_ids]].to_numpy(float)
  n = len(frame)
  vectors = _item_vectors(item_context)
  return LoggedFeedback(
      contexts=dataset.context[keep].astype(np.float32),
      arm_features=arm_features(np.broadcast_to(vectors, (n,) + vectors.shape),
                                scores=affinity[:, :, np.newaxis]),
      candidate_ids=np.broadcast_to(item_ids.astype(str), (n, n_items)),
      num_candidates=np.full(n, n_items, np.int32),
      request=np.arange(n),
      shown=np.searchsorted(item_ids, dataset.action[keep]),
      position=dataset.position[keep].astype(int),
      reward=dataset.reward[keep].astype(np.float32),
      propensity=dataset.pscore[keep].astype(float),
      timestamp=pd.to_datetime(frame["timestamp"]).astype("int64").to_numpy() // 10**9,
  ), report
