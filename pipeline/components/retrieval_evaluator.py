"""Evaluates the retrieval model with TFMA beside its baselines and decides the blessing.

One TFMA pass scores three models on the eval split: the candidate, the popularity baseline
trained in the same run, and the last blessed model (if any). TFMA's own validation compares a
candidate with one baseline; blessing here needs two comparisons, so the rule runs on TFMA's
results: the candidate must beat popularity on every gate metric, and must not fall more than
`tolerance` below the last blessed model on any of them.
"""

import os
from typing import List, Mapping, Sequence, Tuple

import apache_beam as beam
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from pipeline.components.artifacts import serving_model_dir
from pipeline.data.examples import EVAL
from pipeline.evaluation.blessing import gate, write_blessing
from pipeline.evaluation.report import EvaluationReport, Metrics
from pipeline.evaluation.tfma_metrics import RetrievalMetrics
from pipeline.evaluation.tfma_runner import load_metrics, run_tfma
from trainer.retrieval.metrics import metric_names
from transform import features as F

CANDIDATE, POPULARITY, LAST_BLESSED = "candidate", "popularity", "last_blessed"


def eval_config(model_names: Sequence[str], slice_features: Sequence[str]) -> tfma.EvalConfig:
  """TFMA config: every model through its `evaluation` signature, sliced by user segment."""
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(name=name, signature_name="evaluation", label_key=F.ITEM_ID)
                   for name in model_names],
      slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[feature])
                                            for feature in slice_features],
      metrics_specs=[tfma.MetricsSpec(
          model_names=list(model_names),
          metrics=[tfma.MetricConfig(class_name=RetrievalMetrics.__name__,
                                     module=RetrievalMetrics.__module__)])])


def blessing_decision(metrics: Metrics, gate_metrics: Sequence[str], tolerance: float
                      ) -> Tuple[bool, List[str]]:
  """Beat popularity on every gate metric, and no regression beyond `tolerance` against the
  last blessed model (when there is one)."""
  return gate(metrics, CANDIDATE, [POPULARITY], LAST_BLESSED, gate_metrics, tolerance)


REPORT = EvaluationReport("Retrieval metrics on the eval split", "retrieval_metrics.json",
                          "retrieval_metrics.html", metric_names(),
                          (CANDIDATE, POPULARITY, LAST_BLESSED))


def run_analysis(pipeline: beam.Pipeline, eval_pattern: str, model_paths: Mapping[str, str],
                 slice_features: Sequence[str], output_path: str) -> None:
  """Runs TFMA over the eval examples for every model, sliced by user segment."""
  run_tfma(pipeline, eval_pattern, model_paths, eval_config(list(model_paths), slice_features),
           output_path)


@tfx.dsl.components.component(use_beam=True)
def RetrievalEvaluator(  # pylint: disable=invalid-name
    examples: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    baseline_model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    evaluation: tfx.dsl.components.OutputArtifact[standard_artifacts.ModelEvaluation],
    blessing: tfx.dsl.components.OutputArtifact[standard_artifacts.ModelBlessing],
    blessed_model: tfx.dsl.components.InputArtifact[standard_artifacts.Model] = None,
    gate_metrics: tfx.dsl.components.Parameter[str] = "recall@100,ndcg@10",
    tolerance: tfx.dsl.components.Parameter[float] = 0.01,
    slice_features: tfx.dsl.components.Parameter[str] = ",".join(F.SLICE_FEATURES),
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
  """TFMA metrics of candidate, popularity and last blessed model; writes the blessing."""
  model_paths = {CANDIDATE: serving_model_dir(model),
                 POPULARITY: serving_model_dir(baseline_model)}
  if blessed_model is not None:
    model_paths[LAST_BLESSED] = serving_model_dir(blessed_model)
  run_analysis(beam_pipeline, os.path.join(examples.uri, f"Split-{EVAL}", "*"), model_paths,
               [f for f in slice_features.split(",") if f], evaluation.uri)
  metrics = load_metrics(evaluation.uri)
  blessed, reasons = blessing_decision(metrics, gate_metrics.split(","), tolerance)
  write_blessing(blessing, model, blessed)
  REPORT.publish(evaluation.uri, metrics, blessed, reasons)
