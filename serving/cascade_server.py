"""The cascade's gRPC service (serving/protos/recommender.proto) and its HTTP/JSON gateway.

gRPC: recsys.serving.Recommender/{Recommend, Search, Feedback}. HTTP: POST /v1/recommend,
/v1/search, /v1/feedback with the same messages as JSON (proto3 JSON mapping; unknown fields
are rejected). Bad requests get INVALID_ARGUMENT (HTTP 400) naming the field; the server keeps
serving. Concurrency is bounded (gRPC's maximum_concurrent_rpcs; RESOURCE_EXHAUSTED beyond).
"""
from __future__ import annotations

import http.server
import json
import logging
import threading
from concurrent import futures
from typing import Callable, Dict, Tuple

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from serving.cascade import Cascade, CascadeError
from serving.protos import recommender_pb2 as pb
from serving.protos import recommender_pb2_grpc

log = logging.getLogger(__name__)
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "UNAVAILABLE": 503,
               "DEADLINE_EXCEEDED": 504, "INTERNAL": 500}


class RecommenderServicer(recommender_pb2_grpc.RecommenderServicer):
  """gRPC adapter: CascadeError -> status code; anything unexpected -> INTERNAL, logged."""

  def __init__(self, cascade: Cascade):
    self._cascade = cascade

  def _call(self, method: Callable[[Message], Message], request: Message,
            context: grpc.ServicerContext) -> Message:
    try:
      return method(request)
    except CascadeError as error:
      return context.abort(getattr(grpc.StatusCode, error.code), str(error))
    except Exception as error:  # pylint: disable=broad-except
      log.exception("unexpected error")
      return context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")

  def Recommend(self, request, context):
    return self._call(self._cascade.recommend, request, context)

  def Search(self, request, context):
    return self._call(self._cascade.search, request, context)

  def Feedback(self, request, context):
    return self._call(self._cascade.feedback, request, context)


def grpc_server(cascade: Cascade, port: int = 0, workers: int = 16,
                max_concurrent_rpcs: int = 64) -> Tuple[grpc.Server, int]:
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                       maximum_concurrent_rpcs=max_concurrent_rpcs)
  recommender_pb2_grpc.add_RecommenderServicer_to_server(RecommenderServicer(cascade), server)
  return server, server.add_insecure_port(f"[::]:{port}")


def _routes(cascade: Cascade) -> Dict[str, Tuple[type, Callable[[Message], Message]]]:
  return {"/v1/recommend": (pb.RecommendRequest, cascade.recommend),
          "/v1/search": (pb.SearchRequest, cascade.search),
          "/v1/feedback": (pb.FeedbackRequest, cascade.feedback)}


def http_server(cascade: Cascade, port: int = 0) -> http.server.ThreadingHTTPServer:
  """The HTTP/JSON gateway (started by the caller in a thread)."""
  routes = _routes(cascade)

  class Handler(http.server.BaseHTTPRequestHandler):
    def _reply(self, status: int, body: Dict) -> None:
      data = json.dumps(body).encode()
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def do_POST(self):  # pylint: disable=invalid-name
      if self.path not in routes:
        return self._reply(404, {"error": f"no route {self.path}; routes: {sorted(routes)}"})
      message_type, method = routes[self.path]
      try:
        length = int(self.headers.get("Content-Length", 0))
        request = json_format.Parse(self.rfile.read(length) or b"{}", message_type())
      except (json_format.ParseError, ValueError) as error:
        return self._reply(400, {"error": f"malformed {message_type.__name__}: {error}"})
      try:
        response = method(request)
      except CascadeError as error:
        return self._reply(HTTP_STATUS.get(error.code, 500), {"error": str(error)})
      except Exception as error:  # pylint: disable=broad-except
        log.exception("unexpected error")
        return self._reply(500, {"error": f"{type(error).__name__}: {error}"})
      return self._reply(200, json_format.MessageToDict(response,
                                                        preserving_proto_field_name=True))

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
      log.debug(format, *args)

  return http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)


def serve_http_in_background(server: http.server.ThreadingHTTPServer) -> threading.Thread:
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  return thread
