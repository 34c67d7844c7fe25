"""Submits the compiled pipeline as a recurring run: a Vertex AI Pipelines schedule.

    python -m kubeflow.kubeflow_v2_runner --image IMAGE --data_root gs://... --output_root gs://...
    python -m kubeflow.schedule --pipeline_file pipeline.json --cron "0 3 * * *" \
        --project PROJECT --region us-central1 [--span_window 28] [--max_span_age_days 90] \
        [--service_account SA] [--display_name recsys-retrain] [--dry_run]

The compiled spec has the span window as pipeline parameters (`span_window`, `max_span_age_days`;
their defaults are the window the pipeline was compiled with, an age below 0 is no limit); a
schedule may set them. At most one run of the schedule runs at a time (the local cycle's lock),
and a run whose inputs are unchanged is served from Vertex's cache. `--dry_run` builds the job
(the Vertex SDK checks the parameters against the spec) and prints what it would schedule,
without calling Google Cloud. Credentials are Application Default Credentials.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional


def parse_args(argv: List[str]) -> argparse.Namespace:
  """The Vertex AI SDK and the pipeline's components (TFX, TensorFlow) are imported inside the
  functions that need them, after this, so that --help and a bad flag answer at once."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--pipeline_file", required=True,
                      help="the JSON kubeflow.kubeflow_v2_runner wrote")
  parser.add_argument("--cron", required=True,
                      help='when runs start, a cron expression ("0 3 * * *": 03:00 UTC daily; '
                           'a "TZ=Europe/Berlin " prefix sets the time zone)')
  parser.add_argument("--project", required=True, help="Google Cloud project")
  parser.add_argument("--region", required=True, help="Vertex AI region, e.g. us-central1")
  parser.add_argument("--display_name", default="recsys-retrain",
                      help="the schedule's name, and its runs' (default %(default)s)")
  parser.add_argument("--span_window", type=int, default=None,
                      help="interaction spans each run reads (0: all; default: as compiled)")
  parser.add_argument("--max_span_age_days", type=float, default=None,
                      help="spans older than the newest by more than this are ignored "
                           "(below 0: no limit; default: as compiled)")
  parser.add_argument("--service_account", default=None,
                      help="the service account runs execute as (default: the project's)")
  parser.add_argument("--dry_run", action="store_true",
                      help="build and check the job, print the schedule, submit nothing")
  return parser.parse_args(argv)


def parameter_values(args: argparse.Namespace) -> Dict[str, Any]:
  """The pipeline parameters the schedule sets (the rest keep the compiled defaults)."""
  from pipeline.components.interaction_example_gen import MAX_SPAN_AGE_DAYS, SPAN_WINDOW
  values = {SPAN_WINDOW: args.span_window, MAX_SPAN_AGE_DAYS: args.max_span_age_days}
  return {name: value for name, value in values.items() if value is not None}


def pipeline_job(pipeline_file: str, project: str, region: str, parameters: Dict[str, Any],
                 display_name: str, credentials: Optional[Any] = None):
  """The Vertex AI PipelineJob of the compiled spec, caching on (an unchanged input is not
  re-run); the SDK refuses a parameter the spec does not declare."""
  from google.cloud import aiplatform
  return aiplatform.PipelineJob(display_name=display_name, template_path=pipeline_file,
                                parameter_values=parameters, enable_caching=True,
                                project=project, location=region, credentials=credentials)


def _plain(value) -> Any:
  """A pipeline parameter's value (a Vertex `Value`: one of int, double, string)."""
  return next(getattr(value, field) for field in ("int_value", "double_value", "string_value")
              if field in value)


def main(argv: List[str]) -> int:
  args = parse_args(argv)
  credentials = None  # Application Default Credentials
  if args.dry_run:  # nothing is sent: no credentials needed
    from google.auth.credentials import AnonymousCredentials
    credentials = AnonymousCredentials()
  job = pipeline_job(args.pipeline_file, args.project, args.region, parameter_values(args),
                     args.display_name, credentials)
  plan = {"schedule": args.display_name, "cron": args.cron, "project": args.project,
          "region": args.region, "max_concurrent_run_count": 1,
          "parameters": {name: _plain(value)
                         for name, value in job.runtime_config.parameters.items()},
          "pipeline_root": job.runtime_config.gcs_output_directory}
  if args.dry_run:
    print(json.dumps(plan, indent=2, default=str))
    return 0
  schedule = job.create_schedule(cron=args.cron, display_name=args.display_name,
                                 max_concurrent_run_count=1,
                                 service_account=args.service_account)
  print(f"schedule {schedule.resource_name}: {args.cron}, parameters {plan['parameters']}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
