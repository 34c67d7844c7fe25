"""The cascade's gRPC service (serving/protos/recommender.proto); HTTP is `http_gateway.py`.

gRPC: recsys.serving.Recommender/{Recommend, Search, Feedback}. Bad requests get
INVALID_ARGUMENT naming the field; the server keeps serving. Bounded: a message is at most
MAX_GRPC_MESSAGE_BYTES (gRPC answers RESOURCE_EXHAUSTED beyond), and at most
MAX_CONCURRENT_RPCS run at once (RESOURCE_EXHAUSTED beyond). Binds loopback unless told.
"""
from __future__ import annotations

import logging
from concurrent import futures
from typing import Callable, Tuple

import grpc
from google.protobuf.message import Message

from serving import limits
from serving.bind import LOOPBACK, grpc_address
from serving.cascade import Cascade
from serving.protos import recommender_pb2_grpc
from serving.validation import CascadeError

log = logging.getLogger(__name__)


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


def grpc_server(cascade: Cascade, port: int = 0, host: str = LOOPBACK,
                workers: int = limits.GRPC_WORKERS,
                max_concurrent_rpcs: int = limits.MAX_CONCURRENT_RPCS) -> Tuple[grpc.Server, int]:
  """The (unstarted) server and the port it bound."""
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                       maximum_concurrent_rpcs=max_concurrent_rpcs,
                       options=[("grpc.max_receive_message_length",
                                 limits.MAX_GRPC_MESSAGE_BYTES)])
  recommender_pb2_grpc.add_RecommenderServicer_to_server(RecommenderServicer(cascade), server)
  return server, server.add_insecure_port(grpc_address(host, port))
