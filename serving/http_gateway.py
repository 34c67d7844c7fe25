"""The cascade's HTTP/JSON gateway: POST /v1/recommend, /v1/search, /v1/feedback with the gRPC
messages as JSON (proto3 JSON mapping; unknown fields are refused).

Served by Tornado's HTTP server (asyncio; maintained, and already in the pinned stack) instead of
`http.server`, for what a server facing clients needs: a real listen backlog, a deadline for the
whole request head (a client trickling header bytes is cut off after HEADER_TIMEOUT_S and never
holds a thread), a deadline for the body, keep-alive, and one event-loop thread for every
connection; the cascade's blocking calls run on a bounded thread pool.

Checked before a body byte is read: the route (404), the method (405), `Content-Type:
application/json` (415), a Content-Length (411) of at most MAX_BODY_BYTES (413; a chunked body
is counted as it arrives). A refused body is never kept: up to MAX_DRAINED_BYTES it is read and
dropped before the answer (so the client, still sending, reads the 413 instead of a reset),
beyond that the answer goes at once and the connection closes. Then the body must be UTF-8
JSON, an object, nested at most MAX_JSON_DEPTH deep, holding only the message's fields (400).
Every answer is JSON; an error is `{"error": message, "code": gRPC status name}` with the HTTP
status of Google's mapping.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from concurrent import futures
from typing import Callable, Dict, Optional, Tuple, Type

from google.protobuf import json_format
from google.protobuf.message import Message
from tornado import httpserver, netutil, web

from serving import limits
from serving.bind import LOOPBACK
from serving.cascade import Cascade
from serving.protos import recommender_pb2 as pb
from serving.validation import CascadeError

log = logging.getLogger(__name__)
# gRPC status -> HTTP status (google.rpc.Code's documented mapping).
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
               "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
               "ALREADY_EXISTS": 409, "RESOURCE_EXHAUSTED": 429, "INTERNAL": 500,
               "UNIMPLEMENTED": 501, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")
_MAX_MESSAGE_CHARS = 500  # an error echoing a client's 60 KB value stays readable
Route = Tuple[Type[Message], Callable[[Message], Message]]


class HttpError(Exception):
  """A refusal: HTTP status, gRPC status name, message."""

  def __init__(self, status: int, code: str, message: str):
    super().__init__(message)
    self.status, self.code = status, code


def _bad_request(message: str) -> HttpError:
  return HttpError(400, "INVALID_ARGUMENT", message)


def json_depth(text: str) -> int:
  """How deep arrays and objects nest (brackets inside strings do not count); checked before
  json.loads, which recurses once per level and fails with RecursionError near 1,000."""
  depth = deepest = 0
  for bracket in _BRACKETS.findall(_STRINGS.sub('""', text)):
    depth += 1 if bracket in "[{" else -1
    deepest = max(deepest, depth)
  return deepest


def parse_message(body: bytes, message_type: Type[Message]) -> Message:
  """A request body as the API message, or HttpError(400) saying what is wrong with it."""
  name = message_type.DESCRIPTOR.name
  try:
    text = body.decode("utf-8")
  except UnicodeDecodeError as error:
    raise _bad_request(f"body is not UTF-8 ({error.reason} at byte {error.start})") from None
  if not text.strip():
    raise _bad_request(f"body is empty; send a JSON object ({name})")
  depth = json_depth(text)
  if depth > limits.MAX_JSON_DEPTH:
    raise _bad_request(f"body nests {depth} levels deep; at most {limits.MAX_JSON_DEPTH}")
  try:
    value = json.loads(text)
  except ValueError as error:
    raise _bad_request(f"body is not valid JSON: {error}") from None
  if not isinstance(value, dict):
    raise _bad_request(f"body must be a JSON object ({name}), got {type(value).__name__}: "
                       f"{text[:40]!r}")
  try:
    return json_format.ParseDict(value, message_type())
  except json_format.ParseError as error:
    raise _bad_request(f"malformed {name}: {error}") from None


def _routes(cascade: Cascade) -> Dict[str, Route]:
  return {"/v1/recommend": (pb.RecommendRequest, cascade.recommend),
          "/v1/search": (pb.SearchRequest, cascade.search),
          "/v1/feedback": (pb.FeedbackRequest, cascade.feedback)}


@web.stream_request_body
class _ApiHandler(web.RequestHandler):
  """One handler for every path, so every request gets the checks and JSON errors."""

  def initialize(self, gateway: "HttpGateway") -> None:  # pylint: disable=arguments-differ
    self._gateway = gateway
    self._route: Optional[Route] = None
    self._body = bytearray()
    self._received = 0
    self._refusal: Optional[HttpError] = None  # sent once the (dropped) body is read

  def _reply(self, status: int, body: Dict) -> None:
    self.set_status(status)
    self.set_header("Content-Type", "application/json")
    self.finish(json.dumps(body))

  def _refuse(self, error: HttpError) -> None:
    message = str(error)
    if len(message) > _MAX_MESSAGE_CHARS:
      message = message[:_MAX_MESSAGE_CHARS] + "..."
    if error.status >= 500:
      self.set_header("Retry-After", "1")
    self._reply(error.status, {"error": message, "code": error.code})

  def _check_head(self, chunked: bool, length: Optional[str]) -> None:
    request = self.request
    routes = self._gateway.routes
    if request.path not in routes:
      raise HttpError(404, "NOT_FOUND", f"no route {request.path[:100]!r}; routes: "
                                        f"{sorted(routes)}")
    if request.method != "POST":
      self.set_header("Allow", "POST")
      raise HttpError(405, "UNIMPLEMENTED", f"{request.path} takes POST, not {request.method}")
    content_type = request.headers.get("Content-Type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
      raise HttpError(415, "INVALID_ARGUMENT", f"Content-Type must be application/json, got "
                                               f"{content_type[:100]!r}")
    if chunked:
      return  # counted in data_received
    if length is None:
      raise HttpError(411, "INVALID_ARGUMENT", "Content-Length is required")
    if not length.isdigit():
      raise _bad_request(f"Content-Length {length[:40]!r} is not a number of bytes")
    if int(length) > limits.MAX_BODY_BYTES:
      raise HttpError(413, "INVALID_ARGUMENT", f"body of {length} bytes is larger than the "
                                               f"limit of {limits.MAX_BODY_BYTES}")

  def prepare(self) -> None:
    """Decides on the head alone; a refusal waits for the body to be dropped when that is
    cheap (the connection then stays open), else it is sent now and the connection closed."""
    headers = self.request.headers
    chunked = headers.get("Transfer-Encoding", "").lower() == "chunked"
    length = headers.get("Content-Length")
    if chunked:  # counted in data_received, so a refusal is this handler's JSON 413
      self.request.connection.set_max_body_size(1 << 62)
    elif length and length.isdigit() and int(length) > limits.MAX_BODY_BYTES:
      self.request.connection.set_max_body_size(int(length))  # no error of the connection's
    try:
      self._check_head(chunked, length)
    except HttpError as error:
      drainable = "100-continue" not in headers.get("Expect", "").lower() and (
          chunked or (length or "0").isdigit() and int(length or "0") <= limits.MAX_DRAINED_BYTES)
      if drainable:
        self._refusal = error
      else:
        self.set_header("Connection", "close")
        self._refuse(error)
      return
    self._route = self._gateway.routes[self.request.path]

  def data_received(self, chunk: bytes) -> None:
    self._received += len(chunk)
    if self._finished:  # refused already; the connection closes after the answer
      return
    if self._received > limits.MAX_BODY_BYTES and self._refusal is None:
      self._refusal = HttpError(413, "INVALID_ARGUMENT", f"body is larger than the limit of "
                                                         f"{limits.MAX_BODY_BYTES} bytes")
      self._body = bytearray()
    if self._refusal is not None:
      if self._received > limits.MAX_DRAINED_BYTES:
        self.set_header("Connection", "close")
        self._refuse(self._refusal)
      return  # dropped
    self._body += chunk

  async def post(self) -> None:
    if self._refusal is not None:
      return self._refuse(self._refusal)
    message_type, method = self._route
    try:
      request = parse_message(bytes(self._body), message_type)
      response = await self._gateway.call(method, request)
    except HttpError as error:
      return self._refuse(error)
    self._reply(200, json_format.MessageToDict(response, preserving_proto_field_name=True))

  # Every method ends here once its body is read: prepare() has refused all but POST.
  get = head = put = patch = delete = options = post

  def write_error(self, status_code: int, **kwargs) -> None:
    self._reply(status_code, {"error": self._reason, "code": "INTERNAL" if status_code >= 500
                              else "INVALID_ARGUMENT"})


class HttpGateway:
  """The HTTP server on its own event-loop thread; `start()` / `stop()`."""

  def __init__(self, cascade: Cascade, host: str = LOOPBACK, port: int = 0,
               header_timeout_s: float = limits.HEADER_TIMEOUT_S,
               body_timeout_s: float = limits.BODY_TIMEOUT_S,
               max_concurrent: int = limits.MAX_CONCURRENT_HTTP,
               workers: int = limits.HTTP_WORKERS):
    self.routes = _routes(cascade)
    self._sockets = netutil.bind_sockets(port, host, backlog=limits.LISTEN_BACKLOG)
    self.host, self.port = host, self._sockets[0].getsockname()[1]
    self._settings = dict(idle_connection_timeout=header_timeout_s,
                          body_timeout=body_timeout_s, max_header_size=limits.MAX_HEADER_BYTES,
                          max_body_size=limits.MAX_BODY_BYTES)
    self._max_concurrent = max_concurrent
    self._in_flight = 0  # touched only on the event-loop thread
    self._pool = futures.ThreadPoolExecutor(workers, thread_name_prefix="http-cascade")
    self._loop = asyncio.new_event_loop()
    self._server: Optional[httpserver.HTTPServer] = None
    self._ready = threading.Event()
    self._thread = threading.Thread(target=self._run, name="http-gateway", daemon=True)

  async def call(self, method: Callable[[Message], Message], request: Message) -> Message:
    """Runs a cascade method on the pool; beyond max_concurrent in progress: 429."""
    if self._in_flight >= self._max_concurrent:
      raise HttpError(429, "RESOURCE_EXHAUSTED", f"more than {self._max_concurrent} requests "
                                                 f"in progress; retry")
    self._in_flight += 1
    try:
      return await self._loop.run_in_executor(self._pool, method, request)
    except CascadeError as error:
      raise HttpError(HTTP_STATUS.get(error.code, 500), error.code, str(error)) from None
    except Exception as error:  # pylint: disable=broad-except
      log.exception("unexpected error")
      raise HttpError(500, "INTERNAL", f"{type(error).__name__}: {error}") from None
    finally:
      self._in_flight -= 1

  def _run(self) -> None:
    asyncio.set_event_loop(self._loop)
    application = web.Application([(r".*", _ApiHandler, {"gateway": self})],
                                  log_function=lambda handler: log.debug(
                                      "%d %s %s", handler.get_status(), handler.request.method,
                                      handler.request.path[:100]))
    self._server = httpserver.HTTPServer(application, **self._settings)
    self._server.add_sockets(self._sockets)
    self._ready.set()
    self._loop.run_forever()

  def start(self) -> "HttpGateway":
    self._thread.start()
    self._ready.wait()
    return self

  def stop(self) -> None:
    async def shutdown() -> None:
      self._server.stop()
      await self._server.close_all_connections()

    if self._thread.is_alive():
      asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
      self._loop.call_soon_threadsafe(self._loop.stop)
      self._thread.join()
    self._loop.close()
    self._pool.shutdown(wait=True)
