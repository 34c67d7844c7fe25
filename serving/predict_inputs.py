"""A PredictRequest's input tensors -> numpy arrays, checked against the signature before any
memory is allocated for them.

A TensorProto's shape is only a claim: `tf.make_ndarray` fills a tensor of that shape from
whatever values were sent (one value repeats to fill all of them), so 152 bytes that claim
50,000,000 floats would cost 200 MB. Here the claimed element count times the dtype's size must
equal the bytes actually sent in `tensor_content`, or the count of the dtype's repeated `*_val`
field must equal the element count (TF's fill-with-the-last-value shorthand is refused). Every
refusal is INVALID_ARGUMENT naming the input.
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from serving.model_manager import ServingError

# dtype -> (the TensorProto field holding its values when tensor_content is empty, values per
# element).
_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: ("float_val", 1), types_pb2.DT_DOUBLE: ("double_val", 1),
    types_pb2.DT_INT32: ("int_val", 1), types_pb2.DT_INT16: ("int_val", 1),
    types_pb2.DT_INT8: ("int_val", 1), types_pb2.DT_UINT8: ("int_val", 1),
    types_pb2.DT_UINT16: ("int_val", 1), types_pb2.DT_INT64: ("int64_val", 1),
    types_pb2.DT_UINT32: ("uint32_val", 1), types_pb2.DT_UINT64: ("uint64_val", 1),
    types_pb2.DT_BOOL: ("bool_val", 1), types_pb2.DT_STRING: ("string_val", 1),
    types_pb2.DT_HALF: ("half_val", 1), types_pb2.DT_BFLOAT16: ("half_val", 1),
    types_pb2.DT_COMPLEX64: ("scomplex_val", 2), types_pb2.DT_COMPLEX128: ("dcomplex_val", 2),
}


def _invalid(message: str) -> ServingError:
  return ServingError("INVALID_ARGUMENT", message)


def _dtype_name(enum: int) -> str:
  return types_pb2.DataType.Name(enum) if enum in types_pb2.DataType.values() else str(enum)


def checked_array(name: str, proto: tensor_pb2.TensorProto, spec: tf.TensorSpec) -> np.ndarray:
  """One input as an array, once its dtype, rank, static dims and size are what they claim."""
  if proto.dtype not in _VALUE_FIELDS:
    raise _invalid(f"input {name!r} has dtype {_dtype_name(proto.dtype)}, which this server "
                   f"does not take; the signature expects {spec.dtype.name}")
  if proto.dtype != spec.dtype.as_datatype_enum:
    raise _invalid(f"input {name!r} has dtype {tf.dtypes.as_dtype(proto.dtype).name}, the "
                   f"signature expects {spec.dtype.name}")
  if proto.tensor_shape.unknown_rank:
    raise _invalid(f"input {name!r} has an unknown rank; the signature expects shape "
                   f"{spec.shape}")
  dims = [d.size for d in proto.tensor_shape.dim]
  if len(dims) != len(spec.shape):
    raise _invalid(f"input {name!r} has rank {len(dims)}, the signature expects shape "
                   f"{spec.shape}")
  for axis, (size, expected) in enumerate(zip(dims, spec.shape.as_list())):
    if size < 0 or (expected is not None and size != expected):
      raise _invalid(f"input {name!r} has size {size} at axis {axis}, the signature expects "
                     f"shape {spec.shape}")
  elements = math.prod(dims)
  field, per_element = _VALUE_FIELDS[proto.dtype]
  if proto.tensor_content:
    itemsize = tf.dtypes.as_dtype(proto.dtype).size
    if proto.dtype == types_pb2.DT_STRING or len(proto.tensor_content) != elements * itemsize:
      raise _invalid(f"input {name!r}: shape {dims} of {spec.dtype.name} needs "
                     f"{elements * itemsize} bytes of tensor_content, got "
                     f"{len(proto.tensor_content)}")
  elif len(getattr(proto, field)) != elements * per_element:
    raise _invalid(f"input {name!r}: shape {dims} has {elements} elements, but "
                   f"{len(getattr(proto, field)) // per_element} values were sent in {field}")
  return tf.make_ndarray(proto)


def request_inputs(request: predict_pb2.PredictRequest, specs: Dict[str, tf.TensorSpec]
                   ) -> Dict[str, np.ndarray]:
  """The request's tensors as numpy arrays, checked against the signature's inputs."""
  unknown = sorted(set(request.inputs) - set(specs))
  missing = sorted(set(specs) - set(request.inputs))
  if unknown or missing:
    shown = [n if len(n) <= 64 else n[:64] + "..." for n in unknown[:5]]
    raise _invalid(f"inputs do not match the signature: unknown {shown}"
                   f"{f' and {len(unknown) - 5} more' if len(unknown) > 5 else ''}, missing "
                   f"{missing}; expected {sorted(specs)}")
  return {name: checked_array(name, request.inputs[name], spec) for name, spec in specs.items()}
