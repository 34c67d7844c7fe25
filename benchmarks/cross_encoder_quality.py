"""Cross-encoder quality on MovieLens-100K; prints JSON.

1. Cascade against retrieval alone under Microsoft Recommenders' protocol (the split and the
   metric code of benchmarks/movielens_protocol.py): per-user stratified 75/25 split (seed 42),
   the whole pipeline with its cross-encoder stage trained on the 75%, top-10 with training
   items removed, every test item relevant. Retrieval alone ranks by the retriever; the cascade
   re-ranks the retriever's top 100 with the cross-encoder, the query being the user context
   the cascade sends (profile and most recent training titles). Scored on a seeded sample of
   users (100 pairs per user is the cost on CPU); retrieval alone on all users as well.
2. Variants trained on the pipeline's own mined groups with the same steps: pointwise
   BCE (the pipeline's), listwise softmax, LoRA (rank 8) and mixed bfloat16; each scored on the
   pipeline's eval query groups per query kind against the retriever's order, and in the
   cascade above. The search groups are SYNTHETIC (labels from catalog metadata).

    python -m benchmarks.cross_encoder_quality [--users 150] [--variants listwise,lora,bfloat16]
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import sys
import tempfile
import time
from typing import Dict, List, Sequence

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.movielens_protocol import (Scorer, stratified_split, top_k_metrics,  # noqa: E402
                                           write_data_root)
from pipeline.components.artifacts import SERVING_MODEL_DIR  # noqa: E402
from pipeline.components.cross_encoder_miner import CrossEncoderMiner  # noqa: E402
from pipeline.config import CrossEncoderStage, PipelineConfig  # noqa: E402
from pipeline.data import contract  # noqa: E402
from pipeline.data.movielens import convert_movielens_100k  # noqa: E402
from pipeline.data.parsing import read_table  # noqa: E402
from pipeline.pipeline_def import CROSS_ENCODER_STAGE  # noqa: E402
from pipeline.runners import local_runner  # noqa: E402
from trainer.cross_encoder import groups as E  # noqa: E402
from trainer.cross_encoder.metrics import mean_metrics  # noqa: E402
from trainer.cross_encoder.texts import item_text, user_context_text  # noqa: E402
from trainer.cross_encoder.trainer import (TRAINING_RECORD, CrossEncoderSettings,  # noqa: E402
                                           train)

RERANK_DEPTH = 100
VARIANTS = {"listwise": {"loss": "listwise"},
            "lora": {"lora_rank": 8, "learning_rate": 5e-4},
            "bfloat16": {"precision": "bfloat16"}}


class CascadeScorer:
  """Retrieval top-100 (training items removed), re-ranked by a cross-encoder's signature;
  answers like Scorer, with -inf outside the re-ranked 100, so top_k_metrics reads its order."""

  def __init__(self, retrieval: Scorer, score_pairs, catalog: Dict[str, dict]):
    self._retrieval = retrieval
    self._score_pairs = score_pairs
    self._texts = [item_text(catalog[i]) for i in retrieval.item_ids]
    self._titles = [catalog[i]["title"] for i in retrieval.item_ids]
    self.item_ids, self.item_index = retrieval.item_ids, retrieval.item_index

  def scores(self, user_ids: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
    retrieved = self._retrieval.scores(user_ids, histories)
    reranked = np.full_like(retrieved, -np.inf)
    for row, (user, history) in enumerate(zip(user_ids, histories)):
      seen = [self.item_index[i] for i in history if i in self.item_index]
      retrieved[row, seen] = -np.inf
      top = np.argsort(-retrieved[row])[:RERANK_DEPTH]
      query = user_context_text(self._retrieval.users.get(user, {}),
                                [self._titles[self.item_index[i]] for i in history])
      reranked[row, top] = self._score_pairs([query] * len(top), [self._texts[i] for i in top])
    return reranked


def saved_model_pairs(model_dir: str):
  serve = tf.saved_model.load(model_dir).signatures["serving_default"]
  return lambda queries, texts: serve(query=tf.constant(queries),
                                      item_text=tf.constant(texts))["scores"].numpy()


def module_pairs(module):
  return lambda queries, texts: module.serve(tf.constant(queries),
                                             tf.constant(texts))["scores"].numpy()


def group_evaluation(evaluate, pattern: str) -> Dict[str, Dict[str, Dict[str, float]]]:
  """{model: {slice: metrics}} on the mined eval groups for a scorer of serialized groups and
  for the retriever's order; the same metric code as TFMA's."""
  rows: Dict[str, List] = {"candidate": [], "retrieval_order": []}
  kinds: List[str] = []
  records = tf.data.TFRecordDataset(glob.glob(pattern), compression_type="GZIP").batch(16)
  for batch in records:
    groups = E.parse_groups(batch)
    scores = evaluate(batch).numpy()
    for i, labels in enumerate(groups[E.LABELS].numpy()):
      rows["candidate"].append((labels, scores[i]))
      rows["retrieval_order"].append((labels, groups[E.RETRIEVER_SCORES][i].numpy()))
      kinds.append(groups[E.QUERY_KIND][i].numpy().decode())
  result = {}
  for model, pairs in rows.items():
    result[model] = {"overall": rounded(mean_metrics(pairs))}
    for kind in sorted(set(kinds)):
      result[model][f"query_kind={kind}"] = rounded(mean_metrics(
          [p for p, k in zip(pairs, kinds) if k == kind]))
  return result


def training_summary(record: Dict) -> Dict:
  return {**{k: record[k] for k in ("steps", "pairs", "seconds_with_validation",
                                    "trainable_parameters")},
          "best_validation_ndcg@10": round(record["best_validation"]["ndcg@10"], 4)}


def rounded(metrics: Dict[str, float]) -> Dict[str, float]:
  return {k: round(v, 4) for k, v in metrics.items()}


def main(argv: List[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--output_root", default=None)
  parser.add_argument("--users", type=int, default=150, help="users scored in the cascade")
  parser.add_argument("--variants", default=",".join(VARIANTS))
  args = parser.parse_args(argv)
  work = args.output_root or tempfile.mkdtemp(prefix="cross_encoder_quality_")
  full_root = os.path.join(work, "movielens-100k")
  if not tf.io.gfile.exists(os.path.join(full_root, contract.INTERACTIONS)):
    convert_movielens_100k(full_root)
  train_rows, test_rows = stratified_split(list(read_table(full_root, contract.INTERACTIONS)),
                                           0.75, seed=42)
  data_root = os.path.join(work, "ms", "data")
  write_data_root(full_root, train_rows, data_root)
  config = PipelineConfig(data_root=data_root, output_root=os.path.join(work, "ms", "outputs"),
                          cross_encoder=CrossEncoderStage(), enable_cache=False)
  with contextlib.redirect_stdout(sys.stderr):  # progress lines; stdout is the JSON
    summary = local_runner.run(config)
  if summary["status"] != "succeeded":
    raise RuntimeError(f"pipeline failed: {summary.get('error')}")
  retrieval = Scorer(os.path.join(summary["model"], SERVING_MODEL_DIR), full_root)
  catalog = {row["item_id"]: row for row in read_table(full_root, contract.ITEMS)}
  users = sorted({r["user_id"] for r in test_rows})
  sample = set(np.random.default_rng(42).choice(users, min(args.users, len(users)),
                                                replace=False))
  sampled_test = [r for r in test_rows if r["user_id"] in sample]
  stage = summary[CROSS_ENCODER_STAGE.model_name]
  model_dir = os.path.join(stage["model"], SERVING_MODEL_DIR)
  [groups_dir] = glob.glob(os.path.join(config.pipeline_root, CrossEncoderMiner.__name__,
                                        "groups", "*"))
  split = lambda name: os.path.join(groups_dir, f"Split-{name}", "*")  # noqa: E731
  pipeline_model = tf.saved_model.load(model_dir).signatures["evaluation"]
  [record_path] = glob.glob(os.path.join(config.pipeline_root, CROSS_ENCODER_STAGE.trainer_id,
                                         "model_run", "*", TRAINING_RECORD))
  with open(record_path) as f:
    record = json.load(f)
  variants = {"pointwise": {
      "settings": "pipeline defaults", "training": training_summary(record),
      "eval_groups": group_evaluation(lambda b: pipeline_model(examples=b)["scores"],
                                      split(E.EVAL)),
      "cascade": top_k_metrics(CascadeScorer(retrieval, saved_model_pairs(model_dir), catalog),
                               train_rows, sampled_test)}}
  for name in [v for v in args.variants.split(",") if v]:
    with contextlib.redirect_stdout(sys.stderr):  # Keras' progress lines
      module, record = train(CrossEncoderSettings(**VARIANTS[name]), [split(E.TRAIN)],
                             [split(E.VALIDATION)])
    started = time.time()
    variants[name] = {
        "settings": VARIANTS[name],
        "training": training_summary(record),
        "eval_groups": group_evaluation(lambda b: module.evaluate(b)["scores"], split(E.EVAL)),
        "cascade": top_k_metrics(CascadeScorer(retrieval, module_pairs(module), catalog),
                                 train_rows, sampled_test),
        "scoring_seconds": round(time.time() - started, 1)}
  print(json.dumps({
      "dataset": "MovieLens-100K",
      "recommenders_protocol": {
          "split": "per-user stratified random 75/25, seed 42; top-10, training items removed",
          "users_scored": len(sample),
          "retrieval_alone_all_users": top_k_metrics(retrieval, train_rows, test_rows),
          "retrieval_alone": top_k_metrics(retrieval, train_rows, sampled_test),
          "cascade_top100_reranked": variants["pointwise"]["cascade"]},
      "pipeline": {"seconds": summary["seconds"],
                   "component_seconds": summary["component_seconds"],
                   "cross_encoder_blessed": stage.get("blessed"),
                   "cross_encoder_reasons": stage["evaluation"]["reasons"]},
      "variants": variants,
      "note": "eval_groups: the pipeline's mined eval groups (retriever top-50 per eval "
              "interaction; synthetic_search labels come from catalog metadata)"}, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
