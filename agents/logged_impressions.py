"""Real logged feedback from a data root: the serving feedback log's impressions and clicks.

The serving side writes every shown item as an `impression` row (request_id, position, 1-based,
propensity, variant) and a click as a positive event with the same request_id. A shown item's
reward is 1 when its request has a positive event for that item, else 0. The context is rebuilt as
it was at serving time: the user's profile (users table) and their positive events before the
request (most recent first). Positive events that carry a request_id but match no impression
cannot be attributed to a shown item; they are ignored and counted in the report, never dropped
silently.
"""
from __future__ import annotations

import bisect
import dataclasses
from typing import Dict, Iterable, List, Mapping, Tuple

import numpy as np

from agents.logged import LoggedFeedback
from agents.retrieval_features import Request, RetrievalFeaturizer
from agents.validation import BINARY, LogValidationError, ValidationReport, validate_rows
from pipeline.data import contract
from pipeline.data.parsing import read_table
from transform import features as F


def has_impressions(interactions: Iterable[Mapping[str, object]]) -> bool:
  return any(row["event"] == contract.IMPRESSION for row in interactions)


@dataclasses.dataclass(frozen=True)
class Feedback:
  data: LoggedFeedback
  validation: ValidationReport
  unmatched_positive_events: int  # positive events with a request_id that no impression has


def _histories(interactions: Iterable[Mapping[str, object]]
               ) -> Dict[str, Tuple[List[int], List[str]]]:
  """user -> (times, items) of positive events in time order, for history lookups."""
  events: Dict[str, List[Tuple[int, str]]] = {}
  for row in interactions:
    if row["event"] in contract.POSITIVE_EVENT_TYPES:
      events.setdefault(row["user_id"], []).append((row["timestamp"], row["item_id"]))
  return {user: ([t for t, _ in sorted(rows)], [i for _, i in sorted(rows)])
          for user, rows in events.items()}


def load_feedback(data_root: str, interactions: List[Dict[str, object]],
                  featurizer: RetrievalFeaturizer, max_candidates: int, invalid_rows: str
                  ) -> Feedback:
  """LoggedFeedback from the impression rows of `interactions` (already read from data_root)."""
  impressions = [row for row in interactions if row["event"] == contract.IMPRESSION]
  clicked = {(row["request_id"], row["item_id"]) for row in interactions
             if row["event"] in contract.POSITIVE_EVENT_TYPES and row["request_id"]}
  shown_keys = {(row["request_id"], row["item_id"]) for row in impressions}
  nan = float("nan")
  keep, report = validate_rows(
      propensity=[nan if r["propensity"] is None else r["propensity"] for r in impressions],
      reward=[float((r["request_id"], r["item_id"]) in clicked) for r in impressions],
      item_known=[r["item_id"] in featurizer.item_index for r in impressions],
      position=[nan if r["position"] is None else r["position"] - 1 for r in impressions],
      reward_kind=BINARY, policy=invalid_rows,
      extra_checks={"request_id: missing": np.array([not r["request_id"] for r in impressions])})
  kept = [row for row, ok in zip(impressions, keep) if ok]
  if not kept:
    raise LogValidationError(f"no usable impression rows in {data_root}: {report.summary()}")

  users = {row["user_id"]: row for row in read_table(data_root, contract.USERS)}
  histories = _histories(interactions)
  by_request: Dict[str, List[Dict[str, object]]] = {}
  for row in kept:
    by_request.setdefault(row["request_id"], []).append(row)
  request_ids = sorted(by_request, key=lambda r: (min(x["timestamp"] for x in by_request[r]), r))
  requests = []
  for request_id in request_ids:
    first = by_request[request_id][0]
    user = users.get(first["user_id"], {})
    times, items = histories.get(first["user_id"], ([], []))
    before = bisect.bisect_left(times, first["timestamp"])
    requests.append(Request(first["user_id"], items[max(0, before - F.HISTORY_LENGTH):before][::-1],
                            user.get("age") or 0, user.get("gender") or "",
                            user.get("occupation") or "", first["timestamp"]))
  sets = featurizer.candidate_sets(
      requests, max_candidates, [[row["item_id"] for row in by_request[r]] for r in request_ids])
  columns = [{item: j for j, item in enumerate(ids)} for ids in sets.candidate_ids]
  rows = [(i, row) for i, request_id in enumerate(request_ids) for row in by_request[request_id]]
  return Feedback(
      LoggedFeedback(
          contexts=sets.contexts, arm_features=sets.arm_features,
          candidate_ids=sets.candidate_ids, num_candidates=sets.num_candidates,
          request=np.array([i for i, _ in rows], int),
          shown=np.array([columns[i][row["item_id"]] for i, row in rows], int),
          position=np.array([row["position"] - 1 for _, row in rows], int),
          reward=np.array([float((row["request_id"], row["item_id"]) in clicked)
                           for _, row in rows], np.float32),
          propensity=np.array([row["propensity"] for _, row in rows], float),
          timestamp=np.array([r.timestamp for r in requests], np.int64)),
      report, len(clicked - shown_keys))
