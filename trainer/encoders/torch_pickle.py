"""Reads a legacy (pre-zip, torch < 1.6) `torch.save` state dict into numpy, without torch.

The pretrained image encoder ships only as such a file (`efficientnet_checkpoint.py`); torch is
not needed to port or serve it. The unpickler resolves only the globals a state dict of tensors
needs, so a weights file cannot run code when it is read.

Layout: five pickles in a row (magic number, protocol version, sys_info, the object with its
storages as persistent ids, the list of storage keys), then per storage key an int64 element
count followed by the raw little-endian bytes.
"""
from __future__ import annotations

import collections
import dataclasses
import pickle
import zipfile
from typing import Any, BinaryIO, Dict, Optional, Tuple

import numpy as np

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


@dataclasses.dataclass
class _Storage:
  dtype: np.dtype
  numel: int
  data: Optional[np.ndarray] = None


@dataclasses.dataclass
class _TensorRef:
  """A tensor whose storage bytes come after the pickle: materialised once they are read."""
  storage: _Storage
  offset: int
  shape: Tuple[int, ...]
  stride: Tuple[int, ...]

  def materialise(self) -> np.ndarray:
    data = self.storage.data
    if data is None:
      raise ValueError("tensor refers to a storage the file does not contain")
    strides = tuple(s * data.itemsize for s in self.stride)
    return np.lib.stride_tricks.as_strided(data[self.offset:], self.shape, strides).copy()


def _rebuild_tensor(storage: _Storage, offset: int, shape: Tuple[int, ...],
                    stride: Tuple[int, ...], *_ignored: Any) -> _TensorRef:
  return _TensorRef(storage, offset, tuple(shape), tuple(stride))


class _Unpickler(pickle.Unpickler):
  """Resolves an OrderedDict, tensors and storage types; refuses every other global."""

  def __init__(self, f: BinaryIO, storages: Dict[str, _Storage]):
    super().__init__(f)
    self._storages = storages

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if module == "torch" and name in _STORAGE_DTYPES:
      return np.dtype(_STORAGE_DTYPES[name])
    raise pickle.UnpicklingError(f"refusing global {module}.{name} in a weights file")

  def persistent_load(self, pid: Any) -> _Storage:
    kind, dtype, key, _location, numel, view = pid
    if kind != "storage" or view is not None:
      raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
    return self._storages.setdefault(key, _Storage(dtype, int(numel)))


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
  """{name: array} of a legacy `torch.save(state_dict)` file, in the file's order."""
  if zipfile.is_zipfile(path):
    raise ValueError(f"{path} is a zip-format torch checkpoint; this reader reads the legacy one")
  storages: Dict[str, _Storage] = {}
  with open(path, "rb") as f:
    magic, protocol, sys_info = (_Unpickler(f, storages).load() for _ in range(3))
    if magic != _MAGIC or protocol != _PROTOCOL:
      raise ValueError(f"{path}: not a legacy torch pickle (magic {magic!r}, protocol "
                       f"{protocol!r})")
    if not sys_info.get("little_endian", False):
      raise ValueError(f"{path}: big-endian checkpoints are not supported")
    state = _Unpickler(f, storages).load()
    for key in _Unpickler(f, storages).load():
      storage = storages[key]
      numel = int(np.frombuffer(f.read(8), "<i8")[0])
      if numel != storage.numel:
        raise ValueError(f"{path}: storage {key} has {numel} elements on disk, "
                         f"{storage.numel} in the pickle")
      raw = f.read(numel * storage.dtype.itemsize)
      if len(raw) != numel * storage.dtype.itemsize:
        raise ValueError(f"{path}: truncated in storage {key}")
      storage.data = np.frombuffer(raw, storage.dtype.newbyteorder("<"))
  if not isinstance(state, dict):
    raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
  return {name: tensor.materialise() for name, tensor in state.items()}
