"""Cross-encoder cost on this machine; prints JSON.

1. Training throughput (pairs/s) of the MiniLM-L6 cross-encoder at sequence length 64 and 128,
   float32 and mixed bfloat16, with the trainer's own model and optimizer, as a fraction of
   this machine's matrix-multiply rate measured in the same run, same dtype (model FLOPs per
   pair: 3 x the forward pass, every token real).
2. Re-ranking latency of the exported SavedModel (tokenization included), in process, for 20,
   50 and 100 candidates of one query, at the default sequence length.

    python -m benchmarks.cross_encoder_speed [--steps 8] [--repeats 20]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Dict, List


def parse_args(argv: List[str]) -> argparse.Namespace:
  """Above the imports of TensorFlow and the cross-encoder trainer, so that --help and a bad
  flag answer at once."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=8,
                      help="timed training steps per sequence length and precision, after two "
                           "untimed ones that trace the step (default %(default)s)")
  parser.add_argument("--repeats", type=int, default=20,
                      help="timed re-ranking calls per candidate count, after three untimed "
                           "ones (default %(default)s)")
  return parser.parse_args(argv)


if __name__ == "__main__":
  parse_args(sys.argv[1:])

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainer.cross_encoder.export import CrossEncoderModule, export_cross_encoder  # noqa: E402
from trainer.cross_encoder.model import pair_preprocessor  # noqa: E402
from trainer.cross_encoder.texts import item_text  # noqa: E402
from trainer.cross_encoder.trainer import CrossEncoderSettings, build_model  # noqa: E402
from trainer.encoders.bert_checkpoint import BertConfig, load_tokenizer, minilm_dir  # noqa: E402

DTYPES = {"float32": tf.float32, "bfloat16": tf.bfloat16}


def matmul_rate(dtype: tf.DType, n: int = 2048, repeats: int = 10) -> float:
  """FLOP/s of an n x n matrix product on this machine (best of `repeats`)."""
  a = tf.random.normal([n, n], dtype=tf.float32)
  a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
  product = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y)[0, :1], tf.float32)))
  product(a, b)
  best = float("inf")
  for _ in range(repeats):
    started = time.perf_counter()
    product(a, b).numpy()
    best = min(best, time.perf_counter() - started)
  return 2 * n ** 3 / best


def training_flops_per_pair(config: BertConfig, length: int) -> float:
  """3 x forward FLOPs (backward ~ 2 x forward): projections, feed-forward, attention scores
  and mixing, per layer; pooler and head are negligible."""
  d, ff = config.hidden_dim, config.intermediate_dim
  per_layer = 2 * length * (4 * d * d + 2 * d * ff) + 4 * length * length * d
  return 3.0 * config.num_layers * per_layer


def training_throughput(length: int, precision: str, steps: int, groups: int = 4, size: int = 8
                        ) -> float:
  """Pairs/s of full training steps (forward, backward, AdamW) on random full-length pairs."""
  settings = CrossEncoderSettings(sequence_length=length, precision=precision,
                                  batch_groups=groups)
  model, _ = build_model(settings, pair_preprocessor(load_tokenizer(minilm_dir()), length),
                         total_steps=steps + 2)
  rng = np.random.default_rng(0)
  shape = ((steps + 2) * groups, size, length)
  x = {"token_ids": rng.integers(1000, 30000, shape).astype(np.int32),
       "segment_ids": np.zeros(shape, np.int32), "padding_mask": np.ones(shape, np.int32)}
  y = (rng.random(shape[:2]) < 0.2).astype(np.float32)
  model.fit({k: v[:2 * groups] for k, v in x.items()}, y[:2 * groups], batch_size=groups,
            verbose=0)  # traces the step
  started = time.perf_counter()
  model.fit({k: v[2 * groups:] for k, v in x.items()}, y[2 * groups:], batch_size=groups,
            verbose=0)
  return steps * groups * size / (time.perf_counter() - started)


def rerank_latency(export_dir: str, candidates: List[int], repeats: int) -> Dict[str, Dict]:
  """Milliseconds per call of serving_default for one search query and N candidates, with
  item texts as long as MovieLens ones (title, genres, year)."""
  serve = tf.saved_model.load(export_dir).signatures["serving_default"]
  query = "comedy films of the 1990s"
  result = {}
  for n in candidates:
    items = tf.constant([item_text({"title": f"Another Movie Title {i} (1994)", "year": 1994,
                                    "categories": ["Action", "Comedy", "Drama"]})
                         for i in range(n)])
    queries = tf.constant([query] * n)
    for _ in range(3):
      serve(query=queries, item_text=items)
    times = []
    for _ in range(repeats):
      started = time.perf_counter()
      serve(query=queries, item_text=items)["scores"].numpy()
      times.append(1000 * (time.perf_counter() - started))
    result[str(n)] = {"p50_ms": round(float(np.median(times)), 1),
                      "p95_ms": round(float(np.percentile(times, 95)), 1)}
  return result


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  config = BertConfig.read(minilm_dir())
  rates = {name: matmul_rate(dtype) for name, dtype in DTYPES.items()}
  throughput = {}
  for length in (64, 128):
    flops = training_flops_per_pair(config, length)
    for precision in DTYPES:
      pairs = training_throughput(length, precision, args.steps)
      throughput[f"seq{length}_{precision}"] = {
          "pairs_per_second": round(pairs, 1),
          "model_gflop_per_second": round(pairs * flops / 1e9, 1),
          "fraction_of_matmul_rate": round(pairs * flops / rates[precision], 3)}
  settings = CrossEncoderSettings()
  preprocessor = pair_preprocessor(load_tokenizer(minilm_dir()), settings.sequence_length)
  module = CrossEncoderModule(build_model(settings, preprocessor, 1)[1], settings.rerank_depth)
  with tempfile.TemporaryDirectory() as export_dir:
    export_cross_encoder(module, export_dir)
    latency = rerank_latency(export_dir, [20, 50, 100], args.repeats)
  print(json.dumps({
      "machine": {"cpus": os.cpu_count(),
                  "matmul_gflop_per_second": {k: round(v / 1e9, 1) for k, v in rates.items()}},
      "model": "all-MiniLM-L6-v2 cross-encoder (6 layers, hidden 384), batch 4 groups x 8 pairs",
      "training_throughput": throughput,
      "rerank_latency_in_process": {"sequence_length": settings.sequence_length,
                                    "candidates": latency}}, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
