"""Evaluates the cross-encoder with TFMA against the retriever's order; decides the blessing.

One TFMA pass over the mined `eval` query groups scores two models: the candidate and
`retrieval_order`, a SavedModel with the same `evaluation` signature that answers with the
retriever's scores stored in each group, i.e. the order the cascade shows without it.
The model is blessed only if it beats that order on every gate metric in every gate slice:
by default overall and in each query kind (`query_kind=*`), because the cascade applies one
model to recommendations and searches alike, and a win on (synthetic) searches must not buy
a loss on recommendations.
"""

import os
from typing import Dict, List, Mapping, Sequence, Tuple

import apache_beam as beam
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from pipeline.components.artifacts import serving_model_dir
from pipeline.evaluation.blessing import FAILED, failure, write_blessing
from pipeline.evaluation.report import EvaluationReport, Metrics
from pipeline.evaluation.tfma_metrics import GroupRankingMetrics
from pipeline.evaluation.tfma_runner import load_metrics, run_tfma
from trainer.cross_encoder import groups as E
from trainer.cross_encoder.metrics import all_metric_names

CANDIDATE, RETRIEVAL_ORDER = "candidate", "retrieval_order"
EVERY_KIND = f"{E.QUERY_KIND}=*"
REPORT = EvaluationReport("Cross-encoder evaluation", "cross_encoder_metrics.json",
                          "cross_encoder_metrics.html", all_metric_names(),
                          (CANDIDATE, RETRIEVAL_ORDER))


class RetrievalOrder(tf.Module):
  """The baseline: each group's candidates scored by the retriever (stored by the miner)."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def evaluate(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
    scores = E.parse_groups(examples)[E.RETRIEVER_SCORES]
    return {"scores": scores.to_tensor(default_value=E.PADDING_SCORE)}


def export_retrieval_order(export_dir: str) -> None:
  module = RetrievalOrder()
  tf.saved_model.save(module, export_dir, signatures={"evaluation": module.evaluate})


def eval_config(model_names: Sequence[str]) -> tfma.EvalConfig:
  """Every model through its `evaluation` signature; overall and per query kind."""
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(name=name, signature_name="evaluation", label_key=E.LABELS)
                   for name in model_names],
      slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[E.QUERY_KIND])],
      metrics_specs=[tfma.MetricsSpec(
          model_names=list(model_names),
          metrics=[tfma.MetricConfig(class_name=GroupRankingMetrics.__name__,
                                     module=GroupRankingMetrics.__module__)])])


def run_analysis(pipeline: beam.Pipeline, eval_pattern: str, model_paths: Mapping[str, str],
                 output_path: str) -> None:
  """One TFMA pass over the eval groups for every model."""
  run_tfma(pipeline, eval_pattern, model_paths, eval_config(list(model_paths)), output_path)


def gate_slice_names(metrics: Metrics, gate_slices: Sequence[str]) -> List[str]:
  """The gate slices, with `query_kind=*` standing for every query kind evaluated."""
  kinds = sorted(s for s in metrics[CANDIDATE] if s.startswith(f"{E.QUERY_KIND}="))
  return [name for pattern in gate_slices
          for name in (kinds if pattern == EVERY_KIND else [pattern])]


def blessing_decision(metrics: Metrics, gate_metrics: Sequence[str], gate_slices: Sequence[str]
                      ) -> Tuple[bool, List[str]]:
  """(blessed, reasons): strictly better than the retrieval order on every gate metric in
  every gate slice; a named gate slice with no groups fails (nothing shows the model helps)."""
  blessed, reasons = True, []
  for slice_name in gate_slice_names(metrics, gate_slices):
    candidate = metrics[CANDIDATE].get(slice_name)
    if not candidate:
      blessed = False
      reasons.append(f"{slice_name}: no evaluation groups: {FAILED}")
      continue
    baseline = metrics[RETRIEVAL_ORDER][slice_name]
    for metric in gate_metrics:
      ok = candidate[metric] > baseline[metric]
      blessed &= ok
      reasons.append(f"{slice_name} {metric}: {candidate[metric]:.4f} {'>' if ok else '<='} "
                     f"retrieval order {baseline[metric]:.4f}"
                     + ("" if ok else failure(candidate[metric], baseline[metric])))
  return blessed, reasons


@tfx.dsl.components.component(use_beam=True)
def CrossEncoderEvaluator(  # pylint: disable=invalid-name
    groups: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    evaluation: tfx.dsl.components.OutputArtifact[standard_artifacts.ModelEvaluation],
    blessing: tfx.dsl.components.OutputArtifact[standard_artifacts.ModelBlessing],
    gate_metrics: tfx.dsl.components.Parameter[str],
    gate_slices: tfx.dsl.components.Parameter[str],
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
  """TFMA metrics of the cross-encoder and the retrieval order per query group; writes the
  blessing.

  `gate_metrics` and `gate_slices` are comma-separated (defaults: pipeline/config.py's
  CrossEncoderStage; required here so that MLMD records them).
  """
  baseline_dir = os.path.join(evaluation.uri, "retrieval_order_model")
  export_retrieval_order(baseline_dir)
  run_analysis(beam_pipeline, os.path.join(groups.uri, f"Split-{E.EVAL}", "*"),
               {CANDIDATE: serving_model_dir(model), RETRIEVAL_ORDER: baseline_dir},
               evaluation.uri)
  metrics = load_metrics(evaluation.uri)
  blessed, reasons = blessing_decision(metrics, gate_metrics.split(","), gate_slices.split(","))
  write_blessing(blessing, model, blessed)
  REPORT.publish(evaluation.uri, metrics, blessed, reasons)
