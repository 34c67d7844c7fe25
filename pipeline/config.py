"""Everything a run can be configured with, in one dataclass, with the defaults of the demo.

Paths go through tf.io.gfile, so `output_root` and `data_root` may be gs:// or hdfs:// paths;
`beam_pipeline_args` pass straight to every Beam-based component (DirectRunner locally,
Dataflow, Flink or Spark by configuration).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SCHEMA = os.path.join(REPO_ROOT, "pipeline", "schema", "retrieval_schema.pbtxt")
RETRIEVAL_MODEL_NAME = "retrieval"


@dataclasses.dataclass
class PipelineConfig:
  data_root: str
  output_root: str = os.path.join(REPO_ROOT, "outputs")
  pipeline_name: str = "recsys"
  schema_path: str = DEFAULT_SCHEMA
  # The latest fraction of every user's interactions is the eval split.
  eval_fraction: float = 0.1
  # Settings of trainer/retrieval_trainer.py (TrainingSettings): epochs, batch_size, strategy...
  retrieval_training: Dict[str, Any] = dataclasses.field(default_factory=dict)
  top_k: int = 100
  gate_metrics: str = "recall@100,ndcg@10"
  regression_tolerance: float = 0.01
  beam_pipeline_args: List[str] = dataclasses.field(
      default_factory=lambda: ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
  enable_cache: bool = True

  @property
  def pipeline_root(self) -> str:
    return os.path.join(self.output_root, "pipeline_root", self.pipeline_name)

  @property
  def metadata_path(self) -> str:
    return os.path.join(self.output_root, "metadata", f"{self.pipeline_name}.sqlite")

  @property
  def serving_root(self) -> str:
    return os.path.join(self.output_root, "serving")

  @property
  def runs_dir(self) -> str:
    return os.path.join(self.output_root, "runs")
