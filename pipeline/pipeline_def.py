"""The pipeline: ingest -> validate -> transform -> train -> evaluate -> bless -> push.

Runner-agnostic: `pipeline/runners/` runs it locally, `kubeflow/` compiles it for Kubeflow.
"""
from __future__ import annotations

from typing import List

from tfx import v1 as tfx
from tfx.dsl.components.base.base_node import BaseNode
from tfx.orchestration import metadata

from pipeline.components.interaction_example_gen import TRAIN, EVAL, interaction_example_gen
from pipeline.components.popularity_baseline import PopularityBaseline
from pipeline.components.retrieval_evaluator import RetrievalEvaluator
from pipeline.components.serving_pusher import serving_root_pusher
from pipeline.components.validation_gate import ValidationGate
from pipeline.config import RETRIEVAL_MODEL_NAME, PipelineConfig

PREPROCESSING_FN = "transform.preprocessing.preprocessing_fn"
RETRIEVAL_RUN_FN = "trainer.retrieval_trainer.run_fn"


def create_components(config: PipelineConfig) -> List[BaseNode]:
  """The components in execution order."""
  example_gen = interaction_example_gen(config.data_root, config.eval_fraction)
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

  trainer = tfx.components.Trainer(
      run_fn=RETRIEVAL_RUN_FN,
      examples=transform.outputs["transformed_examples"],
      transform_graph=transform.outputs["transform_graph"],
      schema=schema_gen.outputs["schema"],
      train_args=tfx.proto.TrainArgs(splits=[TRAIN]),
      eval_args=tfx.proto.EvalArgs(splits=[EVAL]),
      custom_config={**config.retrieval_training, "top_k": config.top_k})
  popularity = PopularityBaseline(examples=example_gen.outputs["examples"], top_k=config.top_k)
  popularity.add_upstream_node(validation_gate)

  last_blessed = tfx.dsl.Resolver(
      strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
      model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
      model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
  ).with_id("latest_blessed_model_resolver")
  evaluator = RetrievalEvaluator(
      examples=example_gen.outputs["examples"], model=trainer.outputs["model"],
      baseline_model=popularity.outputs["model"],
      blessed_model=last_blessed.outputs["model"],
      gate_metrics=config.gate_metrics, tolerance=config.regression_tolerance)
  pusher = serving_root_pusher(trainer.outputs["model"], evaluator.outputs["blessing"],
                               config.serving_root, RETRIEVAL_MODEL_NAME)
  return [example_gen, statistics_gen, schema_gen, example_validator, validation_gate, transform,
          trainer, popularity, last_blessed, evaluator, pusher]


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
