"""Every bound the serving stack puts on what a client sends, in one place (README's Serving
section lists them). A request past one is refused with a message naming the field, before any
of it reaches a model or the feedback log: memory and disk never grow with what a client sends.
"""
from __future__ import annotations

from transform import features as F

# --- Cascade API fields (gRPC and HTTP alike) --------------------------------------------
MAX_K = 50  # items per answer; also the largest position feedback can name
MAX_ID_CHARS = 128  # user_id, every item id (request history, feedback item_id)
MAX_REQUEST_ID_CHARS = 64  # a client-chosen request_id (generated ones are 32 hex digits)
MAX_VARIANT_CHARS = 64
MAX_QUERY_CHARS = 256
MAX_HISTORY_ITEMS = 200
MAX_PROFILE_CHARS = 64  # gender, occupation
MAX_AGE = 130

# --- The record of issued requests that feedback is checked against -----------------------
# Bounded both ways: a request older than this, or pushed out by newer ones, gets NOT_FOUND.
ISSUED_MAX_AGE_S = 24 * 3600.0
ISSUED_MAX_ITEMS = 200_000  # shown items over all remembered requests (about 50 MB)
ISSUED_REBUILD_BYTES = 128 << 20  # at start, the newest feedback files up to this size are read

# --- HTTP/JSON gateway --------------------------------------------------------------------
MAX_BODY_BYTES = 64 << 10  # Content-Length above this: 413 before any byte is read
# A refused body up to this size is still read, and dropped, before the 413 is sent, so a client
# that sends its body before reading the answer gets the 413, not a connection reset. Larger (or
# with `Expect: 100-continue`): the 413 is sent at once and the connection closed.
MAX_DRAINED_BYTES = 16 << 20
MAX_HEADER_BYTES = 16 << 10  # a longer request head: the connection is closed
MAX_JSON_DEPTH = 8  # the deepest request (user.history) is 3
HEADER_TIMEOUT_S = 10.0  # the whole request head, and a keep-alive connection's idle time
BODY_TIMEOUT_S = 10.0
LISTEN_BACKLOG = 1024
MAX_CONCURRENT_HTTP = 64  # requests in progress; beyond: 429
HTTP_WORKERS = 16

# --- Cascade gRPC -------------------------------------------------------------------------
MAX_GRPC_MESSAGE_BYTES = 64 << 10  # larger: RESOURCE_EXHAUSTED from gRPC itself
MAX_CONCURRENT_RPCS = 64
GRPC_WORKERS = 16

# --- Online user state (serving/user_state.py, serving/redis_state.py) ---------------------
# Per user: the positive items kept (what a request carries: the item-to-item source and the
# ranker read all of them, the two-tower the latest F.HISTORY_LENGTH) and the shown items kept,
# most recent first (about the last 10 answers).
USER_HISTORY_ITEMS = F.MAX_HISTORY
USER_IMPRESSIONS = 100
# An item shown this many times among those impressions, and not in the history, goes after
# the others in the next answer (0: never).
DEMOTE_AFTER_IMPRESSIONS = 5
# Users the embedded store holds (least recently used go first): about 1 GB at MovieLens users'
# 18 KB each (105 items, 100 impressions), 2 GB if every one had the full 500 and 100.
EMBEDDED_MAX_USERS = 50_000
REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_KEY_PREFIX = "recsys:user:"
REDIS_TTL_S = 30 * 24 * 3600  # a user's keys expire this long after their last write
REDIS_TIMEOUT_S = 0.05  # connect and socket timeout, far below the cascade's 2 s stage deadline
REDIS_RETRY_S = 5.0  # after a failure no Redis call for this long: a dead Redis costs nothing
REDIS_MAX_CONNECTIONS = GRPC_WORKERS + HTTP_WORKERS  # one per thread that can call it
