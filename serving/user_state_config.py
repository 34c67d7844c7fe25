"""Which online user-state store serves, with which bounds: the flags `serving.serve` takes, and
the store they open. Defaults are `serving/limits.py`'s.

The stores' modules (TensorFlow comes with them) are imported inside the functions that need
them, so that `serving.serve` adds these flags and answers --help without loading them."""
from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from serving import limits

if TYPE_CHECKING:
  from serving.user_state import Bounds, UserStateStore

EMBEDDED, REDIS = "embedded", "redis"


def _bounds(*sizes: int) -> Bounds:
  """`Bounds(*sizes)`, whose module loads on the first call."""
  from serving.user_state import Bounds
  return Bounds(*sizes)


@dataclasses.dataclass(frozen=True)
class UserStateConfig:
  store: str = EMBEDDED
  bounds: Bounds = dataclasses.field(default_factory=_bounds)
  demote_after: int = limits.DEMOTE_AFTER_IMPRESSIONS  # the cascade's rule; 0: never
  max_users: int = limits.EMBEDDED_MAX_USERS  # embedded only
  redis_url: str = limits.REDIS_URL
  redis_ttl_s: int = limits.REDIS_TTL_S
  redis_timeout_s: float = limits.REDIS_TIMEOUT_S
  redis_retry_s: float = limits.REDIS_RETRY_S

  @classmethod
  def from_flags(cls, args: argparse.Namespace) -> "UserStateConfig":
    return cls(args.user_store, _bounds(args.user_history_items, args.user_impressions),
               args.demote_after_impressions, args.embedded_max_users, args.redis_url,
               args.redis_ttl_s, args.redis_timeout_s, args.redis_retry_s)

  def open(self, data_root: str) -> UserStateStore:
    """The store, filled from the data root (read after the feedback log's start-up recovery,
    so every acknowledged row is in it)."""
    from serving.redis_state import RedisUserState
    from serving.user_state import EmbeddedUserState, Profiles, recent_events
    profiles = Profiles(data_root)
    if self.store == EMBEDDED:
      return EmbeddedUserState(data_root, profiles, self.bounds, self.max_users)
    if self.store == REDIS:
      return RedisUserState(self.redis_url, profiles, recent_events(data_root, self.bounds),
                            self.bounds, ttl_s=self.redis_ttl_s, timeout_s=self.redis_timeout_s,
                            retry_s=self.redis_retry_s)
    raise ValueError(f"user store must be {EMBEDDED!r} or {REDIS!r}, got {self.store!r}")


def add_user_state_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--user_store", choices=(EMBEDDED, REDIS), default=EMBEDDED,
                      help="where the online user state lives: in this process (one server), "
                           "or Redis (replicas sharing it; see README)")
  parser.add_argument("--user_history_items", type=int, default=limits.USER_HISTORY_ITEMS,
                      help="positive items kept per user")
  parser.add_argument("--user_impressions", type=int, default=limits.USER_IMPRESSIONS,
                      help="shown items kept per user")
  parser.add_argument("--demote_after_impressions", type=int,
                      default=limits.DEMOTE_AFTER_IMPRESSIONS,
                      help="an item shown this often and never clicked goes after the others "
                           "(0: never)")
  parser.add_argument("--embedded_max_users", type=int, default=limits.EMBEDDED_MAX_USERS,
                      help="users the embedded store holds; the least recently used go first")
  parser.add_argument("--redis_url", default=limits.REDIS_URL,
                      help="redis://host:port/db (rediss:// for TLS; a password goes in the URL)")
  parser.add_argument("--redis_ttl_s", type=int, default=limits.REDIS_TTL_S,
                      help="a user's keys expire this long after their last write")
  parser.add_argument("--redis_timeout_s", type=float, default=limits.REDIS_TIMEOUT_S,
                      help="connect and socket timeout of every Redis call")
  parser.add_argument("--redis_retry_s", type=float, default=limits.REDIS_RETRY_S,
                      help="after a Redis failure, no call for this long")
