"""The pipeline: ingest -> validate -> transform -> train -> evaluate -> bless -> push, for the
candidate sources (the two-tower retriever, the item-to-item source, popularity), the ranker
that orders their union, and (when configured) the cross-encoder that re-ranks search results
and the bandit policy that chooses the shown slate.

Runner-agnostic: `pipeline/runners/` runs it locally, `kubeflow/` compiles it for Kubeflow.
Model code is reached only through module strings (`run_fn`, `preprocessing_fn`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import List, Optional

from tfx import v1 as tfx
from tfx.dsl.components.base.base_node import BaseNode
from tfx.orchestration import metadata

from agents.policy_trainer import REPORT_HTML as BANDIT_REPORT_HTML
from agents.policy_trainer import REPORT_JSON as BANDIT_REPORT_JSON
from pipeline.components import cross_encoder_evaluator, ranker_evaluator, retrieval_evaluator
from pipeline.components.bandit_policy_trainer import BanditPolicyTrainer
from pipeline.components.blessed_models import (latest_blessed_before_candidate,
                                                 latest_blessed_before_examples)
from pipeline.components.content_embedder import ContentEmbedder
from pipeline.components.cross_encoder_evaluator import CrossEncoderEvaluator
from pipeline.components.cross_encoder_miner import CrossEncoderMiner
from pipeline.components.interaction_example_gen import (RowPolicy, SplitSettings,
                                                         interaction_example_gen)
from pipeline.components.item_to_item_trainer import ItemToItemTrainer
from pipeline.components.popularity_baseline import PopularityBaseline
from pipeline.components.ranker_evaluator import RankerEvaluator
from pipeline.components.ranker_trainer import RankerTrainer
from pipeline.components.ranking_list_miner import RankingListMiner
from pipeline.components.retrieval_evaluator import RetrievalEvaluator
from pipeline.components.retrieval_trainer import RetrievalTrainer
from pipeline.components.serving_pusher import pusher_id, serving_root_pusher
from pipeline.components.validation_gate import ValidationGate
from pipeline.config import CrossEncoderStage, PipelineConfig, RankingStage
from pipeline.evaluation.report import EvaluationReport
from pipeline.components import drift
from pipeline.data import contract, rating_scale
from pipeline.data.examples import EVAL, TRAIN
from serving.models_config import (BANDIT, CROSS_ENCODER, ITEM_TO_ITEM, POPULARITY, RANKER,
                                   RETRIEVAL)
from trainer.cross_encoder import groups
from trainer.item_to_item.model import ItemToItemSettings
from trainer.ranker.trainer import RankerSettings
from trainer.retrieval.trainer import FOLD_EPOCHS, HELD_OUT_FOLDS, RetrievalSettings
from transform.features import held_out_folds

PREPROCESSING_FN = "transform.preprocessing.preprocessing_fn"
RETRIEVAL_RUN_FN = "trainer.retrieval.trainer.run_fn"
FOLD_RETRIEVAL_RUN_FN = "trainer.retrieval.trainer.fold_run_fn"
CROSS_ENCODER_RUN_FN = "trainer.cross_encoder.trainer.run_fn"


@dataclasses.dataclass(frozen=True)
class Stage:
  """A model the pipeline trains, judges and pushes, by the ids of its nodes, so the run report
  reads back exactly what the pipeline wired."""
  model_name: str     # serving model name, and the run summary's key for this stage
  trainer_id: str     # the node whose Model output is the candidate
  evaluator_id: str   # the node whose ModelEvaluation and ModelBlessing judge it
  report_json: str    # the evaluator's verdict in its ModelEvaluation artifact
  report_html: str
  # How the run report shows its metrics (None: the stage reports its own way, the bandit).
  report: Optional[EvaluationReport] = None
  blessing_key: str = "blessing"  # the evaluator's output that holds this model's blessing
  gate_flags: str = ""  # the flags that set its blessing gate, named when it is not blessed

  @property
  def pusher_id(self) -> str:
    return pusher_id(self.model_name)


def _evaluated_stage(model_name: str, trainer_id: str, evaluator_id: str,
                     report: EvaluationReport, gate_flags: str,
                     blessing_key: str = "blessing") -> Stage:
  return Stage(model_name, trainer_id, evaluator_id, report.json_name, report.html_name, report,
               blessing_key, gate_flags)


RETRIEVAL_STAGE = _evaluated_stage(RETRIEVAL, "Trainer", "RetrievalEvaluator",
                                   retrieval_evaluator.REPORT,
                                   "--gate_metrics / --regression_tolerance")
# The item-to-item source is judged by the cascade's evaluator, on the users' whole histories.
ITEM_TO_ITEM_STAGE = _evaluated_stage(ITEM_TO_ITEM, "ItemToItemTrainer", "RankerEvaluator",
                                      ranker_evaluator.ITEM_TO_ITEM_REPORT,
                                      "--ranker_gate_metrics",
                                      ranker_evaluator.ITEM_TO_ITEM_BLESSING)
RANKER_STAGE = _evaluated_stage(RANKER, "RankerTrainer", "RankerEvaluator",
                                ranker_evaluator.REPORT,
                                "--ranker_gate_metrics / --ranker_gate_share")
CROSS_ENCODER_STAGE = _evaluated_stage(CROSS_ENCODER, "CrossEncoderTrainer",
                                       "CrossEncoderEvaluator", cross_encoder_evaluator.REPORT,
                                       "--cross_encoder_gate_slices")
BANDIT_STAGE = Stage(BANDIT, "BanditPolicyTrainer", "BanditPolicyTrainer", BANDIT_REPORT_JSON,
                     BANDIT_REPORT_HTML)


ALL_STAGES = (RETRIEVAL_STAGE, ITEM_TO_ITEM_STAGE, RANKER_STAGE, CROSS_ENCODER_STAGE,
              BANDIT_STAGE)


def stages(config: PipelineConfig) -> List[Stage]:
  """The stages a run with this config has, in pipeline order."""
  return ([RETRIEVAL_STAGE] + ([ITEM_TO_ITEM_STAGE, RANKER_STAGE] if config.ranking else [])
          + ([CROSS_ENCODER_STAGE] if config.cross_encoder else [])
          + ([BANDIT_STAGE] if config.bandit else []))


def _latest_blessed(stage: Stage, candidate: BaseNode, portable: bool) -> tfx.dsl.Resolver:
  """The last model of this stage's trainer that this stage's evaluator blessed, other than
  this run's candidate (so an identical re-run is cached, pipeline/components/
  blessed_models.py): resolved after the trainer, whose newest model the candidate is.
  `portable`: TFX's own strategy, the only one Kubeflow V2 compiles."""
  resolver = latest_blessed_before_candidate(
      stage.trainer_id, stage.evaluator_id, stage.blessing_key,
      f"latest_blessed_{stage.model_name}_resolver", portable)
  resolver.add_upstream_node(candidate)
  return resolver


def ranking_components(stage: RankingStage, config: PipelineConfig, validation_gate: BaseNode,
                       transform, trainer, retrieval_blessing: tfx.dsl.Channel, schema,
                       examples: tfx.dsl.Channel, popularity: tfx.dsl.Channel,
                       retrieval_settings: dict, content: Optional[tfx.dsl.Channel],
                       portable: bool = False) -> List[BaseNode]:
  """The item-to-item source, the fold models, the list miner, the ranker, their evaluators
  and pushers."""
  folds = held_out_folds(config.history_scope, stage.folds)
  ItemToItemSettings.from_config(stage.item_to_item)  # misspelt settings fail now
  RankerSettings.from_config(stage.training)
  fold_trainer = RetrievalTrainer(
      run_fn=FOLD_RETRIEVAL_RUN_FN,
      examples=transform.outputs["transformed_examples"],
      transform_graph=transform.outputs["transform_graph"], schema=schema,
      train_args=tfx.proto.TrainArgs(splits=[TRAIN]), eval_args=tfx.proto.EvalArgs(splits=[EVAL]),
      custom_config={**retrieval_settings, HELD_OUT_FOLDS: list(folds),
                     FOLD_EPOCHS: stage.fold_epochs}, content=content,
  ).with_id("FoldRetrievalTrainer")
  item_to_item = ItemToItemTrainer(
      examples=examples, settings=json.dumps(stage.item_to_item, sort_keys=True),
      folds=len(folds)).with_id(ITEM_TO_ITEM_STAGE.trainer_id)
  item_to_item.add_upstream_node(validation_gate)  # nothing trains on data with anomalies
  miner = RankingListMiner(
      examples=examples, fold_retrieval_model=fold_trainer.outputs["model"],
      item_to_item_model=item_to_item.outputs["model"],
      held_out_folds=",".join(map(str, folds)),
      candidates_per_source=stage.candidates_per_source,
      validation_share=stage.validation_share, gate_share=stage.gate_share, seed=stage.seed)
  base_nodes: List[BaseNode] = []
  if config.warm_start:
    base_nodes = [latest_blessed_before_examples(
        RANKER_STAGE.trainer_id, RANKER_STAGE.evaluator_id, RANKER_STAGE.blessing_key,
        examples.producer_component_id, "warm_start_ranker_resolver", portable)]
  ranker = RankerTrainer(
      candidate_lists=miner.outputs["candidate_lists"], retrieval_model=trainer.outputs["model"],
      item_to_item_model=item_to_item.outputs["model"],
      settings=json.dumps(stage.training, sort_keys=True),
      candidates_per_source=stage.candidates_per_source,
      base_model=base_nodes[0].outputs["model"] if base_nodes else None,
  ).with_id(RANKER_STAGE.trainer_id)
  ranker_blessed = _latest_blessed(RANKER_STAGE, ranker, portable)
  evaluator = RankerEvaluator(
      candidate_lists=miner.outputs["candidate_lists"],
      item_to_item_model=item_to_item.outputs["model"], retrieval_blessing=retrieval_blessing,
      model=ranker.outputs["model"], blessed_model=ranker_blessed.outputs["model"],
      gate_metrics=stage.gate_metrics, tolerance=stage.regression_tolerance,
  ).with_id(RANKER_STAGE.evaluator_id)
  return [
      fold_trainer, item_to_item, miner, *base_nodes, ranker, ranker_blessed, evaluator,
      serving_root_pusher(item_to_item.outputs["model"],
                          evaluator.outputs[ranker_evaluator.ITEM_TO_ITEM_BLESSING],
                          config.serving_root, ITEM_TO_ITEM),
      serving_root_pusher(popularity, None, config.serving_root, POPULARITY),
      serving_root_pusher(ranker.outputs["model"], evaluator.outputs["blessing"],
                          config.serving_root, RANKER)]


def cross_encoder_components(stage: CrossEncoderStage, config: PipelineConfig,
                             examples: tfx.dsl.Channel, retrieval_model: tfx.dsl.Channel
                             ) -> List[BaseNode]:
  """Mining (with this run's retriever), the cross-encoder's own Trainer, its evaluator and its
  pusher."""
  miner = CrossEncoderMiner(
      examples=examples, retrieval_model=retrieval_model, data_root=config.data_root,
      train_groups=stage.train_groups, validation_groups=stage.validation_groups,
      eval_groups=stage.eval_groups, hard_negatives=stage.hard_negatives,
      random_negatives=stage.random_negatives, eval_depth=stage.eval_depth, seed=stage.seed)
  trainer = tfx.components.Trainer(
      run_fn=CROSS_ENCODER_RUN_FN,
      examples=miner.outputs["groups"],
      train_args=tfx.proto.TrainArgs(splits=[groups.TRAIN]),
      eval_args=tfx.proto.EvalArgs(splits=[groups.VALIDATION]),
      # The `rerank` signature is as wide as the depth the model is evaluated at.
      custom_config={**stage.training, "rerank_depth": stage.eval_depth},
  ).with_id(CROSS_ENCODER_STAGE.trainer_id)
  evaluator = CrossEncoderEvaluator(
      groups=miner.outputs["groups"], model=trainer.outputs["model"],
      gate_metrics=stage.gate_metrics, gate_slices=stage.gate_slices,
  ).with_id(CROSS_ENCODER_STAGE.evaluator_id)
  pusher = serving_root_pusher(trainer.outputs["model"], evaluator.outputs["blessing"],
                               config.serving_root, CROSS_ENCODER_STAGE.model_name)
  return [miner, trainer, evaluator, pusher]


def create_components(config: PipelineConfig, portable: bool = False) -> List[BaseNode]:
  """The components in execution order; `portable`: only what Kubeflow V2 compiles."""
  example_gen = interaction_example_gen(config.data_root, SplitSettings(
      eval_fraction=config.eval_fraction, history_scope=config.history_scope,
      eval_split=config.eval_split, folds=config.ranking.folds if config.ranking else 0),
      RowPolicy(invalid_rows=config.invalid_rows, max_invalid_share=config.max_invalid_share,
                max_clock_skew_s=config.max_clock_skew_s), config.window,
      runtime_window=portable)
  # The configured rating scale, written into a copy of the schema (rating_scale.py).
  schema_path = rating_scale.schema_with_rating_scale(
      config.schema_path, config.rating_scale, os.path.join(config.pipeline_root, "_schemas"))
  scale = rating_scale.schema_rating_scale(schema_path)
  statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"],
                                                stats_options=drift.STATS_OPTIONS)
  schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path)
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
  validation_gate = ValidationGate(
      statistics=statistics_gen.outputs["statistics"],
      anomalies=example_validator.outputs["anomalies"], schema=schema_gen.outputs["schema"],
      data_root=config.data_root, runs_dir=config.runs_dir,
      rating_scale=contract.format_scale(scale) if scale else "",
      drift_features=config.drift_features, drift_threshold=config.drift_threshold,
      drift_min_span_rows=config.drift_min_span_rows)

  transform = tfx.components.Transform(
      examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
      preprocessing_fn=PREPROCESSING_FN,
      splits_config=tfx.proto.SplitsConfig(analyze=[TRAIN], transform=[TRAIN, EVAL]))
  transform.add_upstream_node(validation_gate)  # anomalies stop the run before Transform

  retrieval_settings = {**config.retrieval_training, "top_k": config.top_k}
  RetrievalSettings.from_config(retrieval_settings)  # a misspelt setting fails now, not later
  content_nodes: List[BaseNode] = []
  content = None
  if config.content:
    embedder = ContentEmbedder(examples=example_gen.outputs["examples"],
                               data_root=config.data_root)
    embedder.add_upstream_node(validation_gate)  # nothing is embedded from data with anomalies
    content_nodes, content = [embedder], embedder.outputs["embeddings"]
  base_nodes: List[BaseNode] = []
  if config.warm_start:
    base_nodes = [latest_blessed_before_examples(
        RETRIEVAL_STAGE.trainer_id, RETRIEVAL_STAGE.evaluator_id, RETRIEVAL_STAGE.blessing_key,
        example_gen.id, "warm_start_retrieval_resolver", portable)]
  trainer = RetrievalTrainer(
      run_fn=RETRIEVAL_RUN_FN,
      examples=transform.outputs["transformed_examples"],
      transform_graph=transform.outputs["transform_graph"],
      schema=schema_gen.outputs["schema"],
      train_args=tfx.proto.TrainArgs(splits=[TRAIN]),
      eval_args=tfx.proto.EvalArgs(splits=[EVAL]),
      custom_config=retrieval_settings, content=content,
      base_model=base_nodes[0].outputs["model"] if base_nodes else None,
  ).with_id(RETRIEVAL_STAGE.trainer_id)
  popularity = PopularityBaseline(examples=example_gen.outputs["examples"], top_k=config.top_k)
  popularity.add_upstream_node(validation_gate)

  last_blessed = _latest_blessed(RETRIEVAL_STAGE, trainer, portable)
  evaluator = RetrievalEvaluator(
      examples=example_gen.outputs["examples"], model=trainer.outputs["model"],
      baseline_model=popularity.outputs["model"],
      blessed_model=last_blessed.outputs["model"],
      gate_metrics=config.gate_metrics, tolerance=config.regression_tolerance
  ).with_id(RETRIEVAL_STAGE.evaluator_id)
  pusher = serving_root_pusher(trainer.outputs["model"], evaluator.outputs["blessing"],
                               config.serving_root, RETRIEVAL_STAGE.model_name)
  components = [example_gen, statistics_gen, schema_gen, example_validator, validation_gate,
                transform, *content_nodes, *base_nodes, trainer, popularity, last_blessed, evaluator, pusher]
  if config.ranking is not None:
    components += ranking_components(config.ranking, config, validation_gate, transform, trainer,
                                     evaluator.outputs["blessing"], schema_gen.outputs["schema"],
                                     example_gen.outputs["examples"],
                                     popularity.outputs["model"], retrieval_settings, content,
                                     portable)
  if config.cross_encoder is not None:
    components += cross_encoder_components(config.cross_encoder, config,
                                           example_gen.outputs["examples"],
                                           trainer.outputs["model"])
  if config.bandit:
    bandit = BanditPolicyTrainer(
        examples=example_gen.outputs["examples"], retrieval_model=trainer.outputs["model"],
        retrieval_blessing=evaluator.outputs["blessing"], data_root=config.data_root,
    ).with_id(BANDIT_STAGE.evaluator_id)
    bandit.add_upstream_node(components[-1])  # after the cross-encoder (or retrieval) push
    components += [bandit, serving_root_pusher(bandit.outputs["model"],
                                               bandit.outputs["blessing"], config.serving_root,
                                               BANDIT_STAGE.model_name)]
  return components


def create_pipeline(config: PipelineConfig, local_metadata: bool = True) -> tfx.dsl.Pipeline:
  """The pipeline; with local_metadata, MLMD is a SQLite file under the output root (on
  Kubeflow the cluster provides MLMD)."""
  return tfx.dsl.Pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=config.pipeline_root,
      components=create_components(config, portable=not local_metadata),
      enable_cache=config.enable_cache,
      metadata_connection_config=(metadata.sqlite_metadata_connection_config(
          config.metadata_path) if local_metadata else None),
      beam_pipeline_args=config.beam_pipeline_args)
