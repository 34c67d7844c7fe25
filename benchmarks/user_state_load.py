"""What each online user-state store adds to serving; prints JSON.

1. The served stack's Recommend (gRPC, loopback) with `--user_store embedded` and with
   `--user_store redis` (a real redis-server started here, loopback, no persistence), at the
   serving benchmark's concurrency levels: p50/p95/p99 latency and throughput, and redis over
   embedded as ratios. Both stacks share one model server, so only the store differs.
2. The store's own work per Recommend (one `state` read, one `record_impressions` write of 10
   items), called in process from as many threads: the added latency without the models' noise.

Each store starts from its own copy of the data root (feedback goes there), so both serve the
same users with the same history. Request loops are bounded in count and time.

    python -m benchmarks.user_state_load --serving_root DIR --data_root DIR [--seconds 5]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Dict, List

from benchmarks.flags import add_concurrency_flag
from pipeline.config import REPO_ROOT


def parse_args(argv: List[str]) -> argparse.Namespace:
  """Above the imports of TensorFlow, gRPC and the serving stack, so that --help and a bad flag
  answer at once."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--serving_root", default=os.path.join(REPO_ROOT, "outputs", "serving"),
                      help="the pushed models and their models.config, served by one model "
                           "server for both stores (default %(default)s)")
  parser.add_argument("--data_root",
                      default=os.path.join(REPO_ROOT, "outputs", "data", "movielens-100k"),
                      help="the raw data root, copied once per store; the feedback goes to the "
                           "copies (default %(default)s)")
  parser.add_argument("--seconds", type=float, default=8.0,
                      help="time budget of each load run: one per store, concurrency level and "
                           "part (Recommend, store call) (default %(default)s)")
  parser.add_argument("--max_requests", type=int, default=2000,
                      help="calls (Recommend requests or store calls) of each load run, at "
                           "most (default %(default)s)")
  add_concurrency_flag(parser)
  return parser.parse_args(argv)


if __name__ == "__main__":
  parse_args(sys.argv[1:])

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import grpc  # noqa: E402

from benchmarks.redis_process import RedisProcess  # noqa: E402
from benchmarks.serving_load import load  # noqa: E402
from serving.bind import grpc_address  # noqa: E402
from serving.model_server import ModelServer  # noqa: E402
from serving.models_config import models_config_path  # noqa: E402
from serving.protos import recommender_pb2 as pb  # noqa: E402
from serving.protos import recommender_pb2_grpc  # noqa: E402
from serving.serve import LocalStack  # noqa: E402
from serving.user_state import Profiles  # noqa: E402
from serving.user_state_config import EMBEDDED, REDIS, UserStateConfig  # noqa: E402

SHOWN = [f"bench-{n}" for n in range(10)]  # the store benchmark's "answer"


def _recommend_levels(stack: LocalStack, users: List[str], levels: List[int], seconds: float,
                      max_requests: int) -> Dict[str, object]:
  stub = recommender_pb2_grpc.RecommenderStub(grpc.insecure_channel(
      grpc_address(stack.host, stack.port)))
  call = lambda i: stub.Recommend(pb.RecommendRequest(  # noqa: E731
      user=pb.UserContext(user_id=users[i % len(users)]), k=10), timeout=30)
  for i in range(20):  # warm-up: traced signatures, connections
    call(i)
  first = call(0)
  return {"stages": list(first.stages), "degraded": list(first.degraded),
          "levels": [load(call, c, seconds, max_requests) for c in levels]}


def _store_levels(stack: LocalStack, users: List[str], levels: List[int], seconds: float,
                  max_requests: int) -> List[Dict[str, float]]:
  store = stack.user_state

  def call(i: int) -> None:
    user = users[i % len(users)]
    store.state(user)
    store.record_impressions(user, f"bench-{i}", SHOWN, 1)

  return [load(call, c, seconds, max_requests) for c in levels]


def _ratios(redis: List[Dict[str, float]], embedded: List[Dict[str, float]]
            ) -> List[Dict[str, float]]:
  return [{"concurrency": r["concurrency"],
           **{key: round(r[key] / max(e[key], 1e-9), 3)
              for key in ("p50_ms", "p99_ms", "throughput_rps")}}
          for r, e in zip(redis, embedded)]


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  levels = [int(c) for c in args.concurrency.split(",")]
  work = tempfile.mkdtemp(prefix="user-state-bench-")
  users = Profiles(args.data_root).ids()
  result: Dict[str, object] = {"machine": f"{os.cpu_count()} cores, loopback",
                               "users": len(users), "recommend": {}, "store_call": {}}
  model_server = ModelServer(models_config_path(args.serving_root)).start()
  redis = RedisProcess().start()
  try:
    for store in (EMBEDDED, REDIS):
      data_root = os.path.join(work, store)
      shutil.copytree(args.data_root, data_root, ignore=shutil.ignore_patterns("*.open"))
      config = UserStateConfig(store=store, redis_url=redis.url)
      stack = LocalStack(data_root, model_server=grpc_address(model_server.host,
                                                              model_server.port),
                         user_state=config).start()
      try:
        result["recommend"][store] = _recommend_levels(stack, users, levels, args.seconds,
                                                       args.max_requests)
        result["store_call"][store] = _store_levels(stack, users, levels, args.seconds,
                                                    args.max_requests)
        result["recommend"][store]["counters"] = stack.user_state.counters()
      finally:
        stack.stop()
  finally:
    redis.stop()
    model_server.stop()
    shutil.rmtree(work, ignore_errors=True)
  result["redis_over_embedded"] = {
      "recommend": _ratios(result["recommend"][REDIS]["levels"],
                           result["recommend"][EMBEDDED]["levels"]),
      "store_call": _ratios(result["store_call"][REDIS], result["store_call"][EMBEDDED])}
  print(json.dumps(result, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
