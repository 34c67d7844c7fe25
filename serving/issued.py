"""What this server showed, per request id, so feedback can only be about a real impression.

Feedback names a request id, an item, its position and the A/B variant; without a record of what
was issued, anyone could invent a variant (and its click-through) or click an item that was
never shown. The record is built from the very impression rows the cascade logs, and rebuilt at
start from the recent impressions in the feedback log, so a restart does not refuse legitimate
feedback. It is bounded both by age and by the number of shown items (oldest requests go first).
"""
from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from pipeline.data import contract
from serving import limits
from serving.validation import CascadeError

# Propensities travel as float32 in the API: a client echoing one back differs by round-off.
_PROPENSITY_TOLERANCE = 1e-6


@dataclasses.dataclass
class IssuedRequest:
  user_id: str  # as logged (anonymous traffic has a per-request id)
  variant: str
  issued_at: float
  items: Dict[str, Tuple[int, float]] = dataclasses.field(default_factory=dict)  # position, p


class IssuedRequests:
  """Thread-safe, bounded map request id -> what was shown."""

  def __init__(self, max_age_s: float = limits.ISSUED_MAX_AGE_S,
               max_items: int = limits.ISSUED_MAX_ITEMS):
    self._max_age_s = max_age_s
    self._max_items = max_items
    self._requests: "collections.OrderedDict[str, IssuedRequest]" = collections.OrderedDict()
    self._items = 0
    self._lock = threading.Lock()

  def __len__(self) -> int:
    with self._lock:
      return len(self._requests)

  def record(self, rows: Iterable[Mapping[str, Any]], new_request: bool = True) -> None:
    """Remembers impression rows (one request's, as the cascade logs them). A new request whose
    id was already issued is refused (ALREADY_EXISTS): two requests would share one log key."""
    rows = [r for r in rows if r["event"] == contract.IMPRESSION]
    if not rows:
      return
    request_id = rows[0]["request_id"]
    with self._lock:
      self._expire(time.time())
      entry = self._requests.get(request_id)
      if entry is not None and new_request:
        raise CascadeError("ALREADY_EXISTS", f"request_id {request_id!r} was already issued; "
                                             f"leave it empty to get a fresh one")
      if entry is None:
        entry = IssuedRequest(rows[0]["user_id"], rows[0]["variant"],
                              float(rows[0].get("timestamp") or time.time()))
        self._requests[request_id] = entry
      for row in rows:
        if row["item_id"] not in entry.items:
          self._items += 1
        entry.items[row["item_id"]] = (int(row["position"]), float(row["propensity"]))
      while self._items > self._max_items and len(self._requests) > 1:
        self._pop_oldest()

  def _pop_oldest(self) -> None:
    _, oldest = self._requests.popitem(last=False)
    self._items -= len(oldest.items)

  def _expire(self, now: float) -> None:
    while self._requests and next(iter(self._requests.values())).issued_at < now - self._max_age_s:
      self._pop_oldest()

  def check(self, request_id: str, item_id: str, position: int, propensity: float,
            variant: str, user_id: str) -> Tuple[IssuedRequest, int, float]:
    """The issued request, and the shown item's position and propensity, if the feedback's
    fields match what was shown (0 / "" mean 'as shown'); else the field at fault is named."""
    with self._lock:
      self._expire(time.time())
      issued = self._requests.get(request_id)
    if issued is None:
      raise CascadeError("NOT_FOUND", f"request_id {request_id!r} was not issued by this server "
                                      f"(or is older than {self._max_age_s:.0f} s, or past the "
                                      f"last {self._max_items} shown items)")
    shown: Optional[Tuple[int, float]] = issued.items.get(item_id)
    if shown is None:
      raise CascadeError("INVALID_ARGUMENT", f"item_id {item_id!r} was not shown in request "
                                             f"{request_id!r}")
    if position and position != shown[0]:
      raise CascadeError("INVALID_ARGUMENT", f"position {position} does not match request "
                                             f"{request_id!r}: item {item_id!r} was shown at "
                                             f"{shown[0]}")
    if propensity and abs(propensity - shown[1]) > _PROPENSITY_TOLERANCE:
      raise CascadeError("INVALID_ARGUMENT", f"propensity {propensity} does not match request "
                                             f"{request_id!r}: item {item_id!r} was shown with "
                                             f"{shown[1]}")
    if variant and variant != issued.variant:
      raise CascadeError("INVALID_ARGUMENT", f"variant {variant!r} does not match request "
                                             f"{request_id!r}, served by variant "
                                             f"{issued.variant!r}")
    if user_id and user_id != issued.user_id:
      raise CascadeError("INVALID_ARGUMENT", f"user_id {user_id!r} does not match request "
                                             f"{request_id!r}")
    return issued, shown[0], shown[1]


def rebuilt(rows: Iterable[Mapping[str, Any]], **bounds: Any) -> IssuedRequests:
  """The record as it stood, from logged rows in the order they were written."""
  issued = IssuedRequests(**bounds)
  for row in rows:
    if row.get("request_id") and row["event"] == contract.IMPRESSION and row.get("position"):
      issued.record([row], new_request=False)
  return issued
