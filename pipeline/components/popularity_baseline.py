"""Counts item popularity over the train split in Beam and exports the baseline SavedModel."""

import json
import os

import apache_beam as beam
import tensorflow as tf
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from pipeline.components.artifacts import serving_model_dir
from pipeline.data.examples import decode_example, first
from trainer.retrieval.popularity import export_popularity_model
from transform import features as F


def _item_id(serialized: bytes) -> str:
  return first(decode_example(serialized), F.ITEM_ID, "")


@tfx.dsl.components.component(use_beam=True)
def PopularityBaseline(  # pylint: disable=invalid-name
    examples: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    model: tfx.dsl.components.OutputArtifact[standard_artifacts.Model],
    top_k: tfx.dsl.components.Parameter[int] = 100,
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
  """Keeps the top_k + MAX_HISTORY most frequent items, so exclusions still leave top_k."""
  counts_path = os.path.join(model.uri, "item_counts")
  keep = top_k + F.MAX_HISTORY
  with beam_pipeline as p:
    _ = (p
         | "ReadTrain" >> beam.io.ReadFromTFRecord(os.path.join(examples.uri, "Split-train", "*"))
         | "ItemId" >> beam.Map(_item_id)
         | "Count" >> beam.combiners.Count.PerElement()
         | "Top" >> beam.combiners.Top.Of(keep, key=lambda kv: (kv[1], kv[0]))
         | "Json" >> beam.Map(json.dumps)
         | "Write" >> beam.io.WriteToText(counts_path, shard_name_template=""))
  with tf.io.gfile.GFile(counts_path) as f:
    top = json.loads(f.read())
  export_popularity_model([item for item, _ in top], [count for _, count in top], top_k,
                          serving_model_dir(model))
