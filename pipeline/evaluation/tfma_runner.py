"""One TFMA pass over serialized tf.Examples for several models, and its results read back as
plain nested dicts ({model: {slice: {metric: value}}}), what the blessing rules and reports use."""
from __future__ import annotations

from typing import Mapping, Tuple

import apache_beam as beam
import tensorflow_model_analysis as tfma
from tfx_bsl.tfxio import tf_example_record

from pipeline.evaluation.report import OVERALL, Metrics


def run_tfma(pipeline: beam.Pipeline, eval_pattern: str, model_paths: Mapping[str, str],
             config: tfma.EvalConfig, output_path: str) -> None:
  """Evaluates every model named in `model_paths` (name -> SavedModel dir) in one pass."""
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


def _slice_name(slice_key: Tuple) -> str:
  return ", ".join(f"{k}={v.decode() if isinstance(v, bytes) else v}"
                   for k, v in slice_key) or OVERALL


def load_metrics(output_path: str) -> Metrics:
  """TFMA's written metrics as plain nested dicts."""
  metrics: Metrics = {}
  for record in tfma.load_metrics(output_path):
    slice_name = _slice_name(tfma.slicer.deserialize_slice_key(record.slice_key))
    for kv in record.metric_keys_and_values:
      metrics.setdefault(kv.key.model_name, {}).setdefault(slice_name, {})[kv.key.name] = (
          kv.value.double_value.value)
  return metrics
