"""Shared fixtures: a real MovieLens-100K slice and one pipeline run over it (session-wide),
with every default stage (the sources, the fold models, the ranker) on a small budget."""
import contextlib
import io
import json
import os

import pytest

from pipeline.config import PipelineConfig, RankingStage
from pipeline.data.movielens import convert_movielens_100k
from pipeline.runners import local_runner

SLICE_USERS = 120
# The ranker's budget on the slice: 2 folds, two candidate scorers, a few epochs. Its gate is
# the union's depth (recall@100): 120 users are too few to tell the cascade from its best
# source on MAP. A third of the users form the gate lists, enough lists to compare on.
RANKER_FOLDS, RANKER_GATE, GATE_SHARE = 2, "recall@100", 0.3
RANKER_SETTINGS = {"max_epochs": 8, "scorers": ["dcn", "linear"]}


def pipeline_config(tmp, data_root, **overrides):
  settings = dict(data_root=data_root, output_root=os.path.join(tmp, "outputs"),
                  retrieval_training={"epochs": 3}, gate_metrics="recall@100",
                  regression_tolerance=1.0,
                  ranking=RankingStage(folds=RANKER_FOLDS, training=RANKER_SETTINGS,
                                       gate_metrics=RANKER_GATE, gate_share=GATE_SHARE))
  settings.update(overrides)
  return PipelineConfig(**settings)


@pytest.fixture(scope="session")
def slice_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("movielens_slice"))
  convert_movielens_100k(root, max_users=SLICE_USERS)
  return root


@pytest.fixture(scope="session")
def first_run(tmp_path_factory, slice_root):
  tmp = str(tmp_path_factory.mktemp("run"))
  config = pipeline_config(tmp, slice_root)
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    code = local_runner.main(["--data_root", slice_root, "--output_root", config.output_root,
                              "--epochs", "3", "--gate_metrics", config.gate_metrics,
                              "--regression_tolerance", str(config.regression_tolerance),
                              "--ranker_folds", str(RANKER_FOLDS),
                              "--ranker_settings", json.dumps(RANKER_SETTINGS),
                              "--ranker_gate_metrics", RANKER_GATE,
                              "--ranker_gate_share", str(GATE_SHARE)])
  lines = stdout.getvalue().strip().splitlines()
  with open(lines[-2]) as f:  # the last line is the outcome line
    summary = json.load(f)
  return config, code, lines, summary


@pytest.fixture(scope="session")
def serving_stack(first_run, slice_root, tmp_path_factory):
  """The run's pushed model (two versions, labelled as README's A/B setup says) and a small
  cross-encoder, served by `python -m serving.serve` in its own process (tests/serving_stack.py);
  the serving end-to-end and fuzz tests share it."""
  from tests.serving_stack import launch  # pylint: disable=import-outside-toplevel
  stack = launch(first_run[3], slice_root, str(tmp_path_factory.mktemp("serving")))
  yield stack
  stack.process.stop()


@pytest.fixture
def redis_server():
  """A real, empty redis-server of its own on a free loopback port (benchmarks/redis_process.py),
  stopped after the test; tests that need one skip, saying why, where it is not installed."""
  from benchmarks import redis_process  # pylint: disable=import-outside-toplevel
  if not redis_process.available():
    pytest.skip("redis-server is not installed (Debian: apt-get install redis-server, which "
                "scripts/run_tests.sh does as root): the Redis user-state tests skip")
  server = redis_process.RedisProcess().start()
  yield server
  server.stop()
