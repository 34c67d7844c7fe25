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
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.components.evaluator import constants
from tfx.types import standard_artifacts
from tfx_bsl.tfxio import tf_example_record

from pipeline.components.evaluation_report import OVERALL, EvaluationReport, Metrics
from pipeline.components.popularity_baseline import SERVING_DIR
from pipeline.components.retrieval_metrics import RetrievalMetrics, metric_names
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


def _slice_name(slice_key: Tuple) -> str:
  return ", ".join(f"{k}={v.decode() if isinstance(v, bytes) else v}"
                   for k, v in slice_key) or OVERALL


def load_metrics(output_path: str) -> Metrics:
  """TFMA's written metrics as plain nested dicts."""
  metrics: Metrics = {}
  for record in tfma.load_metrics(output_path):
    slice_name = _slice_name(tfma.slicer.deserialize_slice_key(record.slice_key))
    for kv in record.metric_keys_and_values:
      model = kv.key.model_name
      metrics.setdefault(model, {}).setdefault(slice_name, {})[kv.key.name] = (
          kv.value.double_value.value)
  return metrics


def blessing_decision(metrics: Metrics, gate_metrics: Sequence[str], tolerance: float
                      ) -> Tuple[bool, List[str]]:
  """(blessed, reasons): beat popularity on every gate metric, and no regression beyond
  `tolerance` against the last blessed model (when there is one)."""
  reasons, blessed = [], True
  candidate = metrics[CANDIDATE][OVERALL]
  for metric in gate_metrics:
    popularity = metrics[POPULARITY][OVERALL][metric]
    ok = candidate[metric] > popularity
    blessed &= ok
    reasons.append(f"{metric}: {candidate[metric]:.4f} {'>' if ok else '<='} popularity "
                   f"{popularity:.4f}")
    if LAST_BLESSED in metrics:
      previous = metrics[LAST_BLESSED][OVERALL][metric]
      ok = candidate[metric] >= previous - tolerance
      blessed &= ok
      reasons.append(f"{metric}: {candidate[metric]:.4f} {'>=' if ok else '<'} last blessed "
                     f"{previous:.4f} - tolerance {tolerance}")
  return blessed, reasons


REPORT = EvaluationReport("Retrieval evaluation", "retrieval_metrics.json",
                          "retrieval_metrics.html", metric_names(),
                          (CANDIDATE, POPULARITY, LAST_BLESSED))


def write_blessing(blessing: standard_artifacts.ModelBlessing, model: standard_artifacts.Model,
                   blessed: bool) -> None:
  """The same properties and marker file as TFX's Evaluator, so Pusher and the
  latest-blessed-model resolver read it unchanged."""
  blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY,
                                      model.uri)
  blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
  name = constants.BLESSED_FILE_NAME if blessed else constants.NOT_BLESSED_FILE_NAME
  tf.io.gfile.makedirs(blessing.uri)
  with tf.io.gfile.GFile(os.path.join(blessing.uri, name), "w") as f:
    f.write("")
  blessing.set_int_custom_property(
      constants.ARTIFACT_PROPERTY_BLESSED_KEY,
      constants.BLESSED_VALUE if blessed else constants.NOT_BLESSED_VALUE)


def run_tfma(pipeline: beam.Pipeline, eval_pattern: str, model_paths: Mapping[str, str],
             config: tfma.EvalConfig, output_path: str) -> None:
  """One TFMA pass over serialized tf.Examples for every model named in `model_paths`."""
  shared = [tfma.default_eval_shared_model(eval_saved_model_path=path, model_name=name,
                                           eval_config=config)
            for name, path in model_paths.items()]
  source = tf_example_record.TFExampleRecord(file_pattern=eval_pattern,
                                             raw_record_column_name=tfma.ARROW_INPUT_COLUMN)
  with pipeline as p:
    _ = (p
         | "ReadEval" >> source.BeamSource()
         | "TFMA" >> tfma.ExtractEvaluateAndWriteResults(
             eval_shared_model=shared, eval_config=config, output_path=output_path))


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
  model_paths = {CANDIDATE: os.path.join(model.uri, SERVING_DIR),
                 POPULARITY: os.path.join(baseline_model.uri, SERVING_DIR)}
  if blessed_model is not None:
    model_paths[LAST_BLESSED] = os.path.join(blessed_model.uri, SERVING_DIR)
  run_analysis(beam_pipeline, os.path.join(examples.uri, "Split-eval", "*"), model_paths,
               [f for f in slice_features.split(",") if f], evaluation.uri)
  metrics = load_metrics(evaluation.uri)
  blessed, reasons = blessing_decision(metrics, gate_metrics.split(","), tolerance)
  write_blessing(blessing, model, blessed)
  REPORT.publish(evaluation.uri, metrics, blessed, reasons)
