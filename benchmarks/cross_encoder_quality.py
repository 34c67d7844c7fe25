"""Cross-encoder quality on MovieLens-100K search groups; prints JSON.

The pipeline runs with its cross-encoder stage (and only what it needs: no ranking stage, no
bandit) on the ratings; the mined `eval` groups are searches (SYNTHETIC: MovieLens has no search
log, so queries and labels come from catalog metadata, see trainer/cross_encoder/
synthetic_search.py), each with the retriever's top candidates. Scored per query kind against
the retriever's order, for the pipeline's own model and for variants trained on the same groups
with the same steps: listwise softmax, LoRA (rank 8) and mixed bfloat16.

    python -m benchmarks.cross_encoder_quality [--variants listwise,lora,bfloat16]
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import sys
import tempfile
from typing import Dict, List

# The variants trained beside the pipeline's model: CrossEncoderSettings overrides.
VARIANTS = {"listwise": {"loss": "listwise"},
            "lora": {"lora_rank": 8, "learning_rate": 5e-4},
            "bfloat16": {"precision": "bfloat16"}}


def parse_args(argv: List[str]) -> argparse.Namespace:
  """Above the imports of TensorFlow, the pipeline and the cross-encoder trainer, so that
  --help and a bad flag answer at once."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--output_root", default=None,
                      help="the converted MovieLens-100K (converted once per folder) and the "
                           "pipeline's outputs go here (default: a new temporary folder)")
  parser.add_argument("--variants", default=",".join(VARIANTS),
                      help="comma-separated variants trained on the mined groups beside the "
                           "pipeline's model (empty: none; default %(default)s)")
  return parser.parse_args(argv)


if __name__ == "__main__":
  parse_args(sys.argv[1:])

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402

from pipeline.components.artifacts import SERVING_MODEL_DIR  # noqa: E402
from pipeline.components.cross_encoder_miner import CrossEncoderMiner  # noqa: E402
from pipeline.config import CrossEncoderStage, PipelineConfig  # noqa: E402
from pipeline.data import contract  # noqa: E402
from pipeline.data.movielens import convert_movielens_100k  # noqa: E402
from pipeline.pipeline_def import CROSS_ENCODER_STAGE  # noqa: E402
from pipeline.runners import local_runner  # noqa: E402
from trainer.cross_encoder import groups as E  # noqa: E402
from trainer.cross_encoder.metrics import mean_metrics  # noqa: E402
from trainer.cross_encoder.trainer import (TRAINING_RECORD, CrossEncoderSettings,  # noqa: E402
                                           train)


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
  args = parse_args(argv)
  work = args.output_root or tempfile.mkdtemp(prefix="cross_encoder_quality_")
  data_root = os.path.join(work, "movielens-100k")
  if not tf.io.gfile.exists(os.path.join(data_root, contract.INTERACTIONS)):
    convert_movielens_100k(data_root)
  config = PipelineConfig(data_root=data_root, output_root=os.path.join(work, "outputs"),
                          ranking=None, cross_encoder=CrossEncoderStage(), enable_cache=False)
  with contextlib.redirect_stdout(sys.stderr):  # progress lines; stdout is the JSON
    summary = local_runner.run(config)
  if summary["status"] != "succeeded":
    raise RuntimeError(f"pipeline failed: {summary.get('error')}")
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
                                      split(E.EVAL))}}
  for name in [v for v in args.variants.split(",") if v]:
    with contextlib.redirect_stdout(sys.stderr):  # Keras' progress lines
      module, record = train(CrossEncoderSettings(**VARIANTS[name]), [split(E.TRAIN)],
                             [split(E.VALIDATION)])
    variants[name] = {
        "settings": VARIANTS[name], "training": training_summary(record),
        "eval_groups": group_evaluation(lambda b: module.evaluate(b)["scores"], split(E.EVAL))}
  print(json.dumps({
      "dataset": "MovieLens-100K, SYNTHETIC search queries and labels from catalog metadata",
      "pipeline": {"seconds": summary["seconds"],
                   "component_seconds": summary["component_seconds"],
                   "cross_encoder_blessed": stage.get("blessed"),
                   "cross_encoder_reasons": stage["evaluation"]["reasons"]},
      "variants": variants}, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
