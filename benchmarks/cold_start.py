"""Cold-start quality of the multimodal item tower, of what the pipeline PUSHED, as it is
served; prints JSON.

The protocol (`--dataset movielens`): MovieLens-100K in the raw data contract, split by
recommenders' `python_stratified_split` (75/25, seed 42) exactly as benchmarks/movielens_protocol.py
splits it. Then a seeded share (`--cold_share`, 20%; np.random.RandomState(0) over the sorted ids
of the items that have any interaction, fixed across training seeds) of the items is held out
ENTIRELY: every training interaction with them is removed. They stay in the catalog: new items
with content but no interactions. The training data root is the full catalog and user table plus
the remaining training rows. Test rows split in two: warm (the item is not held out) and cold
(it is). Users are scored when they have test rows of that kind and at least one training row.

`--dataset shop`: the SYNTHETIC shop (pipeline/data/synthetic_shop.py, seed 0: simulated users,
real Fashion-MNIST images; only the image reveals an item's class), the same split and hold-out
on its clicks; its images/ and SYNTHETIC_README.txt go into the training data root too (an
item's image_uri is relative to the data root). Never ground_truth.json: it is not a feature.

Variants, each one run of the real pipeline (`local_runner.run`, ranking stage and bandit off,
the DEFAULT gates) per training seed: `id` (content off), `text` (the multimodal tower reading
text only: retrieval_training content_modalities ["text"]), and on the shop `text+image`. A
variant whose model was not blessed pushed nothing and scores nothing (the JSON says so).

Scoring, through the served interface: `python -m serving.serve` on a copy of the training data
root and the run's serving root (its own process), and the model server's Predict (TF Serving's
gRPC API, serving/model_client.py) with the query the stack builds (the embedded user state's
history and profile, `signature.query_inputs`):
  served warm   the retrieval model's `serving_default` top-100 (history excluded) against the
                user's warm test items: MAP, NDCG@10, precision@10, recall@10, recall@100
                (trainer/ranker/metrics.py: Microsoft Recommenders' definitions, MAP divided
                by the relevant count, binary NDCG).
                The same list with the cold items taken out (fewer than 100 left: its
                recall@100 is over what is left) separates the slots cold items take from
                the tower's warm quality.
  served cold   the same list against the user's cold test items: recall@10, recall@100,
                NDCG@10. An id-only model cannot return an item it never saw: 0 is its honest
                served figure.
  cold ranking  only the cold items, ranked by the dot product of `query_embedding` (the user)
                and `item_embeddings` (each cold item from its RAW catalog row, with its image's
                bytes on the shop), history excluded; the same cold metrics. `known_items`
                says how many cold items the pushed model holds among its candidates (a
                content model places them all at export; an id model none).
Beside them, from the same training rows: warm popularity and EASE (Steck 2019, lambda 500;
movielens_protocol.baseline_lists at depth 100); cold: popularity and EASE score 0 (an item they
never saw has no score), a uniformly random ranking of the cold items (its expectation, exactly),
and the content kNN an engineer would try first: each cold item scored by the cosine between its
vector and the mean of the user's training items' unit vectors (the ContentEmbedder's text
vectors; on the shop also its image vectors).

    python -m benchmarks.cold_start --dataset movielens|shop [--seeds 42,7] [--cold_share 0.2]
        [--output_root DIR] [--shop_items 2000 --shop_users 1000]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

# --dataset's choices: what the JSON names the dataset, and the variants run on it.
DATASETS = {
    "movielens": {"name": "MovieLens-100K", "variants": ("id", "text")},
    "shop": {"name": "SYNTHETIC (simulated users, real Fashion-MNIST images)",
             "variants": ("id", "text", "text+image")},
}


def parse_args(argv: List[str]) -> argparse.Namespace:
  """Above the imports of TensorFlow, the pipeline and the serving stack, so that --help and a
  bad flag answer at once."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--dataset", choices=sorted(DATASETS), required=True,
                      help="; ".join(f"{name}: {d['name']}, variants {', '.join(d['variants'])}"
                                     for name, d in sorted(DATASETS.items())))
  parser.add_argument("--seeds", default="42,7",
                      help="comma-separated training seeds, one pipeline run per variant each "
                           "(default %(default)s)")
  parser.add_argument("--cold_share", type=float, default=0.2,
                      help="share of the items with interactions held out of training entirely "
                           "(default %(default)s)")
  parser.add_argument("--output_root", default=None,
                      help="the dataset (written once per folder), the training data root, the "
                           "runs and the serve logs go here (default: a new temporary folder)")
  parser.add_argument("--shop_items", type=int, default=2000,
                      help="items of the synthetic shop, with --dataset shop (default "
                           "%(default)s)")
  parser.add_argument("--shop_users", type=int, default=1000,
                      help="users of the synthetic shop, with --dataset shop (default "
                           "%(default)s)")
  return parser.parse_args(argv)


if __name__ == "__main__":
  parse_args(sys.argv[1:])

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.movielens_protocol import (EASE_LAMBDA, Rating, baseline_lists,  # noqa: E402
                                           spread, stratified_split, write_data_root)
from benchmarks.serve_process import ServeProcess  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.data import contract  # noqa: E402
from pipeline.data.images import read_image, resolve_image_uri  # noqa: E402
from pipeline.data.movielens import convert_movielens_100k  # noqa: E402
from pipeline.data.parsing import read_table  # noqa: E402
from pipeline.data.synthetic_shop import write_synthetic_shop  # noqa: E402
from pipeline.runners import local_runner  # noqa: E402
from serving.context_store import user_features  # noqa: E402
from serving.fresh_items import KNOWN_ITEMS  # noqa: E402
from serving.model_client import ModelClient  # noqa: E402
from serving.models_config import RETRIEVAL  # noqa: E402
from serving.user_state import EmbeddedUserState, Profiles  # noqa: E402
from trainer.content.records import ItemContent, read_item_contents  # noqa: E402
from trainer.ranker import metrics as M  # noqa: E402
from trainer.retrieval import signature  # noqa: E402
from transform import features as F  # noqa: E402

K, DEPTH = M.K, M.DEPTH
WARM_METRICS = ("map", f"ndcg@{K}", f"precision@{K}", f"recall@{K}", f"recall@{DEPTH}")
COLD_METRICS = (f"recall@{K}", f"recall@{DEPTH}", f"ndcg@{K}")
COLD_SEED = 0
# Variant -> the content modalities its item tower reads (none: content off).
MODALITIES: Dict[str, Tuple[str, ...]] = {"id": (), "text": ("text",),
                                          "text+image": ("text", "image")}
# What of the shop's data root, besides its tables, the pipeline may read.
SHOP_EXTRAS = ("images", "SYNTHETIC_README.txt")
BATCH = 64  # users or items per Predict call
Relevant = Dict[str, Set[str]]


# ---------------------------------------------------------------------------------------------
# Data: the split, the held-out items, the training data root.

def full_data_root(dataset: str, work: str, shop_items: int, shop_users: int) -> str:
  """The whole dataset in the raw contract (written once per output root)."""
  if dataset == "movielens":
    root = os.path.join(work, "movielens-100k")
    if not tf.io.gfile.exists(os.path.join(root, contract.INTERACTIONS)):
      convert_movielens_100k(root)
  else:
    root = os.path.join(work, f"shop-{shop_items}x{shop_users}")
    if not tf.io.gfile.exists(os.path.join(root, contract.INTERACTIONS)):
      write_synthetic_shop(root, items=shop_items, users=shop_users, seed=0)
  return root


def held_out_items(ratings: Sequence[Rating], share: float) -> Set[str]:
  """A seeded share of the items with interactions, the same for every training seed."""
  items = sorted({r["item_id"] for r in ratings})
  count = int(round(share * len(items)))
  chosen = np.random.RandomState(COLD_SEED).choice(len(items), count, replace=False)
  return {items[j] for j in chosen}


def by_user(rows: Iterable[Rating]) -> Relevant:
  """Each user's set of items in `rows` (what is relevant to them, or their history)."""
  relevant: Relevant = {}
  for row in rows:
    relevant.setdefault(row["user_id"], set()).add(row["item_id"])
  return relevant


def copy_tree(source: str, destination: str) -> None:
  """A file or folder, recursively, through tf.io.gfile (write_data_root copies tables only)."""
  if not tf.io.gfile.isdir(source):
    tf.io.gfile.copy(source, destination, True)
    return
  for folder, _, files in tf.io.gfile.walk(source):
    target = os.path.join(destination, os.path.relpath(folder, source))
    tf.io.gfile.makedirs(target)
    for name in files:
      tf.io.gfile.copy(os.path.join(folder, name), os.path.join(target, name), True)


def write_training_root(full_root: str, train: Sequence[Rating], data_root: str,
                        extras: Sequence[str]) -> None:
  """The full catalog and users, the warm training rows, and the extras (the shop's images)."""
  write_data_root(full_root, train, data_root)
  for name in extras:
    if tf.io.gfile.exists(os.path.join(full_root, name)):
      copy_tree(os.path.join(full_root, name), os.path.join(data_root, name))


# ---------------------------------------------------------------------------------------------
# Metrics.

def mean_of(per_user: Iterable[Optional[Dict[str, float]]], names: Sequence[str]
            ) -> Dict[str, float]:
  """The named means over users, rounded as movielens_protocol rounds, and the user count."""
  values = M.mean_metrics(per_user)
  return {**{name: round(values[name], 4) for name in names},
          "users": int(values[M.USER_COUNT])}


def scored(lists: Mapping[str, Sequence[str]], relevant: Relevant, names: Sequence[str]
           ) -> Dict[str, float]:
  """The mean metrics of each relevant user's ranked list (movielens_protocol.scored, with the
  metrics named: it scores top-10 only)."""
  return mean_of((M.user_metrics(lists[u], relevant[u]) for u in relevant), names)


def random_expectation(relevant: Relevant, n_items: int) -> Dict[str, float]:
  """A uniformly random order of `n_items` candidates, in expectation: each position holds a
  relevant item with probability r / n, so recall@k = k / n and E[DCG@10] = r / n * sum of
  the discounts (NDCG per user, its ideal as trainer/ranker/metrics.py normalises it)."""
  discounts = 1.0 / np.log2(np.arange(2, min(K, n_items) + 2))
  ndcg = [len(r) / n_items * discounts.sum() /
          (1.0 / np.log2(np.arange(2, min(len(r), K) + 2))).sum() for r in relevant.values()]
  return {f"recall@{K}": round(min(K, n_items) / n_items, 4),
          f"recall@{DEPTH}": round(min(DEPTH, n_items) / n_items, 4),
          f"ndcg@{K}": round(float(np.mean(ndcg)), 4), "users": len(relevant)}


def ranked(items: Sequence[str], scores: np.ndarray, exclude: Set[str]) -> List[str]:
  """`items` best first by score (ties in their order), `exclude` left out, DEPTH deep."""
  order = np.argsort(-scores, kind="stable")
  return [items[j] for j in order if items[j] not in exclude][:DEPTH]


# ---------------------------------------------------------------------------------------------
# Baselines.

def warm_baselines(train: Sequence[Rating], warm: Relevant) -> Dict[str, Dict[str, float]]:
  """Popularity and EASE, fit on the training rows: movielens_protocol's lists, top-100
  (recall@100 needs 100)."""
  lists = baseline_lists(train, sorted(warm), DEPTH)
  return {name: scored(model_lists, warm, WARM_METRICS) for name, model_lists in lists.items()}


def embedder_uri(pipeline_root: str) -> str:
  """The newest ContentEmbeddings artifact of a run."""
  uris = tf.io.gfile.glob(os.path.join(pipeline_root, "ContentEmbedder", "embeddings", "*"))
  if not uris:
    raise FileNotFoundError(f"no ContentEmbedder/embeddings artifact under {pipeline_root}")
  return max(uris, key=lambda uri: int(os.path.basename(uri)))


def unit_vectors(contents: Mapping[str, ItemContent], modality: str) -> Dict[str, np.ndarray]:
  """Each item's `modality` vector at unit length, items without it left out."""
  vectors = {}
  for item, content in contents.items():
    has, vector = ((content.has_text, content.text_embedding) if modality == "text"
                   else (content.has_image, content.image_embedding))
    norm = float(np.linalg.norm(vector))
    if has and norm > 0:
      vectors[item] = vector / norm
  return vectors


def knn_lists(vectors: Mapping[str, np.ndarray], history: Relevant, cold: Sequence[str],
              users: Iterable[str]) -> Dict[str, List[str]]:
  """Cold items by cosine to the mean of the user's training items' vectors; a user with none
  of them (or a cold item without the modality) scores 0."""
  dim = len(next(iter(vectors.values())))
  matrix = np.stack([vectors.get(item, np.zeros(dim, np.float32)) for item in cold])
  lists = {}
  for user in users:
    own = [vectors[item] for item in history.get(user, ()) if item in vectors]
    profile = np.mean(own, axis=0) if own else np.zeros(dim, np.float32)
    norm = float(np.linalg.norm(profile))
    lists[user] = ranked(cold, matrix @ (profile / norm if norm > 0 else profile),
                         history.get(user, set()))
  return lists


def cold_baselines(cold_test: Relevant, history: Relevant, cold: Sequence[str],
                   embedders: Mapping[str, str]) -> Dict[str, Dict[str, object]]:
  """What scores cold items without the two-tower model; `embedders`: modality -> the
  ContentEmbedder artifact its vectors come from."""
  zero = {**{name: 0.0 for name in COLD_METRICS}, "users": len(cold_test)}
  note = "never saw the held-out items: it cannot score them"
  result: Dict[str, Dict[str, object]] = {
      "popularity": dict(zero, note=note), "ease": dict(zero, note=note),
      "random": dict(random_expectation(cold_test, len(cold)),
                     note=f"expectation of a uniformly random order of the {len(cold)} cold "
                          "items")}
  for modality, uri in embedders.items():
    vectors = unit_vectors({c.item_id: c for c in read_item_contents(uri)}, modality)
    lists = knn_lists(vectors, history, cold, cold_test)
    result[f"content_knn_{modality}"] = dict(
        scored(lists, cold_test, COLD_METRICS), cold_items_with_vector=sum(
            item in vectors for item in cold), source=uri)
  return result


# ---------------------------------------------------------------------------------------------
# Pipeline runs and served scoring.

def variant_config(data_root: str, output_root: str, seed: int, variant: str) -> PipelineConfig:
  """The defaults with the ranking stage and bandit off, the retrieval seed set, and the item
  tower's content modalities (none = the id-only tower)."""
  training: Dict[str, object] = {"seed": seed}
  if MODALITIES[variant]:
    training["content_modalities"] = list(MODALITIES[variant])
  config = PipelineConfig(data_root=data_root, output_root=output_root,
                          retrieval_training=training, ranking=None, enable_cache=False,
                          content=bool(MODALITIES[variant]))
  config.bandit = False
  return config


def pipeline_eval(summary: Mapping[str, object]) -> Dict[str, object]:
  """The retrieval evaluator's overall figures per model and its reasons (what blessing used)."""
  evaluation = summary.get("evaluation") or {}
  return {"overall": {model: {m: round(v, 4) for m, v in slices.get("overall", {}).items()}
                      for model, slices in evaluation.get("metrics", {}).items()},
          "reasons": evaluation.get("reasons", [])}


def catalog_rows(full_root: str, items: Sequence[str], with_images: bool
                 ) -> List[Dict[str, object]]:
  """The raw catalog rows of `items`, in order, with their image's bytes when asked."""
  rows = {row["item_id"]: dict(row) for row in read_table(full_root, contract.ITEMS)}
  chosen = [rows[item] for item in items]
  for row in chosen if with_images else ():
    if row.get("image_uri"):
      ok, data = read_image(resolve_image_uri(full_root, str(row["image_uri"])))
      if not ok:
        raise IOError(f"item {row['item_id']}: {data}")
      row[signature.IMAGE_BYTES] = data
  return chosen


def predict_batches(client: ModelClient, signature_name: str, rows: Sequence[Mapping],
                    build: Callable[[Sequence[Mapping]], Dict[str, np.ndarray]],
                    outputs: Sequence[str]) -> Dict[str, np.ndarray]:
  """One signature over `rows` in batches of BATCH; its named outputs concatenated."""
  parts: Dict[str, List[np.ndarray]] = {name: [] for name in outputs}
  for start in range(0, len(rows), BATCH):
    out = client.predict(RETRIEVAL, build(rows[start:start + BATCH]), signature_name,
                         timeout_s=300)
    for name in outputs:
      parts[name].append(out[name])
  return {name: np.concatenate(values) for name, values in parts.items()}


def wait_available(client: ModelClient, timeout_s: float = 120.0) -> None:
  """Until the retrieval model is AVAILABLE: the serve process may print its addresses first."""
  deadline = time.monotonic() + timeout_s
  while not client.is_available(RETRIEVAL):
    if time.monotonic() > deadline:
      raise RuntimeError(f"model {RETRIEVAL!r} not available after {timeout_s} s")
    time.sleep(1.0)


def known_cold_items(client: ModelClient, cold: Sequence[str]) -> Optional[int]:
  """How many cold items the model holds among its candidates (`known_items`); None when it
  exports no such signature (only a model that can place an unseen item does)."""
  try:
    client.signature_info(RETRIEVAL, KNOWN_ITEMS)
  except KeyError:
    return None
  known = predict_batches(client, KNOWN_ITEMS, [{F.ITEM_ID: item} for item in cold],
                          lambda rows: signature.build_inputs(signature.KNOWN_SPEC, rows),
                          (signature.KNOWN,))[signature.KNOWN]
  return int(np.sum(known))


def served_scores(serving_data: str, serving_root: str, log_path: str, users: Sequence[str],
                  warm: Relevant, cold_test: Relevant, cold: Sequence[str],
                  cold_rows: Sequence[Mapping]) -> Dict[str, object]:
  """The pushed retrieval model, through the model server of a `serving.serve` process."""
  process = ServeProcess(["--data_root", serving_data, "--serving_root", serving_root],
                         log_path).start()
  client = ModelClient(process.model_server, timeout_s=60)
  try:
    wait_available(client)
    profiles = Profiles(serving_data)
    store = EmbeddedUserState(serving_data, profiles)
    histories = {u: store.state(u).history for u in users}
    queries = [user_features(u, histories[u], profiles.get(u)) for u in users]
    top = predict_batches(client, "serving_default", queries, signature.query_inputs,
                          (signature.ITEM_IDS, signature.SCORES))
    lists = {u: [item for item, _ in signature.retrieved(top[signature.ITEM_IDS][i],
                                                         top[signature.SCORES][i], DEPTH)]
             for i, u in enumerate(users)}
    queries_emb = predict_batches(client, "query_embedding", queries, signature.query_inputs,
                                  (signature.EMBEDDING,))[signature.EMBEDDING]
    items_emb = predict_batches(client, "item_embeddings", cold_rows, signature.item_inputs,
                                (signature.EMBEDDING,))[signature.EMBEDDING]
    known = known_cold_items(client, cold)
  finally:
    client.close()
    process.stop()
  index = {u: i for i, u in enumerate(users)}
  cold_lists = {u: ranked(cold, items_emb @ queries_emb[index[u]],
                          {item for item, _ in histories[u]}) for u in cold_test}
  cold_set = set(cold)
  warm_lists = {u: [item for item in items if item not in cold_set] for u, items in lists.items()}
  return {"served_warm": scored(lists, warm, WARM_METRICS),
          "served_warm_cold_filtered": scored(warm_lists, warm, WARM_METRICS),
          "served_cold": scored(lists, cold_test, COLD_METRICS),
          "cold_ranking": scored(cold_lists, cold_test, COLD_METRICS),
          "known_cold_items": known, **({} if known is not None else {"known_cold_items_note": (
              "the model exports no known_items (an id-only model: its candidates are its "
              "training items, and no cold item has a training row)")}),
          "served_list_depth": int(np.median([len(v) for v in lists.values()])),
          "served_lists_with_a_cold_item": sum(bool(set(v) & set(cold)) for v in lists.values())}


def run_variant(work: str, data_root: str, variant: str, seed: int, users: Sequence[str],
                warm: Relevant, cold_test: Relevant, cold: Sequence[str],
                cold_rows: Sequence[Mapping]) -> Tuple[Dict[str, object], PipelineConfig]:
  """One pipeline run of a variant, and what it pushed, scored."""
  config = variant_config(data_root, os.path.join(work, f"{variant}-seed-{seed}"), seed, variant)
  with contextlib.redirect_stdout(sys.stderr):  # progress lines; stdout is the JSON
    summary = local_runner.run(config)
  run: Dict[str, object] = {"seed": seed, "status": summary["status"],
                            "blessed": summary.get("blessed"),
                            "pushed_to": summary.get("pushed_to"),
                            "pipeline_seconds": summary["seconds"],
                            "pipeline_eval": pipeline_eval(summary)}
  if summary["status"] != "succeeded":
    run["error"] = summary.get("error")
  if summary["status"] == "succeeded" and summary.get("pushed_to"):
    serving_data = os.path.join(work, f"serving-data-{variant}-{seed}")  # feedback goes here
    shutil.rmtree(serving_data, ignore_errors=True)
    shutil.copytree(data_root, serving_data)
    started = time.time()
    run.update(served_scores(serving_data, config.serving_root,
                             os.path.join(work, f"serve-{variant}-{seed}.log"), users, warm,
                             cold_test, cold, cold_rows))
    run["scoring_seconds"] = round(time.time() - started, 1)
  else:
    run["scored"] = "nothing: the run pushed no model, so nothing is served to score"
  return run, config


def variant_spread(runs: Sequence[Mapping[str, object]]) -> Dict[str, object]:
  """A variant's spread over the seeds whose run pushed a model (the others score nothing)."""
  scored_runs = [r for r in runs if "served_warm" in r]
  if not scored_runs:
    return {"scored_seeds": 0}
  return {"scored_seeds": len(scored_runs),
          **{part: spread([r[part] for r in scored_runs], names) for part, names in
             (("served_warm", WARM_METRICS), ("served_warm_cold_filtered", WARM_METRICS),
              ("served_cold", COLD_METRICS),
              ("cold_ranking", COLD_METRICS))}}


# ---------------------------------------------------------------------------------------------
# Report.

def table(title: str, rows: Mapping[str, Mapping[str, object]], names: Sequence[str]) -> str:
  """Rows of figures (a float, or a mean/min/max dict shown as mean [min, max])."""
  def cell(value: object) -> str:
    if isinstance(value, dict):
      return (f"{value['mean']:.4f}" if value["min"] == value["max"] else
              f"{value['mean']:.4f} [{value['min']:.4f},{value['max']:.4f}]")
    return "-" if value is None else f"{value:.4f}"
  width = max([len(r) for r in rows] + [10])
  lines = [title, " " * width + "".join(f"  {n:>24}" for n in names)]
  for label, values in rows.items():
    lines.append(f"{label:<{width}}" + "".join(f"  {cell(values.get(n)):>24}" for n in names))
  return "\n".join(lines)


def human_tables(result: Mapping[str, object]) -> str:
  """The stderr summary: variants beside the baselines, warm then cold."""
  spreads = {v: s for v, s in result["mean_and_spread"].items() if s.get("scored_seeds")}
  warm_rows = {**{f"{v} (served)": s["served_warm"] for v, s in spreads.items()},
               **{f"{v} (served, cold filtered)": s["served_warm_cold_filtered"]
                  for v, s in spreads.items()},
               **result["baselines"]["warm"]}
  cold_rows = {**{f"{v} (served list)": s["served_cold"] for v, s in spreads.items()},
               **{f"{v} (cold ranking)": s["cold_ranking"] for v, s in spreads.items()},
               **result["baselines"]["cold"]}
  unscored = [v for v, s in result["mean_and_spread"].items() if not s.get("scored_seeds")]
  return "\n\n".join([
      f"{result['dataset']}: mean over seeds [min, max]",
      table("WARM test items", warm_rows, WARM_METRICS),
      table("COLD test items", cold_rows, COLD_METRICS),
      *([f"not scored (nothing pushed): {', '.join(unscored)}"] if unscored else [])])


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  started = time.time()
  work = args.output_root or tempfile.mkdtemp(prefix="cold_start_")
  full_root = full_data_root(args.dataset, work, args.shop_items, args.shop_users)
  ratings = list(read_table(full_root, contract.INTERACTIONS))
  train_all, test = stratified_split(ratings)
  cold_set = held_out_items(ratings, args.cold_share)
  cold = sorted(cold_set)
  train = [r for r in train_all if r["item_id"] not in cold_set]
  history = by_user(train)
  warm = {u: s for u, s in by_user(r for r in test if r["item_id"] not in cold_set).items()
          if u in history}
  cold_test = {u: s for u, s in by_user(r for r in test if r["item_id"] in cold_set).items()
               if u in history}
  users = sorted(set(warm) | set(cold_test))
  data_root = os.path.join(work, "data")
  write_training_root(full_root, train, data_root,
                      SHOP_EXTRAS if args.dataset == "shop" else ())
  cold_rows = catalog_rows(full_root, cold, with_images=args.dataset == "shop")

  variants = DATASETS[args.dataset]["variants"]
  runs: Dict[str, List[Dict[str, object]]] = {v: [] for v in variants}
  pipeline_roots: Dict[str, str] = {}
  for seed in [int(s) for s in args.seeds.split(",")]:
    for variant in variants:
      run, config = run_variant(work, data_root, variant, seed, users, warm, cold_test, cold,
                                cold_rows)
      runs[variant].append(run)
      pipeline_roots.setdefault(variant, config.pipeline_root)
      print(f"cold_start: {variant} seed {seed}: {json.dumps(run)}", file=sys.stderr, flush=True)

  embedders = {"text": embedder_uri(pipeline_roots["text"])}
  if "text+image" in pipeline_roots:
    embedders["image"] = embedder_uri(pipeline_roots["text+image"])
  test_rows = {"warm": sum(r["item_id"] not in cold_set for r in test),
               "cold": sum(r["item_id"] in cold_set for r in test)}
  result = {
      "dataset": DATASETS[args.dataset]["name"],
      "protocol": (
          f"recommenders python_stratified_split 75/25, seed 42; {args.cold_share:.0%} of the "
          f"items with interactions (RandomState({COLD_SEED})) held out of training entirely, "
          "kept in the catalog; the pushed retrieval model scored through serving.serve's "
          "model server: served top-100 (history excluded) against warm and cold test items, "
          "and the cold items alone ranked by query_embedding . item_embeddings (raw catalog "
          "rows); users with at least one training row; trainer/ranker/metrics.py"),
      "counts": {"users": len({r["user_id"] for r in ratings}),
                 "items_with_interactions": len({r["item_id"] for r in ratings}),
                 "warm_items": len({r["item_id"] for r in ratings}) - len(cold),
                 "cold_items": len(cold), "train_rows": len(train),
                 "train_rows_removed_with_cold_items": len(train_all) - len(train),
                 "warm_test_rows": test_rows["warm"], "cold_test_rows": test_rows["cold"],
                 "test_users_scored_warm": len(warm), "test_users_with_cold_items": len(cold_test),
                 "test_users_without_training_rows": len(by_user(test).keys() - history.keys())},
      "baselines": {"warm": warm_baselines(train, warm),
                    "cold": cold_baselines(cold_test, history, cold, embedders),
                    "ease_lambda": EASE_LAMBDA},
      "runs": runs,
      "mean_and_spread": {v: variant_spread(r) for v, r in runs.items()},
      "seconds": round(time.time() - started, 1),
  }
  print(json.dumps(result, indent=2))
  print(human_tables(result), file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
