"""Everything a run can be configured with, in one dataclass, with the defaults of the demo.

Paths go through tf.io.gfile, so `output_root` and `data_root` may be gs:// or hdfs:// paths;
`beam_pipeline_args` pass straight to every Beam-based component (DirectRunner locally,
Dataflow, Flink or Spark by configuration).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional

from pipeline.data.contract import CURATED_SCHEMA
from transform.features import HISTORY_EARLIER

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class CrossEncoderStage:
  """The BERT cross-encoder's part of a run: mining, training, evaluation, push.

  The defaults are the CPU budget of the MovieLens demo (a few minutes on 2 cores: a bounded
  sample of query groups, sequences of 64 tokens, one pass); `scaled` grows the sample.
  """
  # Mining (pipeline/components/cross_encoder_miner.py). Query groups per split: train and
  # validation exactly; eval interactions sampled (those whose retrieved candidates hold nothing
  # relevant are dropped).
  train_groups: int = 600
  validation_groups: int = 64
  eval_groups: int = 300
  # Training groups: the chosen item, hard negatives (retriever's top) and random ones.
  hard_negatives: int = 4
  random_negatives: int = 3
  # Eval groups: the retriever's top-N, as the cascade re-ranks them.
  eval_depth: int = 50
  # Share of interactions without a logged query that become SYNTHETIC searches.
  search_fraction: float = 0.5
  seed: int = 42
  # Settings of trainer/cross_encoder/trainer.py (CrossEncoderSettings): checkpoint_dir,
  # num_layers, sequence_length, loss, lora_rank, precision...
  training: Dict[str, Any] = dataclasses.field(default_factory=dict)
  gate_metrics: str = "ndcg@10"
  # Slices the cross-encoder must beat the retrieval order in: "overall", "query_kind=<kind>"
  # (trainer/cross_encoder/groups.py), "query_kind=*" = each kind evaluated.
  gate_slices: str = "overall,query_kind=*"

  def scaled(self, factor: float) -> "CrossEncoderStage":
    """The same stage on `factor` times as many query groups, so as many training steps."""
    size = lambda n: max(1, int(round(n * factor)))  # noqa: E731
    return dataclasses.replace(self, train_groups=size(self.train_groups),
                               validation_groups=size(self.validation_groups),
                               eval_groups=size(self.eval_groups))


@dataclasses.dataclass
class PipelineConfig:
  data_root: str
  output_root: str = os.path.join(REPO_ROOT, "outputs")
  pipeline_name: str = "recsys"
  schema_path: str = CURATED_SCHEMA
  # The latest fraction of every user's interactions is the eval split.
  eval_fraction: float = 0.1
  # What each example's history holds: "earlier" (items from strictly earlier timestamps) or
  # "all_training" (the user's other training items, for logs whose order means nothing); see
  # transform/features.py HISTORY_SCOPES.
  history_scope: str = HISTORY_EARLIER
  # Settings of trainer/retrieval/trainer.py (RetrievalSettings): epochs, batch_size, strategy...
  retrieval_training: Dict[str, Any] = dataclasses.field(default_factory=dict)
  top_k: int = 100
  gate_metrics: str = "recall@100,ndcg@10"
  regression_tolerance: float = 0.01
  # The cross-encoder stage (mining, second Trainer, evaluator, pusher); None leaves it out.
  cross_encoder: Optional[CrossEncoderStage] = None
  # The bandit stage (pipeline/components/bandit_policy_trainer.py + its pusher).
  bandit: bool = False
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
