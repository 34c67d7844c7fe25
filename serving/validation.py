"""Field checks for the cascade's API requests, run before anything reaches a model or the log.

Every check names the field at fault (INVALID_ARGUMENT), so a client can fix its request from
the message alone. The bounds are `serving/limits.py`'s.
"""
from __future__ import annotations

import math
import re

from serving import limits
from serving.protos import recommender_pb2 as pb

# C0 and C1 control characters and DEL: never part of an id, and they corrupt logs and terminals.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class CascadeError(Exception):
  """A request the cascade refuses or cannot answer; `code` is a grpc.StatusCode name."""

  def __init__(self, code: str, message: str):
    super().__init__(message)
    self.code = code


def require(condition: bool, message: str) -> None:
  if not condition:
    raise CascadeError("INVALID_ARGUMENT", message)


def check_text(value: str, field: str, max_chars: int) -> None:
  """A bounded string without control characters (empty is allowed: proto3's 'not given')."""
  require(len(value) <= max_chars, f"{field} is longer than {max_chars} characters "
                                   f"({len(value)})")
  require(not _CONTROL.search(value), f"{field} contains control characters")


def validate_user(user: pb.UserContext, required: bool) -> None:
  require(not required or bool(user.user_id.strip()), "user.user_id is required")
  check_text(user.user_id, "user.user_id", limits.MAX_ID_CHARS)
  require(len(user.history) <= limits.MAX_HISTORY_ITEMS,
          f"user.history has more than {limits.MAX_HISTORY_ITEMS} items ({len(user.history)})")
  for index, item in enumerate(user.history):
    check_text(item, f"user.history[{index}]", limits.MAX_ID_CHARS)
  require(0 <= user.age <= limits.MAX_AGE, f"user.age {user.age} is outside 0..{limits.MAX_AGE}")
  check_text(user.gender, "user.gender", limits.MAX_PROFILE_CHARS)
  check_text(user.occupation, "user.occupation", limits.MAX_PROFILE_CHARS)


def validate_k(k: int) -> None:
  require(1 <= k <= limits.MAX_K, f"k must be between 1 and {limits.MAX_K}, got {k}")


def validate_request_id(request_id: str) -> None:
  check_text(request_id, "request_id", limits.MAX_REQUEST_ID_CHARS)


def validate_query(query: str) -> None:
  require(len(query) <= limits.MAX_QUERY_CHARS,
          f"query is longer than {limits.MAX_QUERY_CHARS} characters ({len(query)})")
  require(bool(query.strip()), "query is empty")
  require(not _CONTROL.search(query), "query contains control characters")


def validate_feedback_fields(request: pb.FeedbackRequest) -> None:
  """The fields' own bounds; whether they match an issued request is `IssuedRequests`' job."""
  require(bool(request.request_id), "request_id is required")
  validate_request_id(request.request_id)
  check_text(request.user_id, "user_id", limits.MAX_ID_CHARS)
  require(bool(request.item_id), "item_id is required")
  check_text(request.item_id, "item_id", limits.MAX_ID_CHARS)
  check_text(request.variant, "variant", limits.MAX_VARIANT_CHARS)
  check_text(request.event, "event", limits.MAX_ID_CHARS)
  require(0 <= request.position <= limits.MAX_K,
          f"position must be within 0..{limits.MAX_K} (0 = as shown), got {request.position}")
  require(math.isfinite(request.propensity) and 0.0 <= request.propensity <= 1.0,
          f"propensity must be within [0, 1], got {request.propensity}")
  require(math.isfinite(request.rating), f"rating must be a finite number, got {request.rating}")
