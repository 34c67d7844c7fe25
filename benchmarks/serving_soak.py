"""Soak test of the serving stack: good and hostile traffic for a long while; prints JSON.

    python -m benchmarks.serving_soak [--output_root outputs] [--seconds 300]
        [--max_requests 200000] [--clients 8] [--slow_clients 100] [--bad_fraction 0.3]

Starts `python -m serving.serve` over the run's serving root in its own process (as
scripts/serve.sh does; loopback only, feedback into a temporary copy of the data root), then
runs `--clients` threads until `--seconds` or `--max_requests`: Recommend, Search and Feedback
over gRPC and HTTP, and with probability `--bad_fraction` a bad request of
benchmarks/serving_requests.py (cascade, HTTP bodies, model server), whose answer must be the
expected refusal. Meanwhile `--slow_clients` sockets trickle partial request heads, reopened
whenever the server cuts them off. Reported: latency percentiles of the good requests, failures,
refusals that were not the expected one, how many slow sockets the server cut, and the server's
RSS over the run (sampled every second).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional

from benchmarks.flags import add_output_root_flag

MAX_SECONDS = 24 * 3600.0
MAX_REQUESTS = 10_000_000


def parse_args(argv: List[str]) -> argparse.Namespace:
  """Above the imports of gRPC, TF Serving's APIs and the bad requests (TensorFlow), so that
  --help and a bad flag answer at once."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  add_output_root_flag(parser)
  parser.add_argument("--data_root", default=None,
                      help="the raw data root served, through a temporary copy that gets the "
                           "soak's feedback (default: OUTPUT_ROOT/data/movielens-100k)")
  parser.add_argument("--seconds", type=float, default=300.0,
                      help=f"seconds the clients run, at most (up to {MAX_SECONDS:.0f}; "
                           "default %(default)s)")
  parser.add_argument("--max_requests", type=int, default=200_000,
                      help="requests of all clients together, at most (up to "
                           f"{MAX_REQUESTS}; default %(default)s)")
  parser.add_argument("--clients", type=int, default=8,
                      help="client threads sending good and bad requests (default %(default)s)")
  parser.add_argument("--slow_clients", type=int, default=100,
                      help="sockets trickling partial request heads (default %(default)s)")
  parser.add_argument("--bad_fraction", type=float, default=0.3,
                      help="probability that a client's next request is a bad one, whose "
                           "refusal is checked (default %(default)s)")
  parser.add_argument("--seed", type=int, default=9,
                      help="seed of the traffic: client i draws from SEED + i (default "
                           "%(default)s)")
  args = parser.parse_args(argv)
  if not 0 < args.seconds <= MAX_SECONDS or not 0 < args.max_requests <= MAX_REQUESTS:
    parser.error(f"--seconds must be in (0, {MAX_SECONDS:.0f}], --max_requests in "
                 f"(0, {MAX_REQUESTS}]")
  return args


if __name__ == "__main__":
  parse_args(sys.argv[1:])

import grpc  # noqa: E402
import numpy as np  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from tensorflow_serving.apis import (model_service_pb2_grpc,  # noqa: E402
                                     prediction_service_pb2_grpc)

from benchmarks.serve_process import ServeProcess  # noqa: E402
from benchmarks.serving_requests import (HTTP_PATHS, MODEL_SERVER_CASES, Shown,  # noqa: E402
                                         body_case, cascade_case)
from serving.context_store import Catalog  # noqa: E402
from serving.http_gateway import HTTP_STATUS  # noqa: E402
from serving.protos import recommender_pb2 as pb  # noqa: E402
from serving.protos import recommender_pb2_grpc  # noqa: E402


class Tally:
  """Thread-safe counters and the good requests' latencies."""

  def __init__(self, max_requests: int):
    self._lock = threading.Lock()
    self.counts: Dict[str, int] = {}
    self.latencies: List[float] = []
    self.unexpected: List[str] = []
    self._left = max_requests

  def take(self) -> bool:
    """One more request within the budget?"""
    with self._lock:
      self._left -= 1
      return self._left >= 0

  def add(self, outcome: str, latency: Optional[float] = None, detail: str = "") -> None:
    with self._lock:
      self.counts[outcome] = self.counts.get(outcome, 0) + 1
      if latency is not None:
        self.latencies.append(latency)
      if detail and len(self.unexpected) < 20:
        self.unexpected.append(detail[:300])


class Client:
  """One client thread's connections and its traffic mix."""

  def __init__(self, stack: ServeProcess, rng: random.Random, tally: Tally, bad_fraction: float,
               catalog_ids: List[str]):
    self._rng, self._tally, self._bad = rng, tally, bad_fraction
    self._stub = recommender_pb2_grpc.RecommenderStub(grpc.insecure_channel(stack.grpc))
    channel = grpc.insecure_channel(stack.model_server)
    self._model_stubs = {"Predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
                         "GetModelMetadata":
                             prediction_service_pb2_grpc.PredictionServiceStub(channel),
                         "GetModelStatus": model_service_pb2_grpc.ModelServiceStub(channel),
                         "HandleReloadConfigRequest":
                             model_service_pb2_grpc.ModelServiceStub(channel)}
    host, port = stack.http.removeprefix("http://").rsplit(":", 1)
    self._http = (host, int(port))
    self._catalog_ids = catalog_ids
    self._shown: Optional[Shown] = None

  def _post(self, path: str, body: bytes, content_type: str = "application/json"):
    connection = http.client.HTTPConnection(*self._http, timeout=30)
    try:
      connection.request("POST", path, body, {"Content-Type": content_type})
      answer = connection.getresponse()
      return answer.status, json.loads(answer.read())
    finally:
      connection.close()

  def _good(self) -> None:
    user = str(self._rng.randint(1, 943))
    started = time.perf_counter()
    if self._rng.random() < 0.5:
      response = self._stub.Recommend(pb.RecommendRequest(user=pb.UserContext(user_id=user),
                                                          k=10), timeout=30)
    else:
      status, answer = self._post("/v1/recommend", json.dumps(
          {"user": {"user_id": user}, "k": 10}).encode())
      if status != 200:
        raise RuntimeError(f"HTTP {status}: {answer}")
      response = json_format.ParseDict(answer, pb.RecommendResponse())
    if response.items and self._rng.random() < 0.3:
      item = self._rng.choice(response.items)
      self._stub.Feedback(pb.FeedbackRequest(request_id=response.request_id, user_id=user,
                                             item_id=item.item_id, event="click"), timeout=30)
    self._tally.add("good", time.perf_counter() - started)
    shown = {i.item_id for i in response.items}
    self._shown = Shown(response.request_id, user, [i.item_id for i in response.items],
                        [i.propensity for i in response.items],
                        next(i for i in self._catalog_ids if i not in shown))

  def _bad_one(self) -> None:
    kind = self._rng.choice(["grpc", "http", "body", "model_server"])
    if kind == "body":
      case = body_case(self._rng)
      status, answer = self._post(case.path, case.body, case.content_type)
      clear = status == case.status and case.words in answer.get("error", "")
      return self._tally.add("bad_clear" if clear else "bad_unclear",
                             detail="" if clear else f"{case.words}: {status} {answer}")
    if kind == "model_server":
      api = self._rng.choice(list(MODEL_SERVER_CASES))
      case, stub = MODEL_SERVER_CASES[api](self._rng), self._model_stubs[api]
      call = getattr(stub, api)
    else:
      case = cascade_case(self._rng, self._rng.choice(list(HTTP_PATHS)), self._shown)
      call = getattr(self._stub, case.api)
    if kind == "http":
      status, answer = self._post(HTTP_PATHS[case.api], json.dumps(json_format.MessageToDict(
          case.request, preserving_proto_field_name=True)).encode())
      clear = status == HTTP_STATUS[case.code] and case.words in answer.get("error", "")
      return self._tally.add("bad_clear" if clear else "bad_unclear",
                             detail="" if clear else f"{case.words}: {status} {answer}")
    try:
      call(case.request, timeout=30)
      self._tally.add("bad_unclear", detail=f"accepted: {case.api} {case.words}")
    except grpc.RpcError as error:
      clear = error.code().name == case.code and case.words in error.details()
      self._tally.add("bad_clear" if clear else "bad_unclear",
                      detail="" if clear else f"{case.words}: {error.code()} {error.details()}")

  def run(self, stop_at: float) -> None:
    while time.monotonic() < stop_at and self._tally.take():
      try:
        if self._shown is None or self._rng.random() >= self._bad:
          self._good()
        else:
          self._bad_one()
      except (grpc.RpcError, OSError, RuntimeError, ValueError) as error:
        self._tally.add("failed", detail=f"{type(error).__name__}: {error}")


def slow_clients(port: int, count: int, stop_at: float, cut: List[int]) -> None:
  """Keeps `count` sockets trickling a request head; counts those the server closes."""
  head = b"POST /v1/recommend HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
  sockets: Dict[socket.socket, int] = {}
  while time.monotonic() < stop_at:
    while len(sockets) < count:
      sock = socket.create_connection(("127.0.0.1", port), timeout=5)
      sock.setblocking(False)
      sockets[sock] = 0
    for sock in list(sockets):
      try:
        if sockets[sock] < len(head):
          sock.send(head[sockets[sock]:sockets[sock] + 1])
          sockets[sock] += 1
        elif sock.recv(1) == b"":
          raise ConnectionResetError
      except BlockingIOError:
        pass
      except OSError:
        cut[0] += 1
        sock.close()
        del sockets[sock]
    time.sleep(0.5)
  for sock in sockets:
    sock.close()


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  data_root = args.data_root or os.path.join(args.output_root, "data", "movielens-100k")
  with tempfile.TemporaryDirectory() as work:
    copy = os.path.join(work, "data")
    shutil.copytree(data_root, copy)  # the soak's feedback must not reach the next run
    stack = ServeProcess(["--data_root", copy, "--serving_root",
                          os.path.join(args.output_root, "serving")],
                         os.path.join(work, "serve.log")).start()
    try:
      result = soak(stack, args, copy)
    finally:
      stack.stop()
  print(json.dumps(result, indent=2))
  return 0


def soak(stack: ServeProcess, args: argparse.Namespace, data_root: str) -> Dict[str, object]:
  catalog_ids = sorted(Catalog(data_root).items)
  tally = Tally(args.max_requests)
  rss = [stack.rss()]
  stop_at = time.monotonic() + args.seconds
  cut = [0]
  threads = [threading.Thread(target=Client(stack, random.Random(args.seed + i), tally,
                                            args.bad_fraction, catalog_ids).run,
                              args=(stop_at,)) for i in range(args.clients)]
  threads.append(threading.Thread(target=slow_clients, args=(
      stack.port("http"), args.slow_clients, stop_at, cut)))
  started = time.monotonic()
  for thread in threads:
    thread.start()
  while any(t.is_alive() for t in threads[:-1]):
    time.sleep(1.0)
    rss.append(stack.rss())
  elapsed = time.monotonic() - started
  for thread in threads:
    thread.join()
  ms = np.array(tally.latencies or [np.nan]) * 1000
  return {"seconds": round(elapsed, 1), "clients": args.clients,
          "slow_clients": args.slow_clients, "counts": tally.counts,
          "good_rps": round(len(tally.latencies) / elapsed, 1),
          "good_latency_ms": {f"p{q}": round(float(np.percentile(ms, q)), 1)
                              for q in (50, 95, 99)} | {"max": round(float(np.max(ms)), 1)},
          "slow_sockets_cut_by_server": cut[0],
          "server_rss_mb": {"start": round(rss[0] / 2 ** 20), "max": round(max(rss) / 2 ** 20),
                            "end": round(rss[-1] / 2 ** 20),
                            "by_tenth_of_the_run": [round(rss[len(rss) * i // 10] / 2 ** 20)
                                                    for i in range(10)]},
          "unexpected": tally.unexpected}


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
