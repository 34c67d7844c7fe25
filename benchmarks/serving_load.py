"""Load on loopback against the serving stack; prints JSON.

1. The cascade's Recommend at several concurrency levels: p50/p95/p99 latency and throughput,
   with every stage the serving root has pushed (named in the output), with the cascade's
   model calls batched across requests (the default) and without.
2. The model server's Predict on the retrieval model, with and without server-side batching
   (the batching gain at the same concurrency).

Request loops are bounded in count and time, and only address 127.0.0.1.

    python -m benchmarks.serving_load [--output_root outputs] [--seconds 10]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Callable, Dict, List

from benchmarks.flags import add_concurrency_flag, add_output_root_flag


def parse_args(argv: List[str]) -> argparse.Namespace:
  """Above the imports of TensorFlow, gRPC and the serving stack, so that --help and a bad flag
  answer at once."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  add_output_root_flag(parser)
  parser.add_argument("--data_root", default=None,
                      help="the raw data root the cascade serves; the impressions are logged "
                           "under its interactions/ (default: OUTPUT_ROOT/data/movielens-100k)")
  parser.add_argument("--model_server", default=None,
                      help="host:port of a model server already running in its own process "
                           "(`python -m serving.model_server`, or TF Serving): the cascade "
                           "calls it, this process's CPU is then the cascade's and the load "
                           "generator's alone, and the model server's Predict section is "
                           "skipped (default: the in-process local server)")
  parser.add_argument("--seconds", type=float, default=8.0,
                      help="time budget of each load run: one per concurrency level, for the "
                           "cascade and for the model server with and without batching "
                           "(default %(default)s)")
  parser.add_argument("--max_requests", type=int, default=2000,
                      help="request budget of each load run (default %(default)s)")
  add_concurrency_flag(parser)
  return parser.parse_args(argv)


if __name__ == "__main__":
  parse_args(sys.argv[1:])

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from serving.batching import BatchingParameters  # noqa: E402
from serving.model_server import ModelServer  # noqa: E402
from serving.protos import recommender_pb2 as pb  # noqa: E402
from serving.protos import recommender_pb2_grpc  # noqa: E402
from serving.models_config import models_config_path  # noqa: E402
from serving.serve import LocalStack  # noqa: E402


def load(call: Callable[[int], None], concurrency: int, seconds: float, max_requests: int
         ) -> Dict[str, float]:
  """Runs `call` from `concurrency` threads until the time or request budget is spent."""
  latencies: List[float] = []
  errors = [0]
  lock = threading.Lock()
  stop_at = time.monotonic() + seconds

  def worker(index: int) -> None:
    n = 0
    while time.monotonic() < stop_at:
      with lock:
        if len(latencies) + errors[0] >= max_requests:
          return
      started = time.perf_counter()
      try:
        call(index * 100000 + n)
      except grpc.RpcError:
        with lock:
          errors[0] += 1
        continue
      with lock:
        latencies.append(time.perf_counter() - started)
      n += 1

  started, cpu_started = time.monotonic(), time.process_time()
  threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  elapsed, cpu = time.monotonic() - started, time.process_time() - cpu_started
  ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
  return {"concurrency": concurrency, "requests": len(latencies), "errors": errors[0],
          "throughput_rps": round(len(latencies) / elapsed, 1),
          # This process's CPU (server and load generator together) per 1,000 answers: less
          # noisy from machine to machine than the rate.
          "cpu_s_per_1000": round(cpu / max(len(latencies), 1) * 1000, 2),
          "p50_ms": round(float(np.percentile(ms, 50)), 2),
          "p95_ms": round(float(np.percentile(ms, 95)), 2),
          "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def _predict_request(user: int) -> predict_pb2.PredictRequest:
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "retrieval"
  for name, value in {"user_id": [str(user % 900 + 1)], "history": [["1", "50", "100"]],
                      "age": np.array([30]), "gender": ["F"], "occupation": ["writer"]}.items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
  return request


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  serving_root = os.path.join(args.output_root, "serving")
  data_root = args.data_root or os.path.join(args.output_root, "data", "movielens-100k")
  levels = [int(c) for c in args.concurrency.split(",")]
  result: Dict[str, object] = {"machine": f"{os.cpu_count()} cores, loopback"}

  cascade: Dict[str, object] = {}
  for label, batched in (("batched_model_calls", True), ("one_call_per_request", False)):
    stack = LocalStack(data_root, serving_root, args.model_server,
                       batch_model_calls=batched).start()
    try:
      stub = recommender_pb2_grpc.RecommenderStub(
          grpc.insecure_channel(f"localhost:{stack.port}"))
      call = lambda i: stub.Recommend(pb.RecommendRequest(  # noqa: E731
          user=pb.UserContext(user_id=str(i % 900 + 1)), k=10), timeout=30)
      cascade["stages"] = list(call(0).stages)  # what every pushed model adds to a request
      cascade[label] = [load(call, c, args.seconds, args.max_requests) for c in levels]
    finally:
      stack.stop()
  result["cascade_recommend"] = cascade
  if args.model_server:
    print(json.dumps(result, indent=2))
    return 0

  predict = {}
  for label, batching in (("batching", BatchingParameters()), ("no_batching", None)):
    server = ModelServer(models_config_path(serving_root), batching=batching).start()
    try:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(
          grpc.insecure_channel(f"localhost:{server.port}"))
      call = lambda i: stub.Predict(_predict_request(i), timeout=30)  # noqa: E731
      predict[label] = [load(call, c, args.seconds, args.max_requests) for c in levels]
    finally:
      server.stop()
  predict["batching_gain_at_max_concurrency"] = round(
      predict["batching"][-1]["throughput_rps"] / max(predict["no_batching"][-1]["throughput_rps"],
                                                      1e-9), 2)
  result["model_server_predict"] = predict
  print(json.dumps(result, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
