"""The pipeline with the cross-encoder stage on the small MovieLens slice: mining with the retriever,
a short fine-tune, TFMA against the retrieval order, a push beside the retriever, and the
cascade re-ranking with it."""
import glob
import os
import shutil

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the tokenizer's ops, as TF Serving links them)

from pipeline import run_report
from pipeline.components.cross_encoder_miner import CrossEncoderMiner
from pipeline.config import CrossEncoderStage
from pipeline.runners import local_runner
from serving.context_store import Catalog
from serving.models_config import CROSS_ENCODER, RETRIEVAL, read_models_config
from serving.protos import recommender_pb2 as pb
from serving.protos import recommender_pb2_grpc
from serving.serve import LocalStack
from tests.conftest import pipeline_config
from trainer.cross_encoder import groups as E

# Small enough for the suite (about a minute of fine-tuning on 2 cores), big enough to learn:
# all 6 pretrained layers at 32 tokens, 60 steps of 4 groups of 8. The gate is the overall one
# (the per-kind default gate is unit-tested); this test is about training, blessing and pushing
# end to end.
TINY = CrossEncoderStage(train_groups=200, validation_groups=16, eval_groups=200, eval_depth=20,
                          training={"sequence_length": 32, "learning_rate": 1e-4,
                                    "max_steps": 60, "eval_every_steps": 30},
                          gate_slices="overall")


@pytest.fixture(scope="module")
def cross_encoder_run(tmp_path_factory, slice_root):
  config = pipeline_config(str(tmp_path_factory.mktemp("cross_encoder_run")), slice_root,
                           cross_encoder=TINY, ranking=None)
  return config, local_runner.run(config)


def _groups(config, split):
  [groups_dir] = glob.glob(os.path.join(config.pipeline_root, CrossEncoderMiner.__name__,
                                        "groups", "*"))
  files = glob.glob(os.path.join(groups_dir, f"Split-{split}", "*"))
  return [tf.train.Example.FromString(record.numpy()).features.feature
          for record in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def _strings(feature, name):
  return [v.decode() for v in feature[name].bytes_list.value]


def test_run_trains_evaluates_blesses_and_pushes_the_cross_encoder(cross_encoder_run):
  config, summary = cross_encoder_run
  assert summary["status"] == "succeeded", summary.get("error")
  assert summary["evaluation"]["metrics"].keys() == {"candidate", "popularity"}  # the retriever's
  stage = summary[CROSS_ENCODER]
  metrics = stage["evaluation"]["metrics"]
  assert set(metrics) == {"candidate", "retrieval_order"}
  assert {"overall", "query_kind=synthetic_search"} <= set(metrics["candidate"])
  overall = metrics["candidate"]["overall"]
  assert overall["group_count"] > 10 and 0 < overall["ndcg@10"] <= 1
  assert stage["blessed"] is True, stage["evaluation"]["reasons"]
  assert os.path.dirname(stage["pushed_to"]) == os.path.join(config.serving_root, CROSS_ENCODER)
  models = read_models_config(os.path.join(config.serving_root, "models.config"))
  assert sorted(m.name for m in models.model_config_list.config) == sorted([CROSS_ENCODER, RETRIEVAL])
  assert os.path.dirname(summary["pushed_to"]).endswith(RETRIEVAL)
  text = run_report.report(dict(summary, summary_path="summary.json"))
  assert ("Cross-encoder evaluation (cross_encoder):" in text
          and "[query_kind=synthetic_search]" in text and "cross_encoder blessed: True" in text)


def test_mined_groups_are_searches_with_the_serving_texts(cross_encoder_run, slice_root):
  config, _ = cross_encoder_run
  catalog = Catalog(slice_root)
  train = _groups(config, E.TRAIN)
  assert len(train) == TINY.train_groups
  assert {len(g[E.ITEM_IDS].bytes_list.value) for g in train} == {8}
  # MovieLens has no logged searches: every group is a synthetic one.
  assert {_strings(g, E.QUERY_KIND)[0] for g in train} == {E.SYNTHETIC_SEARCH}
  for group in train[:20]:
    assert _strings(group, E.ITEM_TEXTS) == [catalog.text(i) for i in _strings(group, E.ITEM_IDS)]
    _, _, item_id, _ = _strings(group, E.QUERY_ID)[0].split(":")
    assert item_id in _strings(group, E.ITEM_IDS)
  for group in _groups(config, E.EVAL):  # the retriever's top-N, by its own scores
    scores = list(group[E.RETRIEVER_SCORES].float_list.value)
    assert len(scores) == TINY.eval_depth and any(group[E.LABELS].float_list.value)


def test_pushed_model_scores_raw_strings_and_survives_bad_text(cross_encoder_run):
  _, summary = cross_encoder_run
  model = tf.saved_model.load(summary[CROSS_ENCODER]["pushed_to"])
  rerank = model.signatures["rerank"]  # as wide as the depth it was evaluated at
  assert rerank.structured_input_signature[1]["item_texts"].shape[1] == TINY.eval_depth
  serve = model.signatures["serving_default"]
  scores = serve(query=tf.constant(["comedy from the 1990s", "x " * 1000, ""]),
                 item_text=tf.constant(["Toy Story. Animation, Children's, Comedy. 1995", "",
                                        ""]))["scores"].numpy()
  assert scores.shape == (3,) and np.all(np.isfinite(scores))


def test_cascade_reranks_with_the_pushed_cross_encoder(cross_encoder_run, slice_root, tmp_path):
  config, _ = cross_encoder_run
  data_root = str(tmp_path / "data")  # the cascade logs feedback there: not into the shared slice
  shutil.copytree(slice_root, data_root)
  stack = LocalStack(data_root, config.serving_root).start()
  try:
    stub = recommender_pb2_grpc.RecommenderStub(grpc.insecure_channel(f"localhost:{stack.port}"))
    request = pb.SearchRequest(query="star wars", k=5)
    # The first call traces the model's graph and may pass the cascade's 2 s stage timeout, in
    # which case the cascade serves the lexical order: warm up first.
    stub.Search(request, timeout=60)
    search = stub.Search(request, timeout=60)
    assert CROSS_ENCODER in search.stages and len(search.items) == 5
    scores = [item.cross_encoder_score for item in search.items if item.reranked]
    assert scores and scores == sorted(scores, reverse=True)
    # Recommendations are the ranker's: the cross-encoder re-ranks search results only.
    response = stub.Recommend(pb.RecommendRequest(user=pb.UserContext(user_id="1"), k=10),
                              timeout=60)
    assert CROSS_ENCODER not in response.stages and RETRIEVAL in response.stages
  finally:
    stack.stop()
