"""The sentence encoder (all-MiniLM-L6-v2): parity with a numpy oracle from raw text, semantics,
padding, the folder's pooling settings, and the SavedModel in a fresh process.

Oracle: no ONNX runtime or sentence-transformers is installed, so the reference is numpy all
the way from the raw string (`tests/bert_reference.py`): Hugging Face's BertTokenizer re-written
in Python, BERT's forward pass in float64 from the safetensors arrays, mean pooling over all
tokens of the unpadded sequence, L2 normalisation (sentence-transformers' recipe).
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops the SavedModel uses)

from tests.bert_reference import reference_embedding, reference_tokenize
from tests.saved_model_ops import TF_TEXT_OPS, graph_ops
from tests.saved_model_reload import serve_in_fresh_process
from trainer.encoders.bert_checkpoint import BertConfig, minilm_dir, read_arrays
from trainer.encoders.export import EMBEDDING, TEXT_INPUT, export_sentence_encoder
from trainer.encoders.sentence_encoder import SentenceConfig, load_sentence_encoder

# Max |difference| per coordinate of the unit vectors (values up to ~0.3), float32 against the
# float64 oracle.
EMBEDDING_ATOL = 1e-6
TEXTS = ["a movie about a space mission", "astronauts travel to the moon",
         "a recipe for apple pie", "",
         "Star Wars (1977). Action, Adventure, Romance, Sci-Fi, War. 1977",
         "Amélie (Le Fabuleux Destin d'Amélie Poulain) (2001). Comedy, Romance", "東京物語 (1953)",
         # over max_seq_length (256) tokens: truncated, as sentence-transformers does
         "recently liked: " + "; ".join(f"Movie number {i} (199{i % 10})" for i in range(60))]


@pytest.fixture(scope="module")
def encoder():
  return load_sentence_encoder()


@pytest.fixture(scope="module")
def oracle():
  """raw text -> the reference embedding, float64."""
  folder = minilm_dir()
  config = BertConfig.read(folder)
  arrays = {k: v.astype(np.float64) for k, v in read_arrays(folder).items()}
  with open(os.path.join(folder, "vocab.txt"), encoding="utf-8") as f:
    vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
  room = SentenceConfig.read(folder).max_seq_length - 2  # [CLS] and [SEP]

  def embed(text):
    ids = [vocab["[CLS]"]] + reference_tokenize(text, vocab)[:room] + [vocab["[SEP]"]]
    return reference_embedding(arrays, config, np.array(ids))

  return embed


def test_matches_the_numpy_oracle_from_raw_text(encoder, oracle):
  got = encoder(tf.constant(TEXTS)).numpy()
  expected = np.stack([oracle(t) for t in TEXTS])
  print(f"max abs diff: {np.abs(got - expected).max():.2e}")
  assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
  np.testing.assert_allclose(got, expected, atol=EMBEDDING_ATOL)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_related_sentences_are_closer_than_unrelated(encoder):
  space, moon, pie = encoder(tf.constant(TEXTS[:3])).numpy()
  print(f"cosines: space/moon {space @ moon:.3f}, space/pie {space @ pie:.3f}, "
        f"moon/pie {moon @ pie:.3f}")
  assert space @ moon > 0.3 > 0.15 > max(space @ pie, moon @ pie)


def test_a_text_embeds_the_same_alone_and_beside_a_long_one(encoder):
  alone = encoder(tf.constant(TEXTS[:1])).numpy()
  beside = encoder(tf.constant([TEXTS[0], TEXTS[-1]])).numpy()
  np.testing.assert_allclose(beside[0], alone[0], atol=1e-6)
  assert encoder(tf.constant([], tf.string)).shape == (0, 384)


def _sentence_folder(tmp_path, pooling):
  folder = tmp_path / "st"
  (folder / "1_Pooling").mkdir(parents=True)
  modules = [{"path": path, "type": f"sentence_transformers.models.{kind}"}
             for path, kind in (("", "Transformer"), ("1_Pooling", "Pooling"),
                                ("2_Normalize", "Normalize"))]
  (folder / "modules.json").write_text(json.dumps(modules))
  (folder / "1_Pooling" / "config.json").write_text(json.dumps(
      {"word_embedding_dimension": 384, "pooling_mode_cls_token": pooling == "cls",
       "pooling_mode_mean_tokens": pooling == "mean"}))
  (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
  return folder, modules


def test_the_folder_settings_are_read_and_other_poolings_refused(tmp_path):
  assert SentenceConfig.read(minilm_dir()).max_seq_length == 256
  folder, modules = _sentence_folder(tmp_path, "mean")
  assert SentenceConfig.read(str(folder)).max_seq_length == 128
  folder, _ = _sentence_folder(tmp_path / "cls", "cls")
  with pytest.raises(ValueError, match="only mean pooling"):
    SentenceConfig.read(str(folder))
  (folder / "modules.json").write_text(json.dumps(modules[:2]))  # no Normalize
  with pytest.raises(ValueError, match="Normalize"):
    SentenceConfig.read(str(folder))


def test_saved_model_serves_raw_text_in_a_fresh_process(encoder, tmp_path):
  export_dir = str(tmp_path / "sentence_encoder")
  export_sentence_encoder(encoder, export_dir)
  variables = sum(f.stat().st_size for f in (tmp_path / "sentence_encoder" / "variables").iterdir())
  checkpoint = os.path.getsize(os.path.join(minilm_dir(), "model.safetensors"))
  assert variables < 1.1 * checkpoint  # each weight stored once
  serve = tf.saved_model.load(export_dir).signatures["serving_default"]
  assert list(serve.structured_input_signature[1]) == [TEXT_INPUT]
  here = {k: v.numpy() for k, v in serve(**{TEXT_INPUT: tf.constant(TEXTS)}).items()}
  assert serve(**{TEXT_INPUT: tf.constant([], tf.string)})[EMBEDDING].shape == (0, 384)
  np.testing.assert_allclose(here[EMBEDDING], encoder(tf.constant(TEXTS)).numpy(), atol=1e-6)
  inputs = [t.encode() for t in TEXTS]
  tf2, tf1, imported = serve_in_fresh_process(export_dir, TEXT_INPUT, inputs, tmp_path,
                                              tf_text=True)
  assert imported == "IMPORTED []", imported  # no keras-hub, no project code
  for name, there in (("tf2", tf2), ("tf1 session", tf1)):
    assert set(there) == {EMBEDDING}, name
    np.testing.assert_array_equal(there[EMBEDDING], here[EMBEDDING], err_msg=name)
  custom = graph_ops(export_dir) - set(dir(tf.raw_ops))
  assert custom <= TF_TEXT_OPS, custom - TF_TEXT_OPS
  assert "FastWordpieceTokenizeWithOffsets" in custom  # tokenization is inside the graph
