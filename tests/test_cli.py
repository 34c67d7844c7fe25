"""The documented commands, run for real: `--help` loads no TensorFlow and prints no library
noise, every flag says what it does, bad flag combinations are refused, and a run's terminal
shows our lines while the libraries' stderr goes to the run's log."""
import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# `python -m` commands the README and the module docstrings document.
COMMANDS = ["pipeline.runners.local_runner", "pipeline.runners.cycle",
            "kubeflow.kubeflow_v2_runner", "pipeline.push_model", "pipeline.ab_report",
            "pipeline.data.movielens", "pipeline.data.synthetic_shop",
            "pipeline.data.synthetic_logs", "benchmarks.pipeline_scaling", "serving.models_config",
            "serving.serve", "serving.model_server", "benchmarks.bandit_ope",
            "benchmarks.bandit_regret", "benchmarks.cold_start",
            "benchmarks.cross_encoder_quality", "benchmarks.cross_encoder_speed",
            "benchmarks.encoder_speed", "benchmarks.movielens_protocol",
            "benchmarks.serving_load", "benchmarks.serving_soak", "benchmarks.user_state_load",
            "benchmarks.continuous_training", "kubeflow.schedule"]
SCRIPTS = ["scripts/run_pipeline.sh"]
NOISE = re.compile(r"cuFFT|cuDNN|cuBLAS|Gym|FutureWarning|deprecat", re.IGNORECASE)
# Runs the command's module as `python -m` does, with `--help`, and reports which of the flags
# of the parser that printed the help have no help text, and whether TensorFlow was imported.
HELP_CHECK = """
import argparse, json, runpy, sys
missing = []
print_help = argparse.ArgumentParser.print_help
def checked(parser, file=None):
  missing.extend((a.option_strings or [a.dest])[0] for a in parser._actions
                 if not (a.help or "").strip())
  print_help(parser, file)
argparse.ArgumentParser.print_help = checked
sys.argv = [sys.argv[1], "--help"]
try:
  runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
  code = 0
except SystemExit as e:
  code = e.code
print("HELP-CHECK " + json.dumps({"code": code, "missing": missing,
                                  "tensorflow": "tensorflow" in sys.modules}))
"""


def _env(**extra):
  return dict(os.environ, PYTHONPATH=REPO, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2",
              **extra)


def _noise(text):
  return [line for line in text.splitlines() if NOISE.search(line)]


@pytest.mark.parametrize("module", COMMANDS)
def test_help_loads_no_tensorflow_and_names_what_every_flag_does(module):
  done = subprocess.run([sys.executable, "-c", HELP_CHECK, module], cwd=REPO, env=_env(),
                        capture_output=True, text=True, check=False)
  report = json.loads(done.stdout.rsplit("HELP-CHECK ", 1)[1])
  assert report["code"] == 0, done.stderr
  assert report["missing"] == [], f"{module}: flags without help"
  assert not report["tensorflow"], f"{module} --help imported TensorFlow"
  assert not _noise(done.stdout + done.stderr)
  assert "usage:" in done.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_answer_help_without_tensorflow_or_noise(script):
  done = subprocess.run(["bash", script, "--help"], cwd=REPO, capture_output=True, text=True,
                        env=_env(PYTHONPROFILEIMPORTTIME="1"), check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  imported = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
  assert imported and not [line for line in imported
                           if re.search(r"\|\s+tensorflow(\.|$)", line)]
  assert not _noise(done.stdout + "\n".join(
      line for line in done.stderr.splitlines() if not line.startswith("import time:")))


def test_max_users_without_movielens_is_refused():
  done = subprocess.run([sys.executable, "-m", "pipeline.runners.local_runner", "--data_root",
                         "/nonexistent", "--max_users", "60"], cwd=REPO, env=_env(),
                        capture_output=True, text=True, check=False)
  assert done.returncode == 2
  assert "--max_users" in done.stderr and "--movielens" in done.stderr


def test_a_run_shows_our_lines_and_logs_the_libraries_noise(tmp_path):
  """A run on a data root that breaks the contract: it imports everything and fails fast."""
  interactions = tmp_path / "data" / "interactions"
  interactions.mkdir(parents=True)
  (interactions / "log.csv").write_text("user_id,item_id\n1,2\n")  # no event, no timestamp
  (tmp_path / "data" / "items").mkdir()
  (tmp_path / "data" / "items" / "items.csv").write_text("item_id,title\n2,Two\n")
  done = subprocess.run([sys.executable, "-m", "pipeline.runners.local_runner", "--data_root",
                         str(tmp_path / "data"), "--output_root", str(tmp_path / "out"),
                         "--no_ranker"], cwd=REPO, env=_env(), capture_output=True, text=True,
                        check=False)
  assert done.returncode == 1
  last = done.stdout.strip().splitlines()[-1]
  assert last.startswith("nothing pushed: the run failed: ContractError: "), last
  report = re.search(r"Report: (\S+\.json)\.", last).group(1)
  with open(report) as f:  # the report the error names outlives the failed execution
    assert "log.csv" in f.read()
  log_path = last.rsplit("full log: ", 1)[1]
  assert log_path.endswith("pipeline.log") and os.path.exists(log_path)
  assert not _noise(done.stdout + done.stderr), done.stderr[-3000:]
  with open(log_path) as f:
    log = f.read()
  assert "InteractionExampleGen" in log  # the libraries' log went there
