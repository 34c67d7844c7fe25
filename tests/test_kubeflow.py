"""The pipeline compiles for Kubeflow Pipelines v2 with TFX's own compiler."""
import json

from kubeflow.kubeflow_v2_runner import compile_pipeline
from pipeline.config import PipelineConfig


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
