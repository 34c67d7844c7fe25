"""The cross-encoder and its SavedModel: raw strings in, scores out, TF Text ops only, faults."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops the SavedModel uses)

from tests.saved_model_ops import TF_TEXT_OPS, graph_ops
from trainer.cross_encoder import groups as E
from trainer.cross_encoder.export import CrossEncoderModule, export_cross_encoder
from trainer.cross_encoder.model import (LENGTH_BUCKET, LISTWISE, POINTWISE, build_cross_encoder,
                                         listwise_softmax_loss, loss_function, pair_logits,
                                         pair_preprocessor, tokenize_pairs, trim_padding)
from trainer.encoders.bert_checkpoint import load_backbone, load_tokenizer, minilm_dir

SEQUENCE_LENGTH = 32
RERANK_DEPTH = 4


def _cross_encoder(num_layers: int = 2):
  folder = minilm_dir()
  return build_cross_encoder(load_backbone(folder, num_layers=num_layers),
                             pair_preprocessor(load_tokenizer(folder), SEQUENCE_LENGTH), 0.1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  module = CrossEncoderModule(_cross_encoder(), RERANK_DEPTH)
  path = str(tmp_path_factory.mktemp("cross_encoder") / "saved_model")
  export_cross_encoder(module, path)
  return module, path


def test_serving_signature_takes_raw_strings_and_returns_scores(exported):
  module, path = exported
  serve = tf.saved_model.load(path).signatures["serving_default"]
  assert set(serve.structured_input_signature[1]) == {"query", "item_text"}
  query = tf.constant(["star wars", "star wars", "comedy from the 1990s"])
  items = tf.constant(["Star Wars (1977). Action, Adventure, Sci-Fi. 1977",
                       "Toy Story (1995). Animation, Children's, Comedy. 1995",
                       "Toy Story (1995). Animation, Children's, Comedy. 1995"])
  scores = serve(query=query, item_text=items)["scores"]
  assert scores.dtype == tf.float32 and scores.shape == (3,)
  np.testing.assert_allclose(scores.numpy(), module.serve(query, items)["scores"].numpy(),
                             atol=1e-5)


def test_pairs_padded_to_the_batchs_longest_score_as_at_the_full_length(exported):
  module, _ = exported
  query = tf.constant(["star wars", "comedy", "a much longer query about films of the nineties"])
  items = tf.constant(["Star Wars (1977)", "Toy Story (1995). Animation, Children's, Comedy.", ""])
  full = tokenize_pairs(module.cross_encoder.preprocessor, query, items)
  trimmed = trim_padding(full)
  longest = int(tf.reduce_max(tf.reduce_sum(full["padding_mask"], axis=1)))
  length = trimmed["token_ids"].shape[1]
  assert longest <= length < SEQUENCE_LENGTH and length % LENGTH_BUCKET == 0
  np.testing.assert_allclose(module.serve(query, items)["scores"].numpy(),
                             pair_logits(module.cross_encoder, full).numpy(), atol=1e-5)
  empty = trim_padding(tokenize_pairs(module.cross_encoder.preprocessor,
                                      tf.constant([], tf.string), tf.constant([], tf.string)))
  assert empty["token_ids"].shape[0] == 0


def test_empty_item_text_and_overlong_query_are_scored_not_crashed(exported):
  _, path = exported
  serve = tf.saved_model.load(path).signatures["serving_default"]
  long_query = "recently liked: " + "; ".join(f"Movie number {i} (1990)" for i in range(200))
  scores = serve(query=tf.constant([long_query, "", "comedy", "东京 🎬"]),
                 item_text=tf.constant(["", "", "x" * 5000, "Tokyo Story (1953)"]))["scores"]
  assert scores.shape == (4,) and np.all(np.isfinite(scores.numpy()))
  empty = serve(query=tf.constant([], tf.string), item_text=tf.constant([], tf.string))["scores"]
  assert empty.shape == (0,)


def test_evaluation_signature_scores_whole_groups_of_any_size(exported):
  module, path = exported
  groups = [E.Group("q1", "star wars", E.SEARCH, ["1", "2", "3"],
                    ["Star Wars (1977)", "Toy Story (1995)", ""], [1, 0, 0], [0.3, 0.2, 0.1]),
            E.Group("q2", "comedy", E.SEARCH, ["2"], ["Toy Story (1995)"], [1], [0.5])]
  evaluate = tf.saved_model.load(path).signatures["evaluation"]
  scores = evaluate(examples=tf.constant([g.to_example() for g in groups]))["scores"].numpy()
  assert scores.shape == (2, 3)
  assert scores[1, 1] == scores[1, 2] == E.PADDING_SCORE
  pairs = module.serve(tf.constant(["star wars"] * 3 + ["comedy"]),
                       tf.constant(groups[0].item_texts + groups[1].item_texts))["scores"].numpy()
  np.testing.assert_allclose([*scores[0], scores[1, 0]], pairs, atol=1e-5)


def test_rerank_signature_declares_its_depth_and_skips_padding(exported):
  module, path = exported
  rerank = tf.saved_model.load(path).signatures["rerank"]
  assert rerank.structured_input_signature[1]["item_texts"].shape.as_list() == [None,
                                                                                RERANK_DEPTH]
  texts = [["Star Wars (1977)", "Toy Story (1995)", "", ""],
           ["Heat (1995)", "Casino (1995)", "Fargo (1996)", "Clerks (1994)"]]
  scores = rerank(query=tf.constant(["star wars", "crime"]),
                  item_texts=tf.constant(texts))["scores"].numpy()
  assert scores.shape == (2, RERANK_DEPTH)
  assert list(scores[0, 2:]) == [E.PADDING_SCORE] * 2  # padding is not scored
  pairs = module.serve(tf.constant(["star wars"] * 2 + ["crime"] * 4),
                       tf.constant(texts[0][:2] + texts[1]))["scores"].numpy()
  np.testing.assert_allclose([*scores[0, :2], *scores[1]], pairs, atol=1e-5)


def test_saved_model_has_only_core_and_tf_text_ops(exported):
  _, path = exported
  custom = graph_ops(path) - set(dir(tf.raw_ops))
  assert custom <= TF_TEXT_OPS, custom - TF_TEXT_OPS
  assert "FastWordpieceTokenizeWithOffsets" in custom  # tokenization is inside the graph


def test_losses():
  labels = tf.constant([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
  logits = tf.constant([[2.0, 0.0, -1.0], [0.0, 1.0, 1.0], [3.0, 1.0, 0.0]])
  listwise = listwise_softmax_loss(labels, logits).numpy()
  log_softmax = tf.nn.log_softmax(logits).numpy()
  np.testing.assert_allclose(listwise, [-log_softmax[0, 0], -log_softmax[1, 1:].mean(), 0.0],
                             rtol=1e-6)
  assert loss_function(LISTWISE) is listwise_softmax_loss
  pointwise = float(loss_function(POINTWISE)(labels, logits))
  expected = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))
  assert pointwise == pytest.approx(float(expected), rel=1e-5)
  with pytest.raises(ValueError, match="unknown cross-encoder loss"):
    loss_function("pairwise")


def test_lora_trains_a_small_fraction_of_the_weights():
  cross_encoder = _cross_encoder()
  full = sum(int(np.prod(w.shape)) for w in cross_encoder.trainable_weights)
  cross_encoder.backbone.enable_lora(4)
  lora = sum(int(np.prod(w.shape)) for w in cross_encoder.trainable_weights)
  # Keras' EinsumDense LoRA on the [384, 12 heads, 32] query and value kernels of 2 layers:
  # A [384, 12, 4], B [4, 32] and the still-trainable bias [12, 32]; plus the 385-weight head.
  assert lora == 2 * 2 * (384 * 12 * 4 + 4 * 32 + 12 * 32) + 385
  assert lora < full / 100
