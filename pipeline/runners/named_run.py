"""LocalDagRunner under a run id of our choosing: the run folder's name (`runs/<run id>/`).

TFX names each run itself (`datetime.now().isoformat()`) and hands that id to every executor.
Substituted first with the run folder's name, it is the id the executors see, so a component
that writes into the run folder (ValidationGate) finds it from `runs_dir` and its context
alone, without a per-run exec property (which would be part of the cache key).
"""
from __future__ import annotations

from typing import Optional

from tfx.dsl.compiler import constants
from tfx.orchestration.local.local_dag_runner import LocalDagRunner
from tfx.orchestration.portable import runtime_parameter_utils
from tfx.proto.orchestration import pipeline_pb2


class NamedRunDagRunner(LocalDagRunner):
  """LocalDagRunner whose pipeline run id is `run_id`."""

  def __init__(self, run_id: str):
    super().__init__()
    self._run_id = run_id

  def run_with_ir(self, pipeline: pipeline_pb2.Pipeline,
                  run_options: Optional[pipeline_pb2.RunOptions] = None) -> None:
    runtime_parameter_utils.substitute_runtime_parameter(
        pipeline, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: self._run_id})
    super().run_with_ir(pipeline, run_options)
