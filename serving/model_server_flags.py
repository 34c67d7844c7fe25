"""The model server's flags that `serving.serve` takes too (it starts that server), with TF
Serving's names. In a module of their own, without TensorFlow or gRPC, so that both commands
parse their flags, and answer --help or a bad flag, before loading either."""
from __future__ import annotations

import argparse


def add_model_server_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--file_system_poll_wait_seconds", type=float, default=2.0,
                      help="seconds between looks for new versions under each model's base "
                           "path (default %(default)s)")
  parser.add_argument("--model_config_file_poll_wait_seconds", type=float, default=None,
                      help="re-read models.config this often (0: once, at start; default: as "
                           "--file_system_poll_wait_seconds); a re-read replaces what an admin "
                           "HandleReloadConfigRequest set, as in TF Serving")
  parser.add_argument("--allow_version_labels_for_unavailable_models", action="store_true",
                      help="let a new label name a version that is not loaded (TF Serving's "
                           "flag)")
  parser.add_argument("--allowed_base_paths", nargs="*", default=[],
                      help="roots besides the config file's folder that base_path may name")
