"""The multimodal item tower: fusion units, the pipeline with `--content` on a real MovieLens
slice, the pushed model's raw-content `item_embeddings`, and a new catalog item recommended by
the served stack without a retrain."""
import contextlib
import csv
import io
import json
import os
import shutil
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf

from benchmarks.serve_process import ServeProcess
from pipeline.data import contract, parsing, synthetic_shop
from pipeline.runners import local_runner
from serving.context_store import user_features
from serving.user_state import EmbeddedUserState, Profiles
from serving.fresh_items import FreshIndex, merge_fresh
from serving.protos import recommender_pb2 as pb
from serving.protos import recommender_pb2_grpc
from tests.saved_model_ops import TF_TEXT_OPS, graph_ops
from trainer.content.records import HAS_IMAGE, HAS_TEXT, IMAGE_EMBEDDING, TEXT_EMBEDDING
from trainer.cross_encoder.texts import item_text
from trainer.retrieval import signature
from trainer.retrieval.content import HAS_ID, CatalogContent
from trainer.retrieval.content_graph import item_texts
from trainer.retrieval.fusion import ContentFusion


# --- units ---------------------------------------------------------------------------------
def test_item_texts_in_the_graph_match_the_python_item_text():
  rows = [{"title": "Toy Story", "categories": ["Animation", "Comedy"], "year": 1995},
          {"title": "Heat", "categories": [], "year": 0, "description": "A heist."},
          {"title": "", "categories": ["Drama"], "year": 2001, "description": ""}]
  inputs = signature.item_inputs(rows)
  got = item_texts(tf.constant(inputs["title"]), tf.constant(inputs["categories"]),
                   tf.constant(inputs["year"]), tf.constant(inputs["description"]))
  assert [t.decode() for t in got.numpy()] == [item_text(row) for row in rows]


def _fusion_inputs(batch, has_text, has_image, seed=0):
  rng = np.random.default_rng(seed)
  return {HAS_ID: tf.ones([batch]), HAS_TEXT: tf.constant(has_text, tf.float32),
          HAS_IMAGE: tf.constant(has_image, tf.float32),
          TEXT_EMBEDDING: tf.constant(rng.normal(size=(batch, 8)), tf.float32),
          IMAGE_EMBEDDING: tf.constant(rng.normal(size=(batch, 6)), tf.float32)}


def test_fusion_ignores_an_absent_modality_and_drops_ids_only_in_training():
  fusion = ContentFusion(4, id_dropout=0.5, modality_dropout=0.0)
  ids, metadata = tf.ones([64, 5]), tf.ones([64, 3])
  absent = _fusion_inputs(64, [0.0] * 64, [0.0] * 64, seed=0)
  other = dict(absent, **{k: v for k, v in _fusion_inputs(64, [0.0] * 64, [0.0] * 64, seed=1)
                          .items() if k in (TEXT_EMBEDDING, IMAGE_EMBEDDING)})
  first, has_id = fusion(ids, metadata, absent)
  second, _ = fusion(ids, metadata, other)
  np.testing.assert_allclose(first.numpy(), second.numpy())  # zeros are never read as content
  assert np.all(has_id.numpy() == 1.0)
  present = _fusion_inputs(64, [1.0] * 64, [1.0] * 64, seed=0)
  assert not np.allclose(fusion(ids, metadata, present)[0].numpy(), first.numpy())
  _, trained_ids = fusion(ids, metadata, present, training=True)
  assert 0.2 < float(trained_ids.numpy().mean()) < 0.8  # id dropout hides about half
  np.testing.assert_allclose(fusion(ids, metadata, present)[0].numpy(),
                             fusion(ids, metadata, present)[0].numpy())


def test_fusion_refuses_an_unknown_modality():
  with pytest.raises(ValueError, match="audio"):
    ContentFusion(4, 0.0, 0.0, modalities=("text", "audio"))


def test_catalog_content_aligns_with_the_transform_index():
  vectors = {TEXT_EMBEDDING: np.eye(3, 4, dtype=np.float32),
             IMAGE_EMBEDDING: np.zeros((3, 2), np.float32),
             HAS_TEXT: np.ones(3, np.float32), HAS_IMAGE: np.zeros(3, np.float32)}
  content = CatalogContent(["a", "b", "c"], vectors, [{"item_id": i} for i in "abc"])
  aligned = content.by_index(["c", "x", "a"], n_items=4)  # index 3: the OOV bucket
  np.testing.assert_array_equal(aligned[TEXT_EMBEDDING][0], vectors[TEXT_EMBEDDING][2])
  np.testing.assert_array_equal(aligned[HAS_TEXT], [1, 0, 1, 0])
  assert content.cold_rows(["a", "c"]) == [1]


def test_fresh_items_take_the_places_their_scores_earn():
  answer = [("a", 0.9), ("b", 0.5), ("c", 0.1)]
  assert merge_fresh(answer, [("n", 0.7), ("m", 0.05)]) == [("a", 0.9), ("n", 0.7), ("b", 0.5)]
  assert merge_fresh(answer, [("m", 0.05)]) == answer
  index = FreshIndex(1, ("n", "m", "h"), np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]]), 10)
  assert [item for item, _ in index.top(np.array([1.0, 0.1]), excluded=["h"], k=2)] == ["n", "m"]


# --- the pipeline with the multimodal tower --------------------------------------------------
@pytest.fixture(scope="module")
def content_run(tmp_path_factory, slice_root):
  """`--content` on the MovieLens slice (retrieval only: the tower is what is under test)."""
  tmp = str(tmp_path_factory.mktemp("content"))
  data_root = os.path.join(tmp, "data")
  shutil.copytree(slice_root, data_root)
  output_root = os.path.join(tmp, "outputs")
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    code = local_runner.main(["--data_root", data_root, "--output_root", output_root,
                              "--content", "--no_ranker", "--no_bandit", "--epochs", "3",
                              "--gate_metrics", "recall@100", "--regression_tolerance", "1.0"])
  lines = stdout.getvalue().splitlines()
  assert code == 0, "\n".join(lines[-30:])
  summary_path = lines[-2]  # the last line is the outcome line
  with open(summary_path) as f:
    summary = json.load(f)
  return data_root, os.path.join(output_root, "serving"), summary, lines


def _catalog(data_root):
  return {row["item_id"]: row for row in parsing.read_table(data_root, contract.ITEMS)}


def test_content_run_pushes_a_multimodal_model_stock_serving_loads(content_run):
  _, _, summary, lines = content_run
  assert summary["blessed"] is True, "\n".join(lines[-30:])
  assert any("ContentEmbedder" in line for line in lines)
  pushed = summary["pushed_to"]
  with tf.Graph().as_default(), tf.compat.v1.Session() as session:  # TF Serving's loader
    meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], pushed)
  assert {"serving_default", "item_embeddings", "known_items"} <= set(meta_graph.signature_def)
  assert set(meta_graph.signature_def["item_embeddings"].inputs) == set(signature.ITEM_SPEC)
  from tensorflow.python.framework import op_def_registry
  import tensorflow_text  # noqa: F401  (registers the tokenizer's ops, as TF Serving links them)
  unknown = sorted(op for op in graph_ops(pushed) if op_def_registry.get(op) is None)
  assert not unknown, unknown
  assert graph_ops(pushed) & TF_TEXT_OPS  # the text encoder is inside


def test_unseen_item_is_embedded_among_its_kind(content_run):
  """Copies of catalog movies under new ids (content only, no id): their nearest catalog items
  share their genres far more often than chance."""
  data_root, _, summary, _ = content_run
  import tensorflow_text  # noqa: F401
  model = tf.saved_model.load(summary["pushed_to"])
  catalog = _catalog(data_root)
  ids = sorted(catalog)
  embed = model.signatures["item_embeddings"]
  known = np.concatenate([embed(**signature.as_tensors(signature.item_inputs(
      [catalog[i] for i in ids[start:start + 512]])))["embedding"].numpy()
                          for start in range(0, len(ids), 512)])
  sources = [i for i in ids if len(catalog[i]["categories"]) == 1][:40]
  copies = [dict(catalog[i], item_id=f"new-{i}") for i in sources]
  assert not model.signatures["known_items"](
      item_id=tf.constant([c["item_id"] for c in copies]))["known"].numpy().any()
  new = embed(**signature.as_tensors(signature.item_inputs(copies)))["embedding"].numpy()
  genre = {i: set(catalog[i]["categories"]) for i in ids}
  shared, chance = [], []
  for source, vector in zip(sources, new):
    nearest = [ids[j] for j in np.argsort(-(known @ vector)) if ids[j] != source][:10]
    shared.append(np.mean([bool(genre[n] & genre[source]) for n in nearest]))
    chance.append(np.mean([bool(genre[n] & genre[source]) for n in ids]))
  assert np.mean(shared) > max(0.6, 2 * np.mean(chance)), (np.mean(shared), np.mean(chance))


def _best_placed_new_item(model, data_root, catalog):
  """(user, new row): the pair, among a few copies of catalog movies under new ids and the
  slice's users, whose retrieval answer puts the new item highest above its 10th score."""
  profiles = Profiles(data_root)
  store = EmbeddedUserState(data_root, profiles)
  users = profiles.ids()[:60]
  features = [user_features(u, store.state(u).history, profiles.get(u)) for u in users]
  inputs = signature.as_tensors(signature.query_inputs(features))
  queries = model.signatures["query_embedding"](**inputs)["embedding"].numpy()
  tenth = model.signatures["serving_default"](**inputs)["scores"].numpy()[:, 9]
  rows = [dict(catalog[i], item_id=f"fresh-{i}", title=f"{catalog[i]['title']} II")
          for i in ("1", "50", "100", "181", "258")]
  items = model.signatures["item_embeddings"](**signature.as_tensors(
      signature.item_inputs(rows)))["embedding"].numpy()
  margin = queries @ items.T - tenth[:, None]
  user, row = np.unravel_index(np.argmax(margin), margin.shape)
  assert margin[user, row] > 0, "no new item would enter any user's top 10"
  return users[user], rows[row]


def _append_item(data_root, row):
  path = os.path.join(data_root, contract.ITEMS, "added.csv")
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["item_id", "title", "description", "categories", "year", "image_uri"])
    writer.writerow([row["item_id"], row["title"], row.get("description") or "",
                     contract.LIST_SEPARATOR.join(row["categories"]), row.get("year") or "", ""])


def test_new_catalog_item_is_recommended_without_retrain(content_run, tmp_path):
  data_root, serving_root, summary, _ = content_run
  import tensorflow_text  # noqa: F401
  model = tf.saved_model.load(summary["pushed_to"])
  user, row = _best_placed_new_item(model, data_root, _catalog(data_root))
  process = ServeProcess(["--data_root", data_root, "--serving_root", serving_root,
                          "--catalog_refresh_s", "1"], str(tmp_path / "serve.log")).start()
  try:
    stub = recommender_pb2_grpc.RecommenderStub(grpc.insecure_channel(process.grpc))
    request = pb.RecommendRequest(user=pb.UserContext(user_id=user), k=10)
    before = stub.Recommend(request, timeout=60)
    assert row["item_id"] not in [i.item_id for i in before.items]
    _append_item(data_root, row)
    deadline, shown = time.monotonic() + 120, []
    while time.monotonic() < deadline:
      response = stub.Recommend(request, timeout=60)
      shown = [i.item_id for i in response.items]
      if row["item_id"] in shown:
        break
      time.sleep(1)
    assert row["item_id"] in shown, process.log_tail()
    assert "fresh_items" in response.stages
    assert response.items[shown.index(row["item_id"])].title == row["title"]
    item = response.items[shown.index(row["item_id"])]
    written = stub.Feedback(pb.FeedbackRequest(
        request_id=response.request_id, user_id=user, item_id=row["item_id"], event="click",
        position=item.position, propensity=item.propensity, variant=response.variant),
        timeout=30)
    assert written.written == 1
  finally:
    process.stop()
    os.remove(os.path.join(data_root, contract.ITEMS, "added.csv"))


# --- images end to end: the SYNTHETIC shop (simulated users, real Fashion-MNIST photos) --------
@pytest.fixture(scope="module")
def shop_model(tmp_path_factory):
  """The multimodal model trained by the pipeline on a small SYNTHETIC shop (the Trainer's
  export: what is checked is how it places unseen images, blessed or not)."""
  if not os.path.isdir(synthetic_shop.DEFAULT_SOURCE_DIR):
    pytest.skip(f"{synthetic_shop.DEFAULT_SOURCE_DIR} missing: apt-get install "
                "dataset-fashion-mnist")
  tmp = str(tmp_path_factory.mktemp("shop"))
  data_root = os.path.join(tmp, "data")
  synthetic_shop.write_synthetic_shop(data_root, items=300, users=200, seed=0)
  output_root = os.path.join(tmp, "outputs")
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    code = local_runner.main(["--data_root", data_root, "--output_root", output_root,
                              "--content", "--no_ranker", "--no_bandit", "--epochs", "3"])
  assert code == 0, stdout.getvalue()[-3000:]
  exports = tf.io.gfile.glob(os.path.join(output_root, "pipeline_root", "*", "Trainer", "model",
                                          "*", "Format-Serving"))
  assert len(exports) == 1, exports
  with open(os.path.join(data_root, "ground_truth.json")) as f:
    truth = json.load(f)
  return data_root, exports[0], truth


def test_unseen_photo_is_embedded_among_items_of_its_kind(shop_model):
  """New items whose only signal is a photo the run never saw (neutral titles): their nearest
  catalog items are of the photo's class far more often than chance (0.1). The share moves
  with the training shuffle's draw on this small shop (0.48 and above 0.5 seen), hence a
  bound of 3.5 times chance rather than one draw's value."""
  data_root, export_dir, truth = shop_model
  import tensorflow_text  # noqa: F401
  model = tf.saved_model.load(export_dir)
  catalog = _catalog(data_root)
  ids = sorted(catalog)
  known = np.concatenate([model.signatures["item_embeddings"](**signature.as_tensors(
      signature.item_inputs([catalog[i] for i in ids[start:start + 256]])))["embedding"].numpy()
                          for start in range(0, len(ids), 256)])
  labels = synthetic_shop.read_labels(synthetic_shop.DEFAULT_SOURCE_DIR)
  used = set(truth["source_index"].values())
  rng = np.random.default_rng(1)
  picks = [int(rng.choice([i for i in np.flatnonzero(labels == c)[:400] if i not in used]))
           for c in range(10) for _ in range(3)]
  photos = synthetic_shop.read_images(synthetic_shop.DEFAULT_SOURCE_DIR, np.array(picks))
  rows = [{"item_id": f"new-{k}", "title": f"Norra {9000 + k}", "categories": ["core"],
           "year": 2024, signature.IMAGE_BYTES: tf.io.encode_png(photo[..., None]).numpy()}
          for k, photo in enumerate(photos)]
  new = model.signatures["item_embeddings"](**signature.as_tensors(
      signature.item_inputs(rows)))["embedding"].numpy()
  kind = [synthetic_shop.CLASS_NAMES[labels[p]] for p in picks]
  share = np.mean([np.mean([truth["item_class"][ids[j]] == kind[k]
                            for j in np.argsort(-(known @ vector))[:10]])
                   for k, vector in enumerate(new)])
  assert share > 0.35, share
