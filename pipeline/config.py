"""Everything a run can be configured with, in one dataclass, with the defaults of the demo.

Paths go through tf.io.gfile, so `output_root` and `data_root` may be gs:// or hdfs:// paths;
`beam_pipeline_args` pass straight to every Beam-based component (DirectRunner locally,
Dataflow, Flink or Spark by configuration).
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from pipeline.data.contract import CURATED_SCHEMA
from transform.features import HISTORY_ALL_TRAINING

if TYPE_CHECKING:
  from pipeline.data.spans import SpanWindow

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
  # Eval groups: the retriever's top-N; the exported `rerank` signature is this wide, so the
  # cascade re-ranks this many search results.
  eval_depth: int = 20
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
class RankingStage:
  """The recommendation ranking stage: fold sources, list mining, the ranker, its evaluation
  and push (and the item-to-item source it needs, which is pushed too).

  The defaults are the ones measured on MovieLens-100K under the Microsoft Recommenders
  protocol, with every choice made on validation inside the training part (README, Benchmarks).
  """
  # Training folds held out in turn: each fold's lists come from sources fit without it (4 folds
  # gave more, and better, lists than one holdout). Sequences hold out only their latest fold.
  folds: int = 4
  # Epochs of each fold's two-tower model (0 = the retrieval model's). 3: on MovieLens-100K
  # every fold model's validation top-10 hit rate peaked at epoch 2 or 3 of 8, and the fold
  # models are most of the stage's cost.
  fold_epochs: int = 3
  # Every source's top-N forms the candidate union the ranker orders.
  candidates_per_source: int = 100
  # Shares of users whose lists only stop training early and choose the ensemble (validation),
  # and only decide the blessings (gate).
  validation_share: float = 0.1
  gate_share: float = 0.15
  seed: int = 42
  # Settings of trainer/item_to_item/model.py (ItemToItemSettings): ease_lambda, neighbours...
  item_to_item: Dict[str, Any] = dataclasses.field(default_factory=dict)
  # Settings of trainer/ranker/trainer.py (RankerSettings): loss, scorers, max_epochs...
  training: Dict[str, Any] = dataclasses.field(default_factory=dict)
  # The cascade must beat every single source on these, and the last blessed ranker within
  # the tolerance.
  gate_metrics: str = "map,ndcg@10"
  regression_tolerance: float = 0.005


@dataclasses.dataclass
class PipelineConfig:
  data_root: str
  output_root: str = os.path.join(REPO_ROOT, "outputs")
  pipeline_name: str = "recsys"
  schema_path: str = CURATED_SCHEMA
  # The rating scale (min, max) ratings are validated against; None = the schema's own (the
  # curated schema's is 0.5-5, MovieLens' half stars). Retrieval does not learn from the value.
  rating_scale: Optional[Tuple[float, float]] = None
  # Bad rows (unparseable, a timestamp in the future, an unknown item, a duplicate id): every one
  # is found and reported in one pass, then "halt" stops the run, "skip" drops them (counted,
  # reported) unless they are more than `max_invalid_share` of the rows read
  # (pipeline/components/interaction_example_gen.py RowPolicy).
  invalid_rows: str = "halt"
  max_invalid_share: float = 0.01
  # A timestamp later than the run's clock plus this many seconds is a bad row (None: no check).
  max_clock_skew_s: Optional[float] = 86400.0
  # Dated spans (pipeline/data/spans.py): a run reads the latest `span_window` interaction spans
  # (0: all), less those more than `max_span_age_days` older than the newest (None: no limit).
  span_window: int = 0
  max_span_age_days: Optional[float] = None
  # Drift (pipeline/components/drift.py): the newest span's distribution of each of `drift_features`
  # against the span before it, by TFDV's L-infinity distance; past `drift_threshold` the run
  # halts before Transform. Spans under `drift_min_span_rows` examples are too few to judge.
  drift_features: str = "item_id"
  drift_threshold: float = 0.5
  drift_min_span_rows: int = 500
  # The fraction of every user's interactions held out as the eval split (it gates the
  # retrieval model and the cross-encoder; the ranker's gate lists come from the training
  # split's folds). Every held-out interaction is lost to the served sources: EASE fit without
  # a random 10% scored 2.4% lower MAP on MovieLens-100K's protocol split, without 5% 1.5%.
  eval_fraction: float = 0.05
  # What each example's history holds: "all_training" (the user's other training items, for
  # logs whose order means nothing, the default) or "earlier" (items from strictly earlier
  # timestamps, for sequences); each pairs with its eval split ("random" / "latest"), see
  # transform/features.py HISTORY_SCOPES and PAIRED_EVAL_SPLIT; "" = the paired one.
  history_scope: str = HISTORY_ALL_TRAINING
  eval_split: str = ""
  # Settings of trainer/retrieval/trainer.py (RetrievalSettings): epochs, batch_size, strategy...
  retrieval_training: Dict[str, Any] = dataclasses.field(default_factory=dict)
  top_k: int = 100
  gate_metrics: str = "recall@100,ndcg@10"
  regression_tolerance: float = 0.01
  # The recommendation ranking stage; None leaves it out (the cascade then shows the retrieval
  # order).
  ranking: Optional[RankingStage] = dataclasses.field(default_factory=RankingStage)
  # The cross-encoder stage (mining, second Trainer, evaluator, pusher); None leaves it out.
  cross_encoder: Optional[CrossEncoderStage] = None
  # The bandit stage (pipeline/components/bandit_policy_trainer.py + its pusher).
  bandit: bool = False
  # The multimodal item tower: the ContentEmbedder embeds the catalog's text and images, the
  # retrieval models (served and fold) fuse them into the candidate tower, and the served one
  # embeds new items from raw content (trainer/retrieval/content_graph.py).
  content: bool = False
  # The retrieval trainer starts from the last blessed retrieval model's weights, the id tables
  # mapped through both runs' vocabularies (trainer/retrieval/warm_start.py), and the ranker
  # from the last blessed ranker's. Off by default: over 8 daily cycles on MovieLens-100K
  # (benchmarks/continuous_training.py) warm runs were never better than cold ones after the
  # first day and were not blessed on 4 of 5, at the same training time.
  warm_start: bool = False
  beam_pipeline_args: List[str] = dataclasses.field(
      default_factory=lambda: ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
  enable_cache: bool = True

  @property
  def window(self) -> SpanWindow:
    from pipeline.data.spans import SpanWindow  # imports TensorFlow: not at --help time
    return SpanWindow(spans=self.span_window, max_age_days=self.max_span_age_days)

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
