"""Flags the serving benchmarks share, worded once. Imports nothing heavy: the benchmarks parse
their flags before TensorFlow loads."""
from __future__ import annotations

import argparse
import os

from pipeline.config import REPO_ROOT


def add_output_root_flag(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--output_root", default=os.path.join(REPO_ROOT, "outputs"),
                      help="a pipeline run's output root: its serving/ is served (default "
                           "%(default)s)")


def add_concurrency_flag(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--concurrency", default="1,4,16",
                      help="comma-separated client thread counts, one load run each (default "
                           "%(default)s)")
