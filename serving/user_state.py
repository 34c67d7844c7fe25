"""The online user state: what the cascade reads for each request and feedback updates at once.

Per user: the profile, the recent positive items (most recent first, each once, bounded), the
recent impressions (bounded; one per shown slot, so an item shown again and again without a
click can be demoted) and the last-seen time. One small interface, `UserStateStore`, two
implementations: `EmbeddedUserState` here (in this process) and `RedisUserState`
(`serving/redis_state.py`: shared by every replica, kept across their restarts).

Both start from the data root, whose interactions hold every feedback row this stack
acknowledged (`FeedbackLog.append` fsyncs before the Feedback RPC returns, and the next start
hands a dead writer's file over before the store reads), so online and offline see the same
events and a restart loses nothing acknowledged. Both keep entries by one rule (`keep_latest`:
each key's latest time, the newest N by (time, key)), so equal times (whole seconds, as the log
has them) break ties alike in either store, before and after a restart, and replaying the log
again adds nothing (an impression is keyed by its request id and position, `impression_key`).
Profiles are the data root's users table, held in this process by both stores: what an answer
falls back to when a store cannot answer.
"""
from __future__ import annotations

import abc
import collections
import dataclasses
import sys
import threading
from typing import Dict, List, Mapping, Sequence, Set, Tuple

from pipeline.data import contract
from pipeline.data.parsing import read_table
from serving import limits
from serving.context_store import TimedItem
from serving.feedback_log import anonymous


class Profiles:
  """The users table (user id -> row), read once at start."""

  def __init__(self, data_root: str):
    self._rows: Dict[str, Mapping[str, object]] = {
        row["user_id"]: row for row in read_table(data_root, contract.USERS)}

  def get(self, user_id: str) -> Mapping[str, object]:
    return self._rows.get(user_id, {})

  def ids(self) -> List[str]:
    return sorted(self._rows)


@dataclasses.dataclass(frozen=True)
class UserState:
  """One user as the store knows them at request time."""
  profile: Mapping[str, object]
  history: Tuple[TimedItem, ...] = ()  # positive items, most recent first, each once
  impressions: Tuple[str, ...] = ()  # the item of each shown slot, most recent first
  last_seen: int = 0  # unix seconds of the latest event the store holds; 0: none
  available: bool = True  # False: the store did not answer; this is the profile alone

  @property
  def known(self) -> bool:
    """Whether the answer can be personal: a profile or a positive event (shown-only users
    still get the cold-start answer)."""
    return bool(self.profile) or bool(self.history)

  def tired(self, after: int) -> Set[str]:
    """Items shown at least `after` times among the recent impressions and not in the recent
    history (never clicked, as far as the store remembers); none when `after` is 0."""
    if after <= 0:
      return set()
    clicked = {item for item, _ in self.history}
    return {item for item, shown in collections.Counter(self.impressions).items()
            if shown >= after and item not in clicked}


@dataclasses.dataclass(frozen=True)
class Bounds:
  """What a store keeps per user."""
  history: int = limits.USER_HISTORY_ITEMS
  impressions: int = limits.USER_IMPRESSIONS

  def __post_init__(self):
    if self.history < 1 or self.impressions < 0:
      raise ValueError(f"a store keeps at least 1 history item and 0 or more impressions per "
                       f"user, got {self.history} and {self.impressions}")


class UserStateStore(abc.ABC):
  """Reads and updates of the online user state. A store that cannot answer never raises: a
  read gives the profile alone (`available` False), a write returns False (the feedback log
  still has the event, so the next pipeline run learns it)."""
  where = "embedded"  # what serve's ready line names: the store and where it lives

  @abc.abstractmethod
  def state(self, user_id: str) -> UserState:
    """The user's state, in one round trip to wherever it lives."""

  @abc.abstractmethod
  def record_positive(self, user_id: str, item_id: str, timestamp: int) -> bool:
    """A positive event (click, purchase, ...): the item is in the next state's history."""

  @abc.abstractmethod
  def record_impressions(self, user_id: str, request_id: str, item_ids: Sequence[str],
                         timestamp: int) -> bool:
    """One answer's shown items, at positions 1, 2, ..."""

  @abc.abstractmethod
  def counters(self) -> Dict[str, int]:
    """What the store counted (users held, evictions, failures...), for logs and benchmarks."""

  def close(self) -> None:
    """Releases connections and threads (nothing to release by default)."""


def keep_latest(entries: Dict[str, int], key: str, timestamp: int, length: int) -> None:
  """Adds an event to key -> latest time, then drops the oldest (time, key) past `length`:
  what Redis' ZADD GT + ZREMRANGEBYRANK do to a sorted set, so both stores agree."""
  entries[key] = max(entries.get(key, timestamp), timestamp)
  if len(entries) > length:
    del entries[min(entries.items(), key=lambda kv: (kv[1], kv[0]))[0]]


def newest_first(entries: Mapping[str, int]) -> List[Tuple[str, int]]:
  return sorted(entries.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)


def impression_key(request_id: str, position: int, item_id: str, timestamp: int) -> str:
  """One shown slot: unique in the log (a request shows an item once, at one position), so the
  log replayed twice counts it once. Ids never hold control characters (they are validated),
  so a tab separates; a row without a request id is keyed by its time."""
  return f"{request_id or f'@{timestamp}'}\t{position}\t{item_id}"


def shown_item(key: str) -> str:
  return key.split("\t", 2)[2]


@dataclasses.dataclass
class RecentEvents:
  """One user's events kept from the data root."""
  history: Dict[str, int] = dataclasses.field(default_factory=dict)  # item -> latest time
  shown: Dict[str, int] = dataclasses.field(default_factory=dict)  # impression key -> time
  last_seen: int = 0


def recent_events(data_root: str, bounds: Bounds) -> Dict[str, RecentEvents]:
  """Each user's latest positive items and impressions in the data root's interactions (closed
  feedback files included), streamed row by row: memory grows with users x bounds (item ids
  interned: every user's copy of an item id is one string)."""
  users: Dict[str, RecentEvents] = collections.defaultdict(RecentEvents)
  for row in read_table(data_root, contract.INTERACTIONS):
    event, timestamp = row["event"], int(row["timestamp"])
    if event not in contract.POSITIVE_EVENT_TYPES and event != contract.IMPRESSION:
      continue
    if anonymous(row["user_id"], row.get("request_id") or ""):
      continue
    user = users[row["user_id"]]
    user.last_seen = max(user.last_seen, timestamp)
    if event != contract.IMPRESSION:
      keep_latest(user.history, sys.intern(row["item_id"]), timestamp, bounds.history)
    elif bounds.impressions:
      keep_latest(user.shown, impression_key(row.get("request_id") or "",
                                             int(row.get("position") or 0), row["item_id"],
                                             timestamp), timestamp, bounds.impressions)
  return users



class EmbeddedUserState(UserStateStore):
  """The default: the state in this process, rebuilt from the data root at every start.

  Holds at most `max_users` users; the least recently used (read or written) goes first, and
  is counted. An evicted user's state is gone until the next start (their profile stays), so
  size the cap above the active users, or use Redis. One process only: replicas behind a load
  balancer each see their own clicks; that is what `RedisUserState` is for."""

  def __init__(self, data_root: str, profiles: Profiles, bounds: Bounds = Bounds(),
               max_users: int = limits.EMBEDDED_MAX_USERS):
    if max_users < 1:
      raise ValueError(f"max_users must be at least 1, got {max_users}")
    self._profiles = profiles
    self._bounds = bounds
    self._max_users = max_users
    self._lock = threading.Lock()
    self._users: "collections.OrderedDict[str, RecentEvents]" = collections.OrderedDict()
    self._evicted = 0
    recent = recent_events(data_root, bounds)
    for user, events in sorted(recent.items(), key=lambda kv: (kv[1].last_seen, kv[0])):
      self._users[user] = events
      self._evict()

  def _evict(self) -> None:
    while len(self._users) > self._max_users:
      self._users.popitem(last=False)
      self._evicted += 1

  def _entry(self, user_id: str) -> RecentEvents:
    """The user's entry, made the most recently used (created if new). Hold the lock."""
    entry = self._users.get(user_id)
    if entry is None:
      entry = self._users[user_id] = RecentEvents()
      self._evict()
    self._users.move_to_end(user_id)
    return entry

  def state(self, user_id: str) -> UserState:
    profile = self._profiles.get(user_id)
    with self._lock:
      entry = self._users.get(user_id)
      if entry is None:
        return UserState(profile)
      self._users.move_to_end(user_id)
      return UserState(profile, tuple(newest_first(entry.history)),
                       tuple(shown_item(key) for key, _ in newest_first(entry.shown)),
                       entry.last_seen)

  def record_positive(self, user_id: str, item_id: str, timestamp: int) -> bool:
    with self._lock:
      entry = self._entry(user_id)
      keep_latest(entry.history, sys.intern(item_id), timestamp, self._bounds.history)
      entry.last_seen = max(entry.last_seen, timestamp)
    return True

  def record_impressions(self, user_id: str, request_id: str, item_ids: Sequence[str],
                         timestamp: int) -> bool:
    with self._lock:
      entry = self._entry(user_id)
      if self._bounds.impressions:
        for position, item_id in enumerate(item_ids, start=1):
          keep_latest(entry.shown, impression_key(request_id, position, item_id, timestamp),
                      timestamp, self._bounds.impressions)
      entry.last_seen = max(entry.last_seen, timestamp)
    return True

  def counters(self) -> Dict[str, int]:
    with self._lock:
      return {"users": len(self._users), "evicted": self._evicted}
