"""The pipeline compiles for Kubeflow Pipelines v2 with TFX's own compiler."""
import json

import pytest

from kubeflow.kubeflow_v2_runner import compile_pipeline, main
from pipeline.config import PipelineConfig
from pipeline.flags import config_from_args
from pipeline.runners import local_runner


def test_pipeline_compiles_to_a_kubeflow_v2_spec(tmp_path):
  config = PipelineConfig(data_root="gs://bucket/data", output_root="gs://bucket/out",
                          beam_pipeline_args=["--runner=DataflowRunner", "--project=p"])
  path = compile_pipeline(config, "gcr.io/project/recsys:1", str(tmp_path))
  with open(path) as f:
    spec = json.load(f)
  spec = spec.get("pipelineSpec", spec)
  tasks = set(spec["root"]["dag"]["tasks"])
  assert {"InteractionExampleGen", "StatisticsGen", "ExampleValidator", "ValidationGate",
          "Transform", "Trainer", "PopularityBaseline", "RetrievalEvaluator",
          "retrieval_pusher"} <= tasks
  text = json.dumps(spec)
  assert "gcr.io/project/recsys:1" in text
  assert "--runner=DataflowRunner" in text  # Beam args reach the components
  assert "gs://bucket/out/serving/retrieval" in text


def test_kubeflow_runner_takes_the_local_runners_pipeline_flags(tmp_path, capsys):
  assert main(["--image", "gcr.io/project/recsys:2", "--data_root", "gs://bucket/data",
               "--output_root", "gs://bucket/out", "--output_dir", str(tmp_path), "--cross_encoder",
               "--bandit", "--history_scope", "all_training", "--epochs", "3",
               "--", "--runner=DataflowRunner", "--project=p"]) == 0
  with open(capsys.readouterr().out.strip().splitlines()[-1]) as f:
    spec = json.load(f)
  spec = spec.get("pipelineSpec", spec)
  tasks = set(spec["root"]["dag"]["tasks"])
  assert {"CrossEncoderTrainer", "BanditPolicyTrainer", "bandit_pusher"} <= tasks
  text = json.dumps(spec).replace("\\", "")  # the configs are JSON inside JSON strings
  assert '"history_scope": "all_training"' in text and '"epochs": 3' in text
  assert "--runner=DataflowRunner" in text and "--project=p" in text


def test_flags_after_a_lone_double_dash_go_to_beam():
  args = local_runner.parse_args(["--data_root", "d", "--", "--runner=DirectRunner",
                                  "--direct_num_workers=2"])
  assert config_from_args(args).beam_pipeline_args == [
      "--runner=DirectRunner", "--direct_num_workers=2"]
  default = config_from_args(local_runner.parse_args(["--data_root", "d"]))
  assert default.beam_pipeline_args == ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def test_a_misspelt_retrieval_setting_fails_before_anything_runs(tmp_path):
  args = local_runner.parse_args(["--data_root", "d", "--retrieval_settings",
                                  '{"item_bais": true}'])
  config = config_from_args(args)
  assert config.retrieval_training == {"item_bais": True}
  with pytest.raises(ValueError, match="item_bais"):
    compile_pipeline(config, "gcr.io/project/recsys:1", str(tmp_path))


def test_the_span_window_is_a_pipeline_parameter_a_schedule_sets(tmp_path, capsys):
  """The compiled job reads the window from pipeline parameters (defaults: the compiled window);
  the Vertex AI SDK builds the scheduled job from the spec offline and refuses a parameter the
  spec does not declare."""
  from google.auth.credentials import AnonymousCredentials

  from kubeflow import schedule
  config = PipelineConfig(data_root="gs://bucket/data", output_root="gs://bucket/out")
  config.span_window, config.max_span_age_days = 28, 90.0
  path = compile_pipeline(config, "gcr.io/project/recsys:1", str(tmp_path))
  with open(path) as f:
    job_spec = json.load(f)
  assert job_spec["runtimeConfig"]["parameters"] == {
      "span_window": {"intValue": "28"}, "max_span_age_days": {"doubleValue": 90.0}}
  example_gen = job_spec["pipelineSpec"]["root"]["dag"]["tasks"]["InteractionExampleGen"]
  assert example_gen["inputs"]["parameters"]["span_window"] == {
      "componentInputParameter": "span_window"}

  job = schedule.pipeline_job(path, "project", "us-central1", {"span_window": 14}, "retrain",
                              AnonymousCredentials())
  assert job.runtime_config.parameters["span_window"].int_value == 14
  assert job.runtime_config.parameters["max_span_age_days"].double_value == 90.0
  with pytest.raises(ValueError, match="span_windw"):
    schedule.pipeline_job(path, "project", "us-central1", {"span_windw": 14}, "retrain",
                          AnonymousCredentials())
  assert schedule.main(["--pipeline_file", path, "--cron", "0 3 * * *", "--project", "project",
                        "--region", "us-central1", "--span_window", "7", "--dry_run"]) == 0
  plan = json.loads(capsys.readouterr().out)
  assert plan["cron"] == "0 3 * * *" and plan["max_concurrent_run_count"] == 1
  assert plan["parameters"] == {"span_window": 7, "max_span_age_days": 90.0}
