"""RetrievalTrainer: TFX's Trainer with one more, optional input, the catalog's content
embeddings (the ContentEmbedder's), for the multimodal two-tower model; its `base_model` (the
last blessed model, for the warm start) is TFX's own.

TFX's Trainer passes a run_fn only the inputs it knows (examples, transform graph, schema, base
model, hyperparameters). This one is the same component (same spec, same GenericExecutor, same
FnArgs) with a `content` channel; its executor hands the artifact's uri to the run_fn in
`custom_config[content.CONTENT_URI]`, so the content is an input artifact: tracked by MLMD,
part of the cache key, and resolved by whatever orchestrator runs the pipeline.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import trainer_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import json_utils

from pipeline.components.artifacts import ContentEmbeddings
from trainer.retrieval.content import CONTENT_URI

CONTENT_KEY = "content"


class RetrievalTrainerSpec(standard_component_specs.TrainerSpec):
  INPUTS = {**standard_component_specs.TrainerSpec.INPUTS,
            CONTENT_KEY: ChannelParameter(type=ContentEmbeddings, optional=True)}


class Executor(trainer_executor.GenericExecutor):
  """GenericExecutor, with the content artifact's uri added to the run_fn's custom_config."""

  def _GetFnArgs(self, input_dict: Dict[str, List[types.Artifact]],
                 output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]):
    fn_args = super()._GetFnArgs(input_dict, output_dict, exec_properties)
    content = input_dict.get(CONTENT_KEY)
    if content:
      fn_args.custom_config = {**(fn_args.custom_config or {}), CONTENT_URI: content[0].uri}
    return fn_args


class RetrievalTrainer(base_component.BaseComponent):
  """Trains a run_fn on transformed examples (and, when given, the content embeddings)."""

  SPEC_CLASS = RetrievalTrainerSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

  def __init__(self, run_fn: str, examples: types.BaseChannel,
               transform_graph: types.BaseChannel, schema: types.BaseChannel,
               train_args: trainer_pb2.TrainArgs, eval_args: trainer_pb2.EvalArgs,
               custom_config: Dict[str, Any],
               content: Optional[types.BaseChannel] = None,
               base_model: Optional[types.BaseChannel] = None):
    super().__init__(spec=RetrievalTrainerSpec(
        examples=examples, transform_graph=transform_graph, schema=schema,
        base_model=base_model,
        train_args=train_args, eval_args=eval_args, run_fn=run_fn,
        custom_config=json_utils.dumps(custom_config), content=content,
        model=types.Channel(type=standard_artifacts.Model),
        model_run=types.Channel(type=standard_artifacts.ModelRun)))
