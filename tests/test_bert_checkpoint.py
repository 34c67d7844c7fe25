"""The offline BERT port: name mapping, numpy reference parity, semantics, tokenizer parity."""
import dataclasses
import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.bert_reference import reference_embedding, reference_sequence_output, reference_tokenize
from trainer.encoders.bert_checkpoint import (IGNORED_KEYS, BertConfig, load_backbone, load_tokenizer,
                                       minilm_dir, read_arrays, weight_mapping)

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.",
             "The stock market fell sharply today."]


def keras_embeddings(backbone, id_lists):
  width = max(map(len, id_lists))
  token_ids = np.array([ids + [0] * (width - len(ids)) for ids in id_lists], np.int32)
  mask = (token_ids != 0).astype(np.int32)
  out = np.asarray(backbone({"token_ids": token_ids, "segment_ids": np.zeros_like(token_ids),
                             "padding_mask": mask})["sequence_output"])
  pooled = (out * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def minilm():
  folder = minilm_dir()
  arrays = {k: v.astype(np.float64) for k, v in read_arrays(folder).items()}
  return folder, BertConfig.read(folder), arrays, load_backbone(folder, dropout=0.0)


def test_mapping_covers_every_weight_once_and_every_checkpoint_array(minilm):
  _, _, arrays, backbone = minilm
  mapping = weight_mapping(backbone)
  variables = [id(variable) for _, variable, _ in mapping]
  assert len(set(variables)) == len(variables) == len(backbone.weights)
  assert {id(w) for w in backbone.weights} == set(variables)
  assert {key for key, _, _ in mapping} == set(arrays) - set(IGNORED_KEYS)
  assert backbone.count_params() == 22_713_216  # all-MiniLM-L6-v2 as published


def test_ported_backbone_reproduces_the_numpy_reference(minilm):
  folder, config, arrays, backbone = minilm
  tokenizer = load_tokenizer(folder)
  ids = [[101] + list(tokens) + [102] for tokens in tokenizer(SENTENCES)]
  reference = np.stack([reference_embedding(arrays, config, np.array(i)) for i in ids])
  np.testing.assert_allclose(keras_embeddings(backbone, ids), reference, atol=2e-6)


def test_related_sentences_are_closer_than_unrelated(minilm):
  folder, _, _, backbone = minilm
  tokenizer = load_tokenizer(folder)
  embeddings = keras_embeddings(backbone, [[101] + list(t) + [102] for t in tokenizer(SENTENCES)])
  similarity = embeddings @ embeddings.T
  assert similarity[0, 1] > 0.6 > 0.1 > similarity[0, 2]
  assert similarity[0, 1] > similarity[1, 2]


def _write_tiny_checkpoint(folder, rng, prefix, layer_norm_names):
  """A 2-layer, hidden-8 BERT folder in the Hugging Face layout, with a task head to ignore."""
  vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "man", "eats", "bread", "."]
  config = {"vocab_size": len(vocab), "num_hidden_layers": 2, "num_attention_heads": 2,
            "hidden_size": 8, "intermediate_size": 16, "max_position_embeddings": 16,
            "type_vocab_size": 2, "hidden_act": "gelu"}
  weight, bias = layer_norm_names
  shapes = {"embeddings.word_embeddings.weight": (len(vocab), 8),
            "embeddings.position_embeddings.weight": (16, 8),
            "embeddings.token_type_embeddings.weight": (2, 8),
            f"embeddings.LayerNorm.{weight}": (8,), f"embeddings.LayerNorm.{bias}": (8,),
            "pooler.dense.weight": (8, 8), "pooler.dense.bias": (8,)}
  for i in range(2):
    p = f"encoder.layer.{i}."
    for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                 "attention.output.dense"):
      shapes.update({p + name + ".weight": (8, 8), p + name + ".bias": (8,)})
    shapes.update({p + "intermediate.dense.weight": (16, 8), p + "intermediate.dense.bias": (16,),
                   p + "output.dense.weight": (8, 16), p + "output.dense.bias": (8,)})
    for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
      shapes.update({f"{p}{norm}.{weight}": (8,), f"{p}{norm}.{bias}": (8,)})
  tensors = {prefix + key: rng.normal(size=shape).astype(np.float32)
             for key, shape in shapes.items()}
  tensors["cls.predictions.bias"] = np.zeros(len(vocab), np.float32)
  os.makedirs(folder)
  save_file(tensors, os.path.join(folder, "model.safetensors"))
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(folder, "vocab.txt"), "w") as f:
    f.write("\n".join(vocab) + "\n")


@pytest.mark.parametrize("prefix,layer_norm_names", [("", ("weight", "bias")),
                                                      ("bert.", ("gamma", "beta"))])
def test_loader_takes_any_bert_folder_of_the_same_layout(tmp_path, prefix, layer_norm_names):
  folder = str(tmp_path / "tiny")
  _write_tiny_checkpoint(folder, np.random.default_rng(0), prefix, layer_norm_names)
  config = BertConfig.read(folder)
  arrays = {k: v.astype(np.float64) for k, v in read_arrays(folder).items()}
  backbone = load_backbone(folder, dropout=0.0)
  ids = [2] + list(load_tokenizer(folder)(["A man eats bread."])[0]) + [3]
  assert ids == [2, 5, 6, 7, 8, 9, 3]
  np.testing.assert_allclose(keras_embeddings(backbone, [ids])[0],
                             reference_embedding(arrays, config, np.array(ids)), atol=1e-5)


def test_loader_rejects_a_checkpoint_of_another_layout(tmp_path):
  folder = str(tmp_path / "other")
  _write_tiny_checkpoint(folder, np.random.default_rng(0), "", ("weight", "bias"))
  arrays = read_arrays(folder)
  arrays["encoder.layer.0.attention.self.rotary.weight"] = np.zeros(8, np.float32)
  save_file(arrays, os.path.join(folder, "model.safetensors"))
  with pytest.raises(ValueError, match="does not have"):
    load_backbone(folder)
  del arrays["encoder.layer.1.output.dense.bias"], arrays[
      "encoder.layer.0.attention.self.rotary.weight"]
  save_file(arrays, os.path.join(folder, "model.safetensors"))
  with pytest.raises(ValueError, match="lacks"):
    load_backbone(folder)
  assert load_backbone(folder, num_layers=1).num_layers == 1  # layer 1 is not needed


def test_num_layers_keeps_the_first_layers_and_rejects_too_many(minilm):
  folder, config, arrays, _ = minilm
  two = load_backbone(folder, num_layers=2, dropout=0.0)
  ids = [101, 7592, 2088, 102]
  reference = reference_sequence_output(arrays, dataclasses.replace(config, num_layers=2),
                                         np.array(ids))
  out = np.asarray(two({"token_ids": np.array([ids]), "segment_ids": np.zeros((1, 4), int),
                        "padding_mask": np.ones((1, 4), int)})["sequence_output"])[0]
  np.testing.assert_allclose(out, reference, atol=1e-4)
  with pytest.raises(ValueError, match="num_layers"):
    load_backbone(folder, num_layers=7)


def test_tokenizer_matches_the_reference_wordpiece():
  folder = minilm_dir()
  with open(os.path.join(folder, "vocab.txt"), encoding="utf-8") as f:
    vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
  texts = ["Hello, world!", "Star Wars (1977). Action, Adventure, Romance, Sci-Fi, War. 1977",
           "recently liked: Toy Story (1995); Twelve Monkeys (1995). user: 24, M, technician",
           "Children's sci-fi from the 1990s", "Café Olé — naïve Ångström",
           "Amélie (Le Fabuleux Destin d'Amélie Poulain) (2001)", "unaffable antidisestablishment",
           "東京物語 (1953)", "  tabs\tand\nnewlines  ", "", "x" * 120]
  tokenizer = load_tokenizer(folder)
  assert [list(map(int, ids)) for ids in tokenizer(texts)] == [
      reference_tokenize(t, vocab) for t in texts]
  assert list(map(int, tokenizer(["hello world"])[0])) == [7592, 2088]
