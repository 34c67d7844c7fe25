"""The pipeline: ingest -> validate -> transform -> train -> evaluate -> bless -> push, for the
retriever and (when configured) the cross-encoder that re-orders its candidates and the bandit
policy that chooses the shown slate.

Runner-agnostic: `pipeline/runners/` runs it locally, `kubeflow/` compiles it for Kubeflow.
Model code is reached only through module strings (`run_fn`, `preprocessing_fn`).
"""
from __future__ import annotations

import dataclasses
from typing import List

from tfx import v1 as tfx
from tfx.dsl.components.base.base_node import BaseNode
from tfx.orchestration import metadata

from agents.policy_trainer import REPORT_HTML as BANDIT_REPORT_HTML
from agents.policy_trainer import REPORT_JSON as BANDIT_REPORT_JSON
from pipeline.components import cross_encoder_evaluator, retrieval_evaluator
from pipeline.components.bandit_policy_trainer import BanditPolicyTrainer
from pipeline.components.cross_encoder_evaluator import CrossEncoderEvaluator
from pipeline.components.cross_encoder_miner import CrossEncoderMiner
from pipeline.components.interaction_example_gen import interaction_example_gen
from pipeline.components.popularity_baseline import PopularityBaseline
from pipeline.components.retrieval_evaluator import RetrievalEvaluator
from pipeline.components.serving_pusher import pusher_id, serving_root_pusher
from pipeline.components.validation_gate import ValidationGate
from pipeline.config import CrossEncoderStage, PipelineConfig
from pipeline.data.examples import EVAL, TRAIN
from serving.models_config import BANDIT, CROSS_ENCODER, RETRIEVAL
from trainer.cross_encoder import groups
from trainer.retrieval.trainer import RetrievalSettings

PREPROCESSING_FN = "transform.preprocessing.preprocessing_fn"
RETRIEVAL_RUN_FN = "trainer.retrieval.trainer.run_fn"
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

  @property
  def pusher_id(self) -> str:
    return pusher_id(self.model_name)


RETRIEVAL_STAGE = Stage(RETRIEVAL, "Trainer", "RetrievalEvaluator",
                        retrieval_evaluator.REPORT.json_name, retrieval_evaluator.REPORT.html_name)
CROSS_ENCODER_STAGE = Stage(CROSS_ENCODER, "CrossEncoderTrainer", "CrossEncoderEvaluator",
                            cross_encoder_evaluator.REPORT.json_name,
                            cross_encoder_evaluator.REPORT.html_name)
BANDIT_STAGE = Stage(BANDIT, "BanditPolicyTrainer", "BanditPolicyTrainer", BANDIT_REPORT_JSON,
                     BANDIT_REPORT_HTML)


def stages(config: PipelineConfig) -> List[Stage]:
  """The stages a run with this config has, in pipeline order."""
  return ([RETRIEVAL_STAGE] + ([CROSS_ENCODER_STAGE] if config.cross_encoder else [])
          + ([BANDIT_STAGE] if config.bandit else []))


def cross_encoder_components(stage: CrossEncoderStage, config: PipelineConfig,
                             examples: tfx.dsl.Channel, retrieval_model: tfx.dsl.Channel
                             ) -> List[BaseNode]:
  """Mining (with this run's retriever), the cross-encoder's own Trainer, its evaluator and its
  pusher."""
  miner = CrossEncoderMiner(
      examples=examples, retrieval_model=retrieval_model, data_root=config.data_root,
      train_groups=stage.train_groups, validation_groups=stage.validation_groups,
      eval_groups=stage.eval_groups, hard_negatives=stage.hard_negatives,
      random_negatives=stage.random_negatives, eval_depth=stage.eval_depth,
      search_fraction=stage.search_fraction, seed=stage.seed)
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
  RetrievalSettings.from_config(retrieval_settings)  # a misspelt setting fails now, not later
  trainer = tfx.components.Trainer(
      run_fn=RETRIEVAL_RUN_FN,
      examples=transform.outputs["transformed_examples"],
      transform_graph=transform.outputs["transform_graph"],
      schema=schema_gen.outputs["schema"],
      train_args=tfx.proto.TrainArgs(splits=[TRAIN]),
      eval_args=tfx.proto.EvalArgs(splits=[EVAL]),
      custom_config=retrieval_settings
  ).with_id(RETRIEVAL_STAGE.trainer_id)
  popularity = PopularityBaseline(examples=example_gen.outputs["examples"], top_k=config.top_k)
  popularity.add_upstream_node(validation_gate)

  # Only the retrieval Trainer's models and the RetrievalEvaluator's blessings: a blessed
  # cross-encoder is a Model too, and must never become the retriever's "last blessed model".
  last_blessed = tfx.dsl.Resolver(
      strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
      model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model,
                            producer_component_id=RETRIEVAL_STAGE.trainer_id,
                            output_key="model"),
      model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing,
                                     producer_component_id=RETRIEVAL_STAGE.evaluator_id,
                                     output_key="blessing"),
  ).with_id("latest_blessed_model_resolver")
  evaluator = RetrievalEvaluator(
      examples=example_gen.outputs["examples"], model=trainer.outputs["model"],
      baseline_model=popularity.outputs["model"],
      blessed_model=last_blessed.outputs["model"],
      gate_metrics=config.gate_metrics, tolerance=config.regression_tolerance
  ).with_id(RETRIEVAL_STAGE.evaluator_id)
  pusher = serving_root_pusher(trainer.outputs["model"], evaluator.outputs["blessing"],
                               config.serving_root, RETRIEVAL_STAGE.model_name)
  components = [example_gen, statistics_gen, schema_gen, example_validator, validation_gate,
                transform, trainer, popularity, last_blessed, evaluator, pusher]
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
      components=create_components(config),
      enable_cache=config.enable_cache,
      metadata_connection_config=(metadata.sqlite_metadata_connection_config(
          config.metadata_path) if local_metadata else None),
      beam_pipeline_args=config.beam_pipeline_args)
