"""TensorProto ↔ ndarray on the request path, without ``tf.make_ndarray``'s detours.

``tf.make_tensor_proto`` / ``tf.make_ndarray`` are general (Python lists,
broadcasting of one value, every dtype) and cost 30–100 µs per tensor; a
Predict call converts one input and up to four outputs twice (server and
client). The common cases, a numeric tensor in ``tensor_content`` and a
string tensor in ``string_val``, are a ``np.frombuffer`` / a list copy here;
everything else falls back to TensorFlow's functions, so the results are
identical (``tests/serving/test_serving_parts.py`` checks both paths against them).

Two encodings: requests carry numbers in ``tensor_content`` as
``tf.make_tensor_proto`` writes them (``fill_tensor_proto``); Predict
responses carry them in the typed repeated fields (``float_val``,
``int_val``, ...) as TF Serving's ``Tensor::AsProtoField`` writes them
(``fill_typed_fields``), which is what TF's example clients read.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

# DataType enum ↔ little-endian numpy dtype, for the dtypes whose tensor_content
# is the raw array bytes (TF's wire format is little-endian on every platform).
_NUMPY_OF_ENUM = {
    types_pb2.DT_FLOAT: np.dtype("<f4"),
    types_pb2.DT_DOUBLE: np.dtype("<f8"),
    types_pb2.DT_INT32: np.dtype("<i4"),
    types_pb2.DT_INT64: np.dtype("<i8"),
    types_pb2.DT_INT16: np.dtype("<i2"),
    types_pb2.DT_INT8: np.dtype("i1"),
    types_pb2.DT_UINT8: np.dtype("u1"),
    types_pb2.DT_UINT16: np.dtype("<u2"),
    types_pb2.DT_UINT32: np.dtype("<u4"),
    types_pb2.DT_UINT64: np.dtype("<u8"),
    types_pb2.DT_BOOL: np.dtype("?"),
    types_pb2.DT_HALF: np.dtype("<f2"),
}
_ENUM_OF_NUMPY = {dtype: enum for enum, dtype in _NUMPY_OF_ENUM.items()}
# The dtypes ``tf.make_tensor_proto`` writes to tensor_content (bool and uint16 go to *_val).
_CONTENT_ENCODED = frozenset(_NUMPY_OF_ENUM) - {types_pb2.DT_BOOL, types_pb2.DT_UINT16}
# Tensor::AsProtoField (tensorflow/core/framework/tensor.cc, ProtoHelper): the
# repeated field each dtype's values go to. int8/16 and uint8/16 widen to int_val.
_TYPED_FIELD = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val", types_pb2.DT_INT16: "int_val", types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val", types_pb2.DT_UINT16: "int_val", types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val", types_pb2.DT_UINT64: "uint64_val", types_pb2.DT_BOOL: "bool_val",
}
# Packed fixed-width fields are the raw little-endian array bytes on the wire:
# merging them is a copy, where extending the field converts element by element
# (135 µs for 1 000 floats here). Field numbers of tensorflow.TensorProto.
_PACKED_FIXED_WIDTH = {types_pb2.DT_FLOAT: 5, types_pb2.DT_DOUBLE: 6}


def shape_of(proto: tensor_pb2.TensorProto) -> list[int]:
    """The proto's dimensions (negative sizes kept, for the caller to refuse)."""
    return [dim.size for dim in proto.tensor_shape.dim]


def element_count(dims: list[int]) -> int:
    """Elements of a tensor with non-negative ``dims`` (1 for a scalar).

    ``math.prod`` on Python ints: exact for any size (``np.prod`` in int64
    wraps around), and a tenth of ``np.prod``'s cost on a short list, which
    matters because every request tensor is counted.
    """
    return math.prod(dims)


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """TensorProto → ndarray, as ``tf.make_ndarray`` returns it.

    Numeric ``tensor_content`` becomes a read-only view of the proto's bytes
    (no copy); ``string_val`` an ``object`` array of ``bytes``.

    Raises
    ------
    ValueError
        When ``tensor_content`` does not hold exactly the shape's bytes, or
        whatever ``tf.make_ndarray`` raises for the other encodings.
    """
    dims = shape_of(proto)
    if proto.tensor_content:
        dtype = _NUMPY_OF_ENUM.get(proto.dtype)
        if dtype is not None:
            count = element_count(dims)
            if len(proto.tensor_content) != count * dtype.itemsize:
                raise ValueError(f"tensor_content holds {len(proto.tensor_content)} bytes, "
                                 f"the shape {dims} of {dtype.name} needs {count * dtype.itemsize}")
            return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(dims)
    elif proto.dtype == types_pb2.DT_STRING:
        values = proto.string_val
        if len(values) == element_count(dims):
            array = np.empty(len(values), dtype=object)
            array[:] = list(values)
            return array.reshape(dims)
    elif proto.dtype in _TYPED_FIELD:
        values = getattr(proto, _TYPED_FIELD[proto.dtype])
        count = element_count(dims)
        if count and len(values) == count:
            return np.fromiter(values, dtype=_NUMPY_OF_ENUM[proto.dtype], count=count).reshape(dims)
    return tf.make_ndarray(proto)


def to_bytes_array(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """A DT_STRING TensorProto → numpy ``bytes`` (``S``) array, as
    ``to_ndarray(proto).astype(np.bytes_)`` returns it, without the ``object``
    array in between (numpy ``S`` arrays drop trailing NUL bytes).
    """
    dims = shape_of(proto)
    values = proto.string_val
    if proto.dtype == types_pb2.DT_STRING and not proto.tensor_content and len(values) == element_count(dims):
        return np.array(list(values), dtype=np.bytes_).reshape(dims)
    return to_ndarray(proto).astype(np.bytes_)


def fill_tensor_proto(proto: tensor_pb2.TensorProto, array: np.ndarray) -> tensor_pb2.TensorProto:
    """Writes ``array`` into an empty ``proto`` in place; returns it.

    Numeric arrays go to ``tensor_content``, ``bytes``/``str`` arrays to
    ``string_val`` (``str`` as UTF-8), exactly as ``tf.make_tensor_proto``
    encodes them; other dtypes use it.
    """
    array = np.asarray(array)
    if array.dtype.kind in "OSU":
        return _fill_strings(proto, array)
    enum = _enum_of(array)
    if enum not in _CONTENT_ENCODED or array.size <= 1:  # TF uses the typed *_val fields there
        proto.CopyFrom(tf.make_tensor_proto(array))
        return proto
    proto.dtype = enum
    _set_shape(proto, array.shape)
    proto.tensor_content = np.ascontiguousarray(array, dtype=_NUMPY_OF_ENUM[enum]).tobytes()
    return proto


def fill_typed_fields(proto: tensor_pb2.TensorProto, array: np.ndarray) -> tensor_pb2.TensorProto:
    """Writes ``array`` into an empty ``proto`` as TF Serving answers Predict; returns it.

    Every value goes to the dtype's typed repeated field (``float_val`` for
    float32, ``int_val`` for int32 and narrower ints, ``int64_val``,
    ``bool_val``, ``string_val``, ``half_val`` with float16 bit patterns),
    as ``Tensor::AsProtoField`` writes it (TF Serving's
    ``servables/tensorflow/predict_util.cc`` uses it for every output).
    ``tf.make_ndarray`` decodes either encoding, so clients that read
    ``tensor_content`` through it keep working. Dtypes without a field here
    (complex, bfloat16) fall back to ``tf.make_tensor_proto``.
    """
    array = np.asarray(array)
    if array.dtype.kind in "OSU":
        return _fill_strings(proto, array)
    enum = _enum_of(array)
    if enum in _TYPED_FIELD or enum == types_pb2.DT_HALF:
        proto.dtype = enum
        _set_shape(proto, array.shape)
    if enum in _PACKED_FIXED_WIDTH:
        raw = np.ascontiguousarray(array, dtype=_NUMPY_OF_ENUM[enum]).tobytes()
        if raw:
            proto.MergeFromString(_length_delimited(_PACKED_FIXED_WIDTH[enum], raw))
    elif enum in _TYPED_FIELD:
        getattr(proto, _TYPED_FIELD[enum]).extend(array.ravel().tolist())
    elif enum == types_pb2.DT_HALF:
        proto.half_val.extend(np.ascontiguousarray(array, dtype="<f2").view("<u2").ravel().tolist())
    else:
        proto.CopyFrom(tf.make_tensor_proto(array))
    return proto


def _fill_strings(proto: tensor_pb2.TensorProto, array: np.ndarray) -> tensor_pb2.TensorProto:
    flat = array.ravel().tolist()
    if array.dtype.kind != "S":
        flat = [value.encode("utf-8") if isinstance(value, str) else value for value in flat]
    proto.dtype = types_pb2.DT_STRING
    _set_shape(proto, array.shape)
    proto.string_val.extend(flat)
    return proto


def _enum_of(array: np.ndarray) -> int | None:
    return _ENUM_OF_NUMPY.get(array.dtype if array.dtype.isnative else array.dtype.newbyteorder("<"))


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def _set_shape(proto: tensor_pb2.TensorProto, shape: tuple[int, ...]) -> None:
    dims = proto.tensor_shape.dim
    for size in shape:
        dims.add().size = size


def make_tensor_proto(array: Any) -> tensor_pb2.TensorProto:
    """A new TensorProto holding ``array`` (see :func:`fill_tensor_proto`)."""
    return fill_tensor_proto(tensor_pb2.TensorProto(), np.asarray(array))
