"""One command to serve a pipeline run locally: model server + cascade (gRPC and HTTP/JSON).

    python -m serving.serve                        # after `scripts/run_pipeline.sh`
    python -m serving.serve --model_server localhost:8500   # against stock TF Serving

Starts the local model server on the run's serving root (unless --model_server names a running
TF Serving), then the cascade on --port (gRPC) and --http_port, writing feedback under the data
root's interactions/ so the next pipeline run learns from it. Every --catalog_refresh_s it
re-reads the data root's catalog: items a multimodal retrieval model does not know are embedded
by it and recommended without a retrain (serving/fresh_items.py). The users' online state (recent
clicks and impressions) lives in this process or, with --user_store redis, in Redis at
--redis_url (serving/user_state.py). Everything binds 127.0.0.1 unless --host says otherwise
(the local model server always does: the cascade is its client). Once serving, it prints one
line, `serving: {...}`, with the addresses and the user-state store (JSON).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import List, Optional

from serving import limits
from serving.bind import LOOPBACK, grpc_address
from serving.model_server_flags import add_model_server_flags
from serving.user_state_config import UserStateConfig, add_user_state_flags

# Where scripts/run_pipeline.sh leaves its outputs: <repository>/outputs.
DEFAULT_OUTPUTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "outputs")


def parse_args(argv: List[str]) -> argparse.Namespace:
  """Above the imports of the cascade and the model server (TensorFlow, gRPC), so that --help
  and a bad flag answer at once."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_root",
                      default=os.path.join(DEFAULT_OUTPUTS, "data", "movielens-100k"),
                      help="the raw data root: its catalog and users are served, the feedback "
                           "goes to its interactions/ (default %(default)s)")
  parser.add_argument("--serving_root", default=os.path.join(DEFAULT_OUTPUTS, "serving"),
                      help="the pushed models and their models.config, which the local model "
                           "server serves (default %(default)s)")
  parser.add_argument("--model_server", default=None,
                      help="host:port of a running TF Serving; default: start the local one")
  parser.add_argument("--model_server_port", type=int, default=0,
                      help="port of the local model server (0: any free one; printed)")
  parser.add_argument("--experiment", default=None, help="A/B experiment config (JSON file)")
  parser.add_argument("--host", default=LOOPBACK,
                      help="address the cascade's gRPC and HTTP bind (0.0.0.0: every interface; "
                           "nothing authenticates callers)")
  parser.add_argument("--port", type=int, default=50051,
                      help="the cascade's gRPC port (0: any free one; printed; default "
                           "%(default)s)")
  parser.add_argument("--http_port", type=int, default=8080,
                      help="the HTTP/JSON gateway's port (0: any free one; printed; default "
                           "%(default)s)")
  parser.add_argument("--http_header_timeout_s", type=float, default=limits.HEADER_TIMEOUT_S,
                      help="a request head must arrive within this (and an idle keep-alive "
                           "connection is closed after it)")
  parser.add_argument("--catalog_refresh_s", type=float, default=60.0,
                      help="re-read the catalog this often; new items a multimodal retrieval "
                           "model can embed are recommended at once (0: read it at start only)")
  parser.add_argument("--batch_model_calls", action=argparse.BooleanOptionalAction,
                      default=True,
                      help="merge concurrent requests' calls to one model into one Predict "
                           "(serving/model_client.py); --no-batch_model_calls: one Predict per "
                           "request and stage")
  parser.add_argument("--feedback_rotate_s", type=float, default=3600.0,
                      help="close the feedback file this often (the pipeline reads closed "
                           "files only: the freshest feedback a retraining cycle sees)")
  add_model_server_flags(parser)
  add_user_state_flags(parser)
  return parser.parse_args(argv)


if __name__ == "__main__":
  parse_args(sys.argv[1:])

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from serving.cascade import Cascade  # noqa: E402
from serving.cascade_server import grpc_server  # noqa: E402
from serving.context_store import Catalog  # noqa: E402
from serving.experiment import SINGLE_VARIANT, Experiment  # noqa: E402
from serving.feedback_log import FeedbackLog, recent_feedback_rows  # noqa: E402
from serving.fresh_items import FreshItems, RefreshLoop  # noqa: E402
from serving.http_gateway import HttpGateway  # noqa: E402
from serving.issued import rebuilt  # noqa: E402
from serving.batching import BatchingParameters  # noqa: E402
from serving.model_client import ModelClient  # noqa: E402
from serving.model_server import ModelServer, run_until_interrupted  # noqa: E402
from serving.models_config import RETRIEVAL, models_config_path  # noqa: E402

log = logging.getLogger(__name__)


class LocalStack:
  """Model server (optional) + cascade gRPC + HTTP, started and stopped together.

  `model_server_options` are ModelServer's keyword arguments (labels, config polling, roots);
  `user_state` chooses the online user-state store and its bounds."""

  def __init__(self, data_root: str, serving_root: Optional[str] = None,
               model_server: Optional[str] = None, experiment: Experiment = SINGLE_VARIANT,
               port: int = 0, http_port: int = 0, poll_seconds: float = 2.0,
               host: str = LOOPBACK, model_server_port: int = 0,
               header_timeout_s: float = limits.HEADER_TIMEOUT_S,
               model_server_options: Optional[dict] = None, catalog_refresh_s: float = 60.0,
               user_state: UserStateConfig = UserStateConfig(),
               feedback_rotate_s: float = 3600.0, batch_model_calls: bool = True):
    self.model_server = None
    if model_server is None:
      # The cascade is the local server's client; when it batches its calls itself, the
      # server's batching only adds its wait (2 ms a stage) and a thread hand-off.
      options = {"batching": None if batch_model_calls else BatchingParameters(),
                 **(model_server_options or {})}
      self.model_server = ModelServer(models_config_path(serving_root), model_server_port,
                                      poll_seconds, **options).start()
      model_server = grpc_address(self.model_server.host, self.model_server.port)
    self.model_server_address = model_server
    self.feedback = FeedbackLog(data_root, max_age_s=feedback_rotate_s)
    issued = rebuilt(recent_feedback_rows(data_root, limits.ISSUED_MAX_AGE_S,
                                          limits.ISSUED_REBUILD_BYTES))
    # No wait for more calls: while one batch runs, the next gathers what arrives meanwhile,
    # so a lone request adds no latency and a loaded server sends full batches.
    self.client = ModelClient(model_server, batching=BatchingParameters(batch_timeout_s=0.0)
                              if batch_model_calls else None)
    catalog = Catalog(data_root)
    self.fresh = FreshItems(self.client, catalog, data_root)
    self._refresh = RefreshLoop(self.fresh, {v.models.get(RETRIEVAL, "")
                                             for v in experiment.variants}, catalog_refresh_s)
    self.user_state = user_state.open(data_root)  # after the log's recovery: it reads the log
    self.cascade = Cascade(self.client, catalog, self.user_state, self.feedback,
                           experiment, issued=issued, fresh=self.fresh,
                           demote_after=user_state.demote_after)
    self._grpc, self.port = grpc_server(self.cascade, port, host)
    self.host = host
    self._http = HttpGateway(self.cascade, host, http_port, header_timeout_s)
    self.http_port = self._http.port

  def start(self) -> "LocalStack":
    self._grpc.start()
    self._http.start()
    self._refresh.start()
    return self

  def addresses(self) -> dict:
    return {"cascade_grpc": grpc_address(self.host, self.port),
            "http": f"http://{grpc_address(self.host, self.http_port)}",
            "model_server": self.model_server_address, "user_state": self.user_state.where}

  def stop(self) -> None:
    self._refresh.stop()
    self._http.stop()
    self._grpc.stop(1.0).wait()
    self.client.close()
    self.user_state.close()
    self.feedback.close()
    if self.model_server:
      self.model_server.stop()


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  experiment = SINGLE_VARIANT
  if args.experiment:
    with open(args.experiment) as f:
      experiment = Experiment.from_json(f.read())
  options = dict(config_poll_seconds=args.model_config_file_poll_wait_seconds,
                 allowed_base_paths=args.allowed_base_paths,
                 allow_version_labels_for_unavailable_models=(
                     args.allow_version_labels_for_unavailable_models))
  stack = LocalStack(args.data_root, args.serving_root, args.model_server, experiment, args.port,
                     args.http_port, args.file_system_poll_wait_seconds, args.host,
                     args.model_server_port, args.http_header_timeout_s, options,
                     args.catalog_refresh_s, UserStateConfig.from_flags(args),
                     args.feedback_rotate_s, args.batch_model_calls).start()
  print(f"serving: {json.dumps(stack.addresses())}", flush=True)
  run_until_interrupted(stack.stop)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
