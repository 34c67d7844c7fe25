"""The pipeline: ingest -> validate -> transform -> train -> evaluate -> bless -> push, for the
retriever and (when configured) the cross-encoder ranker that re-orders its candidates.

Runner-agnostic: `pipeline/runners/` runs it locally, `kubeflow/` compiles it for Kubeflow.
"""
from __future__ import annotations

from typing import List

from tfx import v1 as tfx
from tfx.dsl.components.base.base_node import BaseNode
from tfx.orchestration import metadata

from pipeline.components.interaction_example_gen import TRAIN, EVAL, interaction_example_gen
from pipeline.components.popularity_baseline import PopularityBaseline
from pipeline.components.ranker_evaluator import RankerEvaluator
from pipeline.components.ranker_mining import RankerExampleMiner
from pipeline.components.retrieval_evaluator import RetrievalEvaluator
from pipeline.components.serving_pusher import serving_root_pusher
from pipeline.components.validation_gate import ValidationGate
from agents.component import BanditPolicyTrainer
from pipeline.config import (BANDIT_MODEL_NAME, RANKER_MODEL_NAME, RETRIEVAL_MODEL_NAME,
                             PipelineConfig, RankerStage)
from trainer import ranker_examples
from trainer.retrieval_trainer import TrainingSettings

PREPROCESSING_FN = "transform.preprocessing.preprocessing_fn"
RETRIEVAL_RUN_FN = "trainer.retrieval_trainer.run_fn"
RANKER_RUN_FN = "trainer.ranker_trainer.run_fn"
RETRIEVAL_TRAINER, RETRIEVAL_EVALUATOR = "Trainer", "RetrievalEvaluator"


def ranker_components(stage: RankerStage, config: PipelineConfig,
                      examples: tfx.dsl.Channel, retrieval_model: tfx.dsl.Channel
                      ) -> List[BaseNode]:
  """Mining (with this run's retriever), the ranker's own Trainer, its evaluator, its pusher."""
  miner = RankerExampleMiner(
      examples=examples, retrieval_model=retrieval_model, data_root=config.data_root,
      train_groups=stage.train_groups, validation_groups=stage.validation_groups,
      eval_groups=stage.eval_groups, hard_negatives=stage.hard_negatives,
      random_negatives=stage.random_negatives, eval_depth=stage.eval_depth,
      search_fraction=stage.search_fraction, seed=stage.seed)
  trainer = tfx.components.Trainer(
      run_fn=RANKER_RUN_FN,
      examples=miner.outputs["groups"],
      train_args=tfx.proto.TrainArgs(splits=[ranker_examples.TRAIN]),
      eval_args=tfx.proto.EvalArgs(splits=[ranker_examples.VALIDATION]),
      custom_config=stage.training).with_id("RankerTrainer")
  evaluator = RankerEvaluator(groups=miner.outputs["groups"], model=trainer.outputs["model"],
                              gate_metrics=stage.gate_metrics, gate_slices=stage.gate_slices)
  pusher = serving_root_pusher(trainer.outputs["model"], evaluator.outputs["blessing"],
                               config.serving_root, RANKER_MODEL_NAME)
  return [miner, trainer, evaluator, pusher]


def create_components(config: PipelineConfig) -> List[BaseNode]:
  """The components in execution order."""
  example_gen = interaction_example_gen(config.data_root, config.eval_fraction,
                                        config.history_scope)
  statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
  schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema_path)
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
  validation_gate = ValidationGate(
      statistics=statistics_gen.outputs["statistics"],
      anomalies=example_validator.outputs["anomalies"], data_root=config.data_root)

  transform = tfx.components.Transform(
      examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
      preprocessing_fn=PREPROCESSING_FN,
      splits_config=tfx.proto.SplitsConfig(analyze=[TRAIN], transform=[TRAIN, EVAL]))
  transform.add_upstream_node(validation_gate)  # anomalies stop the run before Transform

  retrieval_settings = {**config.retrieval_training, "top_k": config.top_k}
  TrainingSettings.from_config(retrieval_settings)  # a misspelt setting fails now, not in the Trainer
  trainer = tfx.components.Trainer(
      run_fn=RETRIEVAL_RUN_FN,
      examples=transform.outputs["transformed_examples"],
      transform_graph=transform.outputs["transform_graph"],
      schema=schema_gen.outputs["schema"],
      train_args=tfx.proto.TrainArgs(splits=[TRAIN]),
      eval_args=tfx.proto.EvalArgs(splits=[EVAL]),
      custom_config=retrieval_settings
  ).with_id(RETRIEVAL_TRAINER)
  popularity = PopularityBaseline(examples=example_gen.outputs["examples"], top_k=config.top_k)
  popularity.add_upstream_node(validation_gate)

  # Only the retrieval Trainer's models and the RetrievalEvaluator's blessings: a blessed ranker
  # is a Model too, and must never become the retriever's "last blessed model".
  last_blessed = tfx.dsl.Resolver(
      strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
      model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model,
                            producer_component_id=RETRIEVAL_TRAINER, output_key="model"),
      model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing,
                                     producer_component_id=RETRIEVAL_EVALUATOR,
                                     output_key="blessing"),
  ).with_id("latest_blessed_model_resolver")
  evaluator = RetrievalEvaluator(
      examples=example_gen.outputs["examples"], model=trainer.outputs["model"],
      baseline_model=popularity.outputs["model"],
      blessed_model=last_blessed.outputs["model"],
      gate_metrics=config.gate_metrics, tolerance=config.regression_tolerance
  ).with_id(RETRIEVAL_EVALUATOR)
  pusher = serving_root_pusher(trainer.outputs["model"], evaluator.outputs["blessing"],
                               config.serving_root, RETRIEVAL_MODEL_NAME)
  components = [example_gen, statistics_gen, schema_gen, example_validator, validation_gate,
                transform, trainer, popularity, last_blessed, evaluator, pusher]
  if config.ranker is not None:
    components += ranker_components(config.ranker, config, example_gen.outputs["examples"],
                                    trainer.outputs["model"])
  if config.bandit:
    bandit = BanditPolicyTrainer(
        examples=example_gen.outputs["examples"], retrieval_model=trainer.outputs["model"],
        retrieval_blessing=evaluator.outputs["blessing"], data_root=config.data_root)
    bandit.add_upstream_node(components[-1])  # after the ranker (or retrieval) push
    components += [bandit, serving_root_pusher(bandit.outputs["model"],
                                               bandit.outputs["blessing"], config.serving_root,
                                               BANDIT_MODEL_NAME)]
  return components


def create_pipeline(config: PipelineConfig, local_metadata: bool = True) -> tfx.dsl.Pipeline:
  """The pipeline; with local_metadata, MLMD is a SQLite file under the output root (on
  Kubeflow the cluster provides MLMD)."""
  return tfx.dsl.Pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=config.pipeline_root,
      components=create_components(config),
      enable_cache=config.enable_cache,
      metadata_connection_config=(metadata.sqlite_metadata_connection_config(
          config.metadata_path) if local_metadata else None),
      beam_pipeline_args=config.beam_pipeline_args)
