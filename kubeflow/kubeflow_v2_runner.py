"""Compiles the same pipeline for Kubeflow Pipelines (v2 / Vertex AI Pipelines).

    python -m kubeflow.kubeflow_v2_runner --image IMAGE --data_root gs://... \
        --output_root gs://... [--cross_encoder] [--bandit] [any pipeline flag] \
        [-- --runner=DataflowRunner --project=... (Beam's flags, after a lone --)]

takes the pipeline flags every runner shares (pipeline/flags.py) and writes the pipeline JSON,
`<--output_dir>/pipeline.json` (default the current folder; the path is its one output line),
to submit with the KFP client or Vertex AI (`kubeflow/schedule.py` makes it a recurring run; the
span window is a pipeline parameter). The image is built from kubeflow/Dockerfile and holds this
repository, so every component finds its code.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List

from pipeline.config import PipelineConfig
from pipeline.flags import add_pipeline_arguments, config_from_args, parse_pipeline_args


def compile_pipeline(config: PipelineConfig, image: str, output_dir: str,
                     output_filename: str = "pipeline.json") -> str:
  """Writes the Kubeflow V2 pipeline spec; returns its path. The span window is a pipeline
  parameter; its values in `config` are the job's defaults (kubeflow/schedule.py sets them).
  TFX is imported here, after the flags are parsed, so that `--help` answers at once."""
  os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
  from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

  from pipeline import pipeline_def
  from pipeline.components.interaction_example_gen import window_parameters
  runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
      config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=image),
      output_dir=output_dir, output_filename=output_filename)
  runner.run(pipeline_def.create_pipeline(config, local_metadata=False), write_out=True,
             parameter_values=window_parameters(config.window, runtime=False))
  return os.path.join(output_dir, output_filename)


def main(argv: List[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--image", required=True, help="container image built from kubeflow/Dockerfile")
  parser.add_argument("--data_root", required=True,
                      help="raw data root the pipeline reads (gs://...: the cluster reads it)")
  parser.add_argument("--output_root", required=True,
                      help="pipeline root and serving root (gs://...)")
  parser.add_argument("--output_dir", default=".",
                      help="where pipeline.json, the compiled pipeline, is written (default: "
                           "the current folder)")
  add_pipeline_arguments(parser)
  args = parse_pipeline_args(parser, argv)
  config = config_from_args(args)
  if args.beam_pipeline_args is None:  # the local runner's in-memory default does not fit
    config.beam_pipeline_args = []
  print(compile_pipeline(config, args.image, args.output_dir))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
