"""ContentEmbedder: every catalog item's text and image vectors from the frozen content encoders
(`trainer/content/`), in Beam, for the multimodal retrieval tower (`--content`), which reads
them through `RetrievalTrainer`.

The raw `items` table is read through the project's Beam reader (every catalog item, also
those nobody interacted with yet: content is what a cold item has). Items go in batches of
`batch_size` to a DoFn that loads both encoders once per worker (`setup`) and logs its progress
(items embedded / catalog size). An image that does not read (a missing file, a bucket without
access) or does not decode (corrupt bytes, not an image) leaves the run going: the item keeps
its text vector and `has_image` False, and the image is logged and listed in the report by
item id with the error.

Output `embeddings` (a ContentEmbeddings artifact): `embeddings/items-*.tfrecord.gz`, one
tf.Example per item (`item_id`, `text_embedding` [384], `image_embedding` [1280], `has_text`,
`has_image`; a missing modality is zeros with its flag False), and `content_report.json`
(counts: items, with text, with an image_uri, with an image, bad images with item ids and
errors; the encoders' seconds and items/s).

Caching: `examples` is the InteractionExampleGen's output, whose driver fingerprints every file
under `<data_root>/*/*`. An unchanged data root reuses that Examples artifact, so this
component's inputs and parameters are identical and MLMD returns the cached embeddings; a
changed catalog (or any other table: a safe over-approximation) is new examples, and the
catalog is embedded again. Images in a folder of the data root (`images/x.jpg`, what a relative
`image_uri` points into) are in that fingerprint; images elsewhere (another bucket) are not: an
image rewritten in place under the same URI is not embedded again until the catalog changes
(give a new image a new URI).
"""
import json
import os
import time
from typing import Any, Dict, Iterator, List, Union

import apache_beam as beam
import tensorflow as tf
from absl import logging
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from pipeline.components.artifacts import ContentEmbeddings
from pipeline.data import contract
from pipeline.data.beam_io import ReadTable
from trainer.content.embedder import ContentEncoders
from trainer.content.records import REPORT_FILE, ItemContent, embeddings_prefix, to_example
from trainer.content.report import ContentReport, summary

_REPORTS = "reports"
_PROGRESS_SECONDS = 10.0  # a worker logs its progress this often, and on reaching the total


class _EmbedBatches(beam.DoFn):
  """A batch of catalog rows -> its ItemContents, and its report on the `reports` output."""

  def __init__(self, data_root: str):
    super().__init__()
    self._data_root = data_root

  def setup(self) -> None:
    self._encoders = ContentEncoders()
    self._done, self._started, self._logged = 0, time.time(), 0.0

  def process(self, rows: List[Dict[str, Any]], total: int
              ) -> Iterator[Union[ItemContent, beam.pvalue.TaggedOutput]]:
    contents, report = self._encoders.embed(rows, self._data_root)
    for bad in report.listed_bad_images:
      logging.warning("ContentEmbedder: item %s: bad image %s (%s); it keeps its text vector",
                      bad.item_id, bad.image_uri, bad.error)
    self._done += len(rows)
    if time.time() - self._logged >= _PROGRESS_SECONDS or self._done == total:
      self._logged = time.time()
      logging.info("ContentEmbedder: %d / %d items embedded (this worker, %.1f items/s)",
                   self._done, total, self._done / max(self._logged - self._started, 1e-9))
    yield from contents
    yield beam.pvalue.TaggedOutput(_REPORTS, report)


class _MergeReports(beam.CombineFn):
  """The batches' reports -> the run's (ContentReport.add keeps it small: counts and at most
  MAX_LISTED_BAD_IMAGES bad images)."""

  def create_accumulator(self) -> ContentReport:
    return ContentReport()

  def add_input(self, total: ContentReport, report: ContentReport) -> ContentReport:
    return total.add(report)

  def merge_accumulators(self, totals: Iterator[ContentReport]) -> ContentReport:
    merged = ContentReport()
    for total in totals:
      merged.add(total)
    return merged

  def extract_output(self, total: ContentReport) -> ContentReport:
    return total


@tfx.dsl.components.component(use_beam=True)
def ContentEmbedder(  # pylint: disable=invalid-name
    examples: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    embeddings: tfx.dsl.components.OutputArtifact[ContentEmbeddings],
    data_root: tfx.dsl.components.Parameter[str],
    batch_size: tfx.dsl.components.Parameter[int] = 32,
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
  """`examples`: the InteractionExampleGen's output of the same `data_root`, read by no step:
  it is the cache key (see the module docstring); `batch_size`: items per encoder call."""
  del examples
  report_path = os.path.join(embeddings.uri, REPORT_FILE)
  with beam_pipeline as p:
    items = p | "ReadItems" >> ReadTable(data_root, contract.ITEMS)
    total = items | "CountItems" >> beam.combiners.Count.Globally()
    embedded = (items
                | "Batch" >> beam.BatchElements(min_batch_size=batch_size,
                                                max_batch_size=batch_size)
                | "Embed" >> beam.ParDo(_EmbedBatches(data_root),
                                        total=beam.pvalue.AsSingleton(total)
                                        ).with_outputs(_REPORTS, main="contents"))
    _ = (embedded.contents
         | "ToExample" >> beam.Map(to_example)
         | "WriteEmbeddings" >> beam.io.WriteToTFRecord(embeddings_prefix(embeddings.uri),
                                                         file_name_suffix=".tfrecord.gz"))
    _ = (embedded[_REPORTS]
         | "MergeReports" >> beam.CombineGlobally(_MergeReports())
         | "ReportJson" >> beam.Map(lambda report: json.dumps(report.to_json(), indent=2))
         | "WriteReport" >> beam.io.WriteToText(report_path, shard_name_template=""))
  with tf.io.gfile.GFile(report_path) as f:
    report = json.load(f)
  log = logging.warning if report["bad_images"] else logging.info
  log("ContentEmbedder: %s; report %s", summary(report), report_path)
