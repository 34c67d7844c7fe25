"""One command to serve a pipeline run locally: model server + cascade (gRPC and HTTP/JSON).

    python -m serving.serve                        # after `scripts/run_pipeline.sh`
    python -m serving.serve --model_server localhost:8500   # against stock TF Serving

Starts the local model server on the run's serving root (unless --model_server names a running
TF Serving), then the cascade on --port (gRPC) and --http_port, writing feedback under the data
root's interactions/ so the next pipeline run learns from it.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from serving.cascade import Cascade  # noqa: E402
from serving.cascade_server import grpc_server, http_server, serve_http_in_background  # noqa: E402
from serving.context_store import Catalog, UserStore  # noqa: E402
from serving.experiment import SINGLE_VARIANT, Experiment  # noqa: E402
from serving.feedback_log import FeedbackLog  # noqa: E402
from serving.model_client import ModelClient  # noqa: E402
from serving.model_server import ModelServer, run_until_interrupted  # noqa: E402
from serving.models_config import models_config_path  # noqa: E402

log = logging.getLogger(__name__)
# Where scripts/run_pipeline.sh leaves its outputs: <repository>/outputs.
DEFAULT_OUTPUTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "outputs")


class LocalStack:
  """Model server (optional) + cascade gRPC + HTTP, started and stopped together."""

  def __init__(self, data_root: str, serving_root: Optional[str] = None,
               model_server: Optional[str] = None, experiment: Experiment = SINGLE_VARIANT,
               port: int = 0, http_port: int = 0, poll_seconds: float = 2.0):
    self.model_server = None
    if model_server is None:
      self.model_server = ModelServer(models_config_path(serving_root),
                                      poll_seconds=poll_seconds).start()
      model_server = f"localhost:{self.model_server.port}"
    self.feedback = FeedbackLog(data_root)
    self.client = ModelClient(model_server)
    self.cascade = Cascade(self.client, Catalog(data_root), UserStore(data_root), self.feedback,
                           experiment)
    self._grpc, self.port = grpc_server(self.cascade, port)
    self._http = http_server(self.cascade, http_port)
    self.http_port = self._http.server_address[1]

  def start(self) -> "LocalStack":
    self._grpc.start()
    serve_http_in_background(self._http)
    return self

  def stop(self) -> None:
    self._http.shutdown()
    self._grpc.stop(1.0).wait()
    self.client.close()
    self.feedback.close()
    if self.model_server:
      self.model_server.stop()


def main(argv: List[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_root",
                      default=os.path.join(DEFAULT_OUTPUTS, "data", "movielens-100k"))
  parser.add_argument("--serving_root", default=os.path.join(DEFAULT_OUTPUTS, "serving"))
  parser.add_argument("--model_server", default=None,
                      help="host:port of a running TF Serving; default: start the local one")
  parser.add_argument("--experiment", default=None, help="A/B experiment config (JSON file)")
  parser.add_argument("--port", type=int, default=50051)
  parser.add_argument("--http_port", type=int, default=8080)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  experiment = SINGLE_VARIANT
  if args.experiment:
    with open(args.experiment) as f:
      experiment = Experiment.from_json(f.read())
  stack = LocalStack(args.data_root, args.serving_root, args.model_server, experiment, args.port,
                     args.http_port).start()
  print(f"cascade gRPC on :{stack.port}, HTTP on http://127.0.0.1:{stack.http_port}/v1/recommend",
        flush=True)
  run_until_interrupted(stack.stop)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
