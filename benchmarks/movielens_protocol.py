"""Recommendation quality under Microsoft Recommenders' MovieLens-100K protocol, of what the
pipeline PUSHED, as it is served; prints JSON.

The protocol: recommenders' `python_stratified_split` (np.random.seed(42), a uniform draw per
row in file order, sort by user and draw, per user the first round(0.75 * count) rows train,
pandas' round), the pipeline with its DEFAULT settings on the 75% (the raw data contract in),
top-10 per test user with the training items removed, every test item relevant; MAP (their
map_at_k: divided by the relevant count), NDCG@10, precision@10 and recall@10
(trainer/ranker/metrics.py). Scored through the served stack: the local model server over the
pushed serving root and the cascade's Recommend over gRPC (a run that pushes nothing scores
nothing); each pushed source alone through the model server's Predict with the same history.
Beside them, computed here from the same training rows: popularity and EASE (Steck 2019,
lambda 500), the baselines an engineer runs first. Repeated for several training seeds (the
split stays the protocol's); the pipeline's own eval figures, what its blessing used, are
printed beside.

    python -m benchmarks.movielens_protocol [--seeds 42,7,123] [--demo] [--output_root DIR]

`--demo` runs the MovieLens demo's configuration instead (the bandit stage on, as
scripts/run_pipeline.sh does).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Mapping, Sequence, Tuple


def parse_args(argv: List[str]) -> argparse.Namespace:
  """Above the imports of TensorFlow, the pipeline and the serving stack, so that --help and a
  bad flag answer at once."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--output_root", default=None,
                      help="the converted MovieLens-100K (converted once per folder), the "
                           "training data root and each seed's run go here (default: a new "
                           "temporary folder)")
  parser.add_argument("--seeds", default="42,7,123",
                      help="comma-separated training seeds, one pipeline run each (default "
                           "%(default)s)")
  parser.add_argument("--demo", action="store_true",
                      help="the MovieLens demo's stages (the bandit on; default: the "
                           "pipeline's defaults)")
  return parser.parse_args(argv)


if __name__ == "__main__":
  parse_args(sys.argv[1:])

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline.config import PipelineConfig, RankingStage  # noqa: E402
from pipeline.data import contract, parsing  # noqa: E402
from pipeline.data.movielens import convert_movielens_100k  # noqa: E402
from pipeline.data.parsing import read_table  # noqa: E402
from pipeline.runners import local_runner  # noqa: E402
from serving.context_store import user_features  # noqa: E402
from serving.models_config import ITEM_TO_ITEM, POPULARITY, RANKER, RETRIEVAL  # noqa: E402
from serving.protos import recommender_pb2 as pb  # noqa: E402
from serving.protos import recommender_pb2_grpc  # noqa: E402
from serving.serve import LocalStack  # noqa: E402
from serving.user_state import EmbeddedUserState, Profiles  # noqa: E402
from trainer.ranker import metrics as M  # noqa: E402
from trainer.retrieval import signature  # noqa: E402

K = 10
EASE_LAMBDA = 500.0
PUBLISHED = {  # Microsoft Recommenders' MovieLens-100K table, top-10
    "BPR": {"map": 0.132, "ndcg@10": 0.442, "precision@10": 0.388, "recall@10": 0.213},
    "BiVAE": {"map": 0.146, "ndcg@10": 0.475, "precision@10": 0.412, "recall@10": 0.219},
}
METRICS = ("map", f"ndcg@{K}", f"precision@{K}", f"recall@{K}")
Rating = Dict[str, object]


def stratified_split(ratings: Sequence[Rating], ratio: float = 0.75, seed: int = 42
                     ) -> Tuple[List[Rating], List[Rating]]:
  """recommenders' python_stratified_split, row for row (see the module docstring)."""
  draw = np.random.RandomState(seed).rand(len(ratings))
  users = np.array([r["user_id"] for r in ratings])
  order = np.lexsort((draw, users))
  starts = np.r_[0, np.flatnonzero(users[order][1:] != users[order][:-1]) + 1]
  counts = np.diff(np.r_[starts, len(order)])
  rank = np.arange(len(order)) - np.repeat(starts, counts) + 1
  train = np.zeros(len(ratings), bool)
  train[order] = rank <= np.round(ratio * np.repeat(counts, counts))
  return ([r for r, t in zip(ratings, train) if t], [r for r, t in zip(ratings, train) if not t])


def write_data_root(full_root: str, train: Sequence[Rating], data_root: str) -> None:
  """The full catalog and user table, and only the training interactions (raw contract)."""
  for table in (contract.ITEMS, contract.USERS):
    tf.io.gfile.makedirs(os.path.join(data_root, table))
    for path in parsing.list_table_files(full_root, table):
      tf.io.gfile.copy(path, os.path.join(data_root, table, os.path.basename(path)), True)
  tf.io.gfile.makedirs(os.path.join(data_root, contract.INTERACTIONS))
  columns = [c.name for c in contract.INTERACTION_COLUMNS]
  with tf.io.gfile.GFile(os.path.join(data_root, contract.INTERACTIONS, "train.csv"), "w") as f:
    writer = csv.DictWriter(f, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(train)


def baseline_lists(train: Sequence[Rating], users: Sequence[str], k: int = K
                   ) -> Dict[str, Dict[str, List[str]]]:
  """Top-k per user of popularity and EASE(lambda 500), fit here on the training rows."""
  items = sorted({r["item_id"] for r in train})
  index = {item: j for j, item in enumerate(items)}
  user_index = {u: i for i, u in enumerate(sorted({r["user_id"] for r in train}))}
  matrix = np.zeros((len(user_index), len(items)), np.float64)
  for r in train:
    matrix[user_index[r["user_id"]], index[r["item_id"]]] = 1.0
  gram = matrix.T @ matrix
  inverse = np.linalg.inv(gram + EASE_LAMBDA * np.eye(len(items)))
  weights = -inverse / np.diag(inverse)
  np.fill_diagonal(weights, 0.0)
  popularity = matrix.sum(0)
  lists: Dict[str, Dict[str, List[str]]] = {"popularity": {}, "ease": {}}
  for user in users:
    row = matrix[user_index[user]]
    for name, scores in (("popularity", popularity.copy()), ("ease", row @ weights)):
      scores[row > 0] = -np.inf
      lists[name][user] = [items[j] for j in np.argsort(-scores, kind="stable")[:k]]
  return lists


def served_lists(data_root: str, serving_root: str, users: Sequence[str]
                 ) -> Dict[str, Dict[str, List[str]]]:
  """Top-10 per user from the served stack: the cascade's Recommend (gRPC) and each pushed
  source's `serving_default` through the model server, with the history the stack serves."""
  stack = LocalStack(data_root, serving_root).start()
  profiles = Profiles(data_root)
  store = EmbeddedUserState(data_root, profiles)
  lists: Dict[str, Dict[str, List[str]]] = {"cascade": {}}
  try:
    stub = recommender_pb2_grpc.RecommenderStub(grpc.insecure_channel(f"localhost:{stack.port}"))
    sources = [m for m in (RETRIEVAL, ITEM_TO_ITEM, POPULARITY) if stack.client.is_available(m)]
    for user in users:
      response = stub.Recommend(pb.RecommendRequest(user=pb.UserContext(user_id=user), k=K),
                                timeout=60)
      lists["cascade"][user] = [item.item_id for item in response.items]
      query = signature.query_inputs([user_features(user, store.state(user).history,
                                                    profiles.get(user))])
      for model in sources:
        out = stack.client.predict(model, query, timeout_s=60)
        lists.setdefault(model, {})[user] = [item for item, _ in signature.retrieved(
            out[signature.ITEM_IDS][0], out[signature.SCORES][0], K)]
    lists["stages"] = {"": list(response.stages)}
  finally:
    stack.stop()
  return lists


def scored(lists: Mapping[str, List[str]], relevant: Mapping[str, set]) -> Dict[str, float]:
  values = M.mean_metrics(M.user_metrics(lists[u], relevant[u]) for u in relevant)
  return {name: round(values[name], 4) for name in METRICS}


def spread(runs: Sequence[Mapping[str, float]], names: Sequence[str] = METRICS
           ) -> Dict[str, Dict[str, float]]:
  """Mean, min and max over runs of each named metric."""
  return {name: {"mean": round(float(np.mean([r[name] for r in runs])), 4),
                 "min": round(float(np.min([r[name] for r in runs])), 4),
                 "max": round(float(np.max([r[name] for r in runs])), 4)} for name in names}


def pipeline_config(data_root: str, output_root: str, seed: int, demo: bool) -> PipelineConfig:
  """The defaults, with the seed of every trained stage set (what the runs differ in)."""
  config = PipelineConfig(data_root=data_root, output_root=output_root,
                          retrieval_training={"seed": seed},
                          ranking=RankingStage(seed=seed, training={"seed": seed}),
                          enable_cache=False)
  config.bandit = demo
  return config


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  work = args.output_root or tempfile.mkdtemp(prefix="movielens_protocol_")
  full_root = os.path.join(work, "movielens-100k")
  if not tf.io.gfile.exists(os.path.join(full_root, contract.INTERACTIONS)):
    convert_movielens_100k(full_root)
  train, test = stratified_split(list(read_table(full_root, contract.INTERACTIONS)))
  relevant: Dict[str, set] = {}
  for row in test:
    relevant.setdefault(row["user_id"], set()).add(row["item_id"])
  users = sorted(relevant)
  data_root = os.path.join(work, "data")
  write_data_root(full_root, train, data_root)
  baselines = {name: scored(lists, relevant)
               for name, lists in baseline_lists(train, users).items()}
  runs = []
  for seed in [int(s) for s in args.seeds.split(",")]:
    config = pipeline_config(data_root, os.path.join(work, f"seed-{seed}"), seed, args.demo)
    with contextlib.redirect_stdout(sys.stderr):  # progress lines; stdout is the JSON
      summary = local_runner.run(config)
    run: Dict[str, object] = {"seed": seed, "status": summary["status"],
                              "pipeline_seconds": summary["seconds"],
                              "blessed": {RETRIEVAL: summary.get("blessed"), **{
                                  stage: summary.get(stage, {}).get("blessed")
                                  for stage in (ITEM_TO_ITEM, RANKER)}},
                              "pipeline_eval": {
                                  model: {m: round(v, 4) for m, v in values["overall"].items()}
                                  for model, values in summary.get(RANKER, {}).get(
                                      "evaluation", {}).get("metrics", {}).items()}}
    if summary["status"] == "succeeded" and summary.get("pushed_to"):
      serving_data = os.path.join(work, f"serving-data-{seed}")  # the stack logs feedback here
      shutil.rmtree(serving_data, ignore_errors=True)
      shutil.copytree(data_root, serving_data)
      started = time.time()
      lists = served_lists(serving_data, config.serving_root, users)
      run["served_stages"] = lists.pop("stages")[""]
      run["served"] = {name: scored(model_lists, relevant) for name, model_lists in lists.items()}
      run["scoring_seconds"] = round(time.time() - started, 1)
    runs.append(run)
  served = [r["served"] for r in runs if "served" in r]
  result = {
      "dataset": "MovieLens-100K",
      "protocol": "recommenders python_stratified_split 75/25, seed 42; top-10, training items "
                  "removed; scored through the served stack",
      "test_users": len(users), "train_rows": len(train), "test_rows": len(test),
      "configuration": "MovieLens demo (bandit)" if args.demo else "defaults",
      "baselines": baselines, "published": PUBLISHED, "runs": runs,
      "mean_and_spread": {name: spread([s[name] for s in served]) for name in
                          (served[0] if served else {})},
  }
  print(json.dumps(result, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
