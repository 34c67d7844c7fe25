"""ContentEmbedder in a real TFX pipeline (LocalDagRunner: InteractionExampleGen, then the
embedder) on a MovieLens slice whose catalog got five images: three of scikit-image's photos
(one given as a path relative to the data root), a missing file and a corrupt one. Run twice:
the second run, on the unchanged data root, must be MLMD's cached execution.

The vectors are checked against the encoders called directly (`load_sentence_encoder`,
`load_image_encoder` after `preprocess_images`), on the same item text and image bytes.
"""
import csv
import json
import logging
import os
import pathlib
import time

import numpy as np
import pytest
import skimage
import tensorflow as tf
from absl import logging as absl_logging
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.orchestration import metadata

from pipeline.components.content_embedder import ContentEmbedder
from pipeline.components.interaction_example_gen import SplitSettings, interaction_example_gen
from pipeline.data import contract
from pipeline.data.movielens import convert_movielens_100k
from pipeline.data.parsing import read_table
from pipeline.data.images import resolve_image_uri
from trainer.content.records import REPORT_FILE, read_item_contents
from trainer.content.report import MAX_LISTED_BAD_IMAGES, BadImage, ContentReport
from trainer.cross_encoder.texts import item_text
from trainer.encoders.efficientnet_checkpoint import load_image_encoder
from trainer.encoders.image_preprocessing import preprocess_images
from trainer.encoders.sentence_encoder import load_sentence_encoder

SLICE_USERS = 20
PIPELINE = "content_test"
ATOL = 1e-5
GOOD = {"1": "chelsea.png", "50": "rocket.jpg", "100": "astronaut.png"}
MISSING, CORRUPT = "181", "258"


def _add_images(data_root):
  """Writes the photos under <data_root>/images/ and points five catalog rows at files there:
  item 1 by a relative path, the rest by absolute ones."""
  photos = pathlib.Path(skimage.__file__).parent / "data"
  images = pathlib.Path(data_root) / "images"
  images.mkdir()
  for name in GOOD.values():
    (images / name).write_bytes((photos / name).read_bytes())
  # a PNG whose signature is right and whose body stops after 3,000 bytes
  (images / "corrupt.png").write_bytes((photos / "coffee.png").read_bytes()[:3000])
  uris = {item: str(images / name) for item, name in GOOD.items()}
  uris.update({"1": "images/chelsea.png", MISSING: str(images / "missing.jpg"),
               CORRUPT: str(images / "corrupt.png")})
  (path,) = tf.io.gfile.glob(os.path.join(data_root, contract.ITEMS, "*.csv"))
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  for row in rows:
    row["image_uri"] = uris.get(row["item_id"], "")
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


class _Lines(logging.Handler):
  def __init__(self):
    super().__init__(logging.INFO)
    self.lines = []

  def emit(self, record):
    self.lines.append(record.getMessage())


def _executions(store):
  context = store.get_context_by_type_and_name("node", f"{PIPELINE}.ContentEmbedder")
  return sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("content_embedder")
  data_root = str(tmp / "data")
  convert_movielens_100k(data_root, max_users=SLICE_USERS)
  _add_images(data_root)
  config = metadata.sqlite_metadata_connection_config(str(tmp / "metadata.sqlite"))
  lines, seconds = _Lines(), []
  logging.getLogger("absl").addHandler(lines)
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.INFO)  # the progress lines are INFO
  try:
    for _ in range(2):
      example_gen = interaction_example_gen(data_root, SplitSettings())
      embedder = ContentEmbedder(examples=example_gen.outputs["examples"], data_root=data_root)
      started = time.time()
      tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
          pipeline_name=PIPELINE, pipeline_root=str(tmp / "pipeline_root"),
          components=[example_gen, embedder], enable_cache=True,
          metadata_connection_config=config,
          beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"]))
      seconds.append(time.time() - started)
  finally:
    absl_logging.set_verbosity(verbosity)
    logging.getLogger("absl").removeHandler(lines)
  with metadata.Metadata(config) as m:
    executions = _executions(m.store)
    events = m.store.get_events_by_execution_ids([e.id for e in executions])
    outputs = {event.artifact_id for event in events
               if event.type == metadata_store_pb2.Event.OUTPUT}
    (uri,) = [a.uri for a in m.store.get_artifacts_by_id(list(outputs))]
  print(f"pipeline runs: {seconds[0]:.1f} s, then {seconds[1]:.1f} s (cached)")
  return {"data_root": data_root, "uri": uri, "executions": executions, "lines": lines.lines,
          "contents": {c.item_id: c for c in read_item_contents(uri)},
          "items": {row["item_id"]: row for row in read_table(data_root, contract.ITEMS)}}


def test_every_item_has_its_vectors_and_flags(run):
  contents, items = run["contents"], run["items"]
  assert sorted(contents) == sorted(items)  # the whole catalog, not only items with ratings
  for content in contents.values():
    assert content.text_embedding.shape == (384,) and content.image_embedding.shape == (1280,)
    assert content.has_text
    np.testing.assert_allclose(np.linalg.norm(content.text_embedding), 1.0, atol=ATOL)
  assert {item for item, c in contents.items() if c.has_image} == set(GOOD)
  assert not any(contents[item].image_embedding.any() for item in contents if item not in GOOD)


def test_bad_images_are_reported_by_item_id_and_logged(run):
  with tf.io.gfile.GFile(os.path.join(run["uri"], REPORT_FILE)) as f:
    report = json.load(f)
  print("content report:", {k: report[k] for k in ("items", "seconds", "items_per_second")})
  counts = [report[k] for k in ("items", "with_text", "with_image_uri", "with_image",
                                "bad_images")]
  assert counts == [len(run["items"]), len(run["items"]), 5, 3, 2]
  bad = {b["item_id"]: b for b in report["bad_image_list"]}
  assert set(bad) == {MISSING, CORRUPT} and report["bad_image_list_complete"]
  assert bad[MISSING]["error"].startswith("unreadable: NotFoundError")
  assert bad[CORRUPT]["error"] == ("does not decode: InvalidArgumentError: Invalid PNG data, "
                                   "size 3000")
  for item in (MISSING, CORRUPT):
    assert any(f"item {item}: bad image {bad[item]['image_uri']}" in line for line in run["lines"])
  assert any("ContentEmbedder: " in line and f"/ {len(run['items'])} items embedded" in line
             for line in run["lines"])


def test_vectors_equal_the_encoders_called_directly(run):
  contents, items = run["contents"], run["items"]
  ids = sorted(items, key=int)
  encoder = load_sentence_encoder()
  for start in range(0, len(ids), 100):  # other batches than the component's
    batch = ids[start:start + 100]
    expected = encoder(tf.constant([item_text(items[i]) for i in batch])).numpy()
    got = np.stack([contents[i].text_embedding for i in batch])
    np.testing.assert_allclose(got, expected, atol=ATOL)
  model = load_image_encoder()
  for item in GOOD:
    uri = resolve_image_uri(run["data_root"], items[item]["image_uri"])
    pixels = preprocess_images(tf.constant([tf.io.gfile.GFile(uri, "rb").read()]))
    expected = model(pixels, training=False)["embedding"].numpy()[0]
    np.testing.assert_allclose(contents[item].image_embedding, expected, atol=ATOL)


def test_second_run_on_the_unchanged_catalog_is_a_cache_hit(run):
  states = [e.last_known_state for e in run["executions"]]
  assert states == [metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED]


def test_relative_image_uris_are_read_under_the_data_root():
  assert resolve_image_uri("gs://b/root/", "images/a.jpg") == "gs://b/root/images/a.jpg"
  assert resolve_image_uri("/data", "/elsewhere/a.jpg") == "/elsewhere/a.jpg"
  assert resolve_image_uri("/data", "gs://other/a.jpg") == "gs://other/a.jpg"


def test_merged_reports_count_every_bad_image_and_list_the_first():
  def batch(first):
    bad = [BadImage(f"{i:05d}", "u", "e") for i in range(first, first + 600)]
    return ContentReport(items=600, bad_images=600, listed_bad_images=bad)

  merged = ContentReport().add(batch(600)).add(batch(0))
  assert merged.bad_images == 1200 and merged.items == 1200
  assert [b.item_id for b in merged.listed_bad_images] == [
      f"{i:05d}" for i in range(MAX_LISTED_BAD_IMAGES)]
  assert merged.to_json()["bad_image_list_complete"] is False
