"""``tf.train.Example`` bytes without TensorFlow: a small protobuf wire encoder.

Beam workers that only serialise examples need not import TensorFlow (seconds
per worker process, and hundreds of MB): this module writes the messages of
``tensorflow/core/example/{example,feature}.proto``::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                            Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }

Map entries are written sorted by their keys' UTF-8 bytes, float lists as one
little-endian float32 block (``numpy.tobytes``, no per-element work), int64
lists as packed two's-complement varints. The bytes equal
``SerializeToString(deterministic=True)`` of the same ``tf.train.Example``
whenever no key is a prefix of another (protobuf's Python runtime orders such
keys its own way; any order parses to the same message).
``tests/components/test_example_wire.py`` checks both against TensorFlow.

Usage::

    payload = encode_example({"log_mel": floats(segment), "label": int64s([3]),
                              "genre": byte_strings(["rock"])})
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

# Field numbers of feature.proto's Feature.kind oneof.
_BYTES_LIST, _FLOAT_LIST, _INT64_LIST = 1, 2, 3
_UINT64_MASK = (1 << 64) - 1
_ONE_BYTE = [bytes([value]) for value in range(128)]


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of an int; negative ints as 64-bit two's complement (10 bytes)."""
    if 0 <= value < 128:  # tags, short lengths and small ints: most calls
        return _ONE_BYTE[value]
    value &= _UINT64_MASK
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | 0x80 if value else low)
        if not value:
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    """Tag (wire type 2) + length + payload of one field."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload


class EncodedFeature(bytes):
    """The serialised ``tf.train.Feature`` message (what the map entry's value holds)."""


def floats(values: np.ndarray | Iterable[float]) -> EncodedFeature:
    """A ``float_list`` feature of ``values`` flattened row-major, as float32."""
    payload = np.ascontiguousarray(values, dtype="<f4").tobytes()
    body = _length_delimited(1, payload) if payload else b""  # packed: an empty list is no field
    return EncodedFeature(_length_delimited(_FLOAT_LIST, body))


def int64s(values: Iterable[int]) -> EncodedFeature:
    """An ``int64_list`` feature (values in the int64 range; negatives allowed)."""
    payload = b"".join(varint(int(value)) for value in values)
    body = _length_delimited(1, payload) if payload else b""
    return EncodedFeature(_length_delimited(_INT64_LIST, body))


_VALUE_TAG = varint(1 << 3 | 2)  # field 1 (``value``), wire type 2


def byte_strings(values: Iterable[bytes | str]) -> EncodedFeature:
    """A ``bytes_list`` feature; ``str`` values are encoded as UTF-8."""
    parts = []
    for value in values:  # inlined _length_delimited: a record holds dozens of short strings
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        size = len(data)
        parts.append(_VALUE_TAG + (_ONE_BYTE[size] if size < 128 else varint(size)) + data)
    return EncodedFeature(_length_delimited(_BYTES_LIST, b"".join(parts)))


def encode_example(feature_map: Mapping[str, EncodedFeature]) -> bytes:
    """Serialised ``tf.train.Example`` with ``feature_map`` as its features.

    Args:
        feature_map: feature name -> a value from :func:`floats`, :func:`int64s`
            or :func:`byte_strings`.

    Returns:
        The serialised message (see the module docstring for how it compares
        with TensorFlow's own serialisation).
    """
    entries = b"".join(
        _length_delimited(1, _length_delimited(1, name.encode("utf-8")) + _length_delimited(2, feature))
        for name, feature in sorted(feature_map.items(), key=lambda item: item[0].encode("utf-8")))
    return _length_delimited(1, entries)


__all__ = ["EncodedFeature", "byte_strings", "encode_example", "floats", "int64s", "varint"]
