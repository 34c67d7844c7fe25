"""Content-encoder throughput on this machine (CPU, float32); prints JSON.

Items embedded per second by each exported SavedModel, reloaded as a server loads it, raw input
to embedding (decoding and tokenization included), at batch sizes 1 and 32:
- text: all-MiniLM-L6-v2 on item texts as long as MovieLens ones (title, genres, year);
- image: EfficientNet-Lite0 on scikit-image's photos (300x451 to 512x512 PNGs and a JPEG).

    python -m benchmarks.encoder_speed [--repeats 10]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List


def parse_args(argv: List[str]) -> argparse.Namespace:
  """Above the imports of TensorFlow, TF Text and the encoders, so that --help and a bad flag
  answer at once."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=10,
                      help="timed calls per encoder and batch size, after two untimed ones; "
                           "the median is reported (default %(default)s)")
  return parser.parse_args(argv)


if __name__ == "__main__":
  parse_args(sys.argv[1:])

import numpy as np  # noqa: E402
import skimage  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: F401,E402  (registers the TF Text ops the text SavedModel uses)

from trainer.cross_encoder.texts import item_text  # noqa: E402
from trainer.encoders.efficientnet_checkpoint import load_image_encoder  # noqa: E402
from trainer.encoders.export import (EMBEDDING, IMAGE_INPUT, TEXT_INPUT,  # noqa: E402
                                     export_image_encoder, export_sentence_encoder)
from trainer.encoders.sentence_encoder import load_sentence_encoder  # noqa: E402

BATCH_SIZES = (1, 32)
PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png")
GENRES = (("Action", "Adventure", "Sci-Fi"), ("Comedy", "Romance"), ("Drama",),
          ("Animation", "Children's", "Comedy"), ("Crime", "Film-Noir", "Thriller"))


def item_texts(n: int) -> List[str]:
  return [item_text({"title": f"Another Movie Title {i} (199{i % 10})", "year": 1990 + i % 10,
                     "categories": list(GENRES[i % len(GENRES)])}) for i in range(n)]


def photo_bytes(n: int) -> List[bytes]:
  data_dir = pathlib.Path(skimage.__file__).parent / "data"
  photos = [(data_dir / name).read_bytes() for name in PHOTOS]
  return [photos[i % len(photos)] for i in range(n)]


def items_per_second(call: Callable[[], object], batch: int, repeats: int) -> Dict[str, float]:
  """Median of `repeats` timed calls, after two untimed ones (tracing, warm caches)."""
  for _ in range(2):
    call()
  times = []
  for _ in range(repeats):
    started = time.perf_counter()
    call()
    times.append(time.perf_counter() - started)
  median = statistics.median(times)
  return {"items_per_second": round(batch / median, 1), "ms_per_batch": round(1000 * median, 1)}


def measure(export_dir: str, input_name: str, inputs: Callable[[int], list], repeats: int
            ) -> Dict[str, Dict[str, float]]:
  serve = tf.saved_model.load(export_dir).signatures["serving_default"]
  result = {}
  for batch in BATCH_SIZES:
    x = tf.constant(inputs(batch), tf.string)
    result[f"batch_{batch}"] = items_per_second(
        lambda x=x: serve(**{input_name: x})[EMBEDDING].numpy(), batch, repeats)
  return result


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  with tempfile.TemporaryDirectory() as root:
    text_dir, image_dir = os.path.join(root, "text"), os.path.join(root, "image")
    export_sentence_encoder(load_sentence_encoder(), text_dir)
    export_image_encoder(load_image_encoder(), image_dir)
    text = measure(text_dir, TEXT_INPUT, item_texts, args.repeats)
    image = measure(image_dir, IMAGE_INPUT, photo_bytes, args.repeats)
  tokens = [len(t.split()) for t in item_texts(32)]
  print(json.dumps({
      "machine": {"cpus": os.cpu_count(), "tensorflow": tf.__version__},
      "text": {"model": "all-MiniLM-L6-v2 (6 layers, hidden 384) -> 384-d unit vectors",
               "input": f"MovieLens-like item texts, ~{np.mean(tokens):.0f} words", **text},
      "image": {"model": "EfficientNet-Lite0 (ImageNet-1k), 224x224 -> 1280-d embedding",
                "input": "scikit-image photos (PNG and JPEG bytes), decoded in the graph",
                **image}}, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
