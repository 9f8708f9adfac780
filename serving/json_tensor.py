"""TF Serving's REST JSON ⇄ tensors, as its REST API document describes.

Request bodies of ``:predict`` (``signature_name`` optional, exactly one of
``instances`` or ``inputs``):

- row format, ``{"instances": [...]}``: one list entry per example; with a
  single-input signature an entry is the input's value, otherwise (or by
  choice) an object ``{"alias": value, ...}`` naming every input. The
  entries are stacked along a new dim 0.
- columnar format, ``{"inputs": value}`` or ``{"inputs": {"alias": value}}``:
  each value is the whole tensor, batch dimension included.

Binary strings are ``{"b64": "<base64>"}``; other strings are UTF-8 text.

Responses: ``{"predictions": [...]}`` for the row format (one entry per
example: the value itself for a single output, else an object by output
alias), ``{"outputs": value_or_object}`` for the columnar format. String
outputs whose alias ends in ``_bytes`` come back as ``{"b64": ...}``.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from musicrec.serving.errors import ServingError
from musicrec.serving.example_json import json_type

BINARY_KEY = "b64"
BYTES_SUFFIX = "_bytes"


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and BINARY_KEY in value


# AddValueToTensor (util/json_tensor.cc): the JSON integers each dtype takes
# (rapidjson's IsInt, IsInt64, IsUint, IsUint64); narrower ints take any int32.
_INT32_RANGE = (-(2**31), 2**31 - 1)
_INTEGER_RANGES = {
    types_pb2.DT_INT32: _INT32_RANGE, types_pb2.DT_INT16: _INT32_RANGE, types_pb2.DT_INT8: _INT32_RANGE,
    types_pb2.DT_UINT8: _INT32_RANGE, types_pb2.DT_INT64: (-(2**63), 2**63 - 1),
    types_pb2.DT_UINT32: (0, 2**32 - 1), types_pb2.DT_UINT64: (0, 2**64 - 1),
}
_FLOAT_DTYPES = (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE)


def dtype_string(dtype: int) -> str:
    """TensorFlow's ``DataTypeString``: ``float``, ``int32``, ``string``..."""
    return types_pb2.DataType.Name(dtype)[len("DT_"):].lower()


def _type_error(value: Any, dtype: int) -> ServingError:
    return _invalid(f"JSON Value: {json.dumps(value)[:200]} Type: {json_type(value)} "
                    f"is not of expected type: {dtype_string(dtype)}")


def _leaf(value: Any, dtype: int, alias: str) -> Any:
    """One JSON scalar checked against the input's dtype, as ``AddValueToTensor`` checks it."""
    if dtype == types_pb2.DT_STRING:
        if isinstance(value, str):
            return value.encode("utf-8")
        if _is_b64(value) and isinstance(value[BINARY_KEY], str):
            try:
                return base64.b64decode(value[BINARY_KEY], validate=True)
            except (binascii.Error, ValueError) as error:
                raise _invalid(f"Unable to base64 decode value of {alias}: {error}") from None
        if isinstance(value, dict):
            raise _invalid(f"JSON Value: {json.dumps(value)[:200]} not formatted correctly for base64 data")
        raise _type_error(value, dtype)
    if dtype == types_pb2.DT_BOOL:
        if isinstance(value, bool):
            return value
        raise _type_error(value, dtype)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if dtype in _FLOAT_DTYPES:
        if is_number:
            return float(value)
        raise _type_error(value, dtype)
    if dtype in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[dtype]
        if is_number and isinstance(value, int) and low <= value <= high:
            return value
        raise _type_error(value, dtype)
    raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                       f"Conversion of JSON Value: {json.dumps(value)[:200]} to type: {dtype_string(dtype)}")


def _shape_of(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _flatten(value: Any, shape: list[int], depth: int, dtype: int, alias: str, out: list) -> None:
    if depth == len(shape):
        if isinstance(value, list):
            raise _invalid(f"Expecting tensors in list for {alias} to be of same shape (ragged input)")
        out.append(_leaf(value, dtype, alias))
        return
    if not isinstance(value, list) or len(value) != shape[depth]:
        raise _invalid(f"Expecting tensors in list for {alias} to be of same shape (ragged input)")
    for item in value:
        _flatten(item, shape, depth + 1, dtype, alias, out)


def json_to_array(value: Any, info: meta_graph_pb2.TensorInfo, alias: str) -> np.ndarray:
    """A JSON value (nested lists of scalars) → ndarray of the input's dtype.

    Raises
    ------
    ServingError
        INVALID_ARGUMENT for ragged lists or values of the wrong type.
    """
    shape = _shape_of(value)
    flat: list = []
    _flatten(value, shape, 0, info.dtype, alias, flat)
    if info.dtype == types_pb2.DT_STRING:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    numpy_dtype = tf.dtypes.as_dtype(info.dtype).as_numpy_dtype
    if info.dtype in _INTEGER_RANGES:
        # Narrower ints arrive range-checked as int32 and are cast, as TF casts int_val.
        wide = np.uint64 if info.dtype == types_pb2.DT_UINT64 else np.int64
        return np.array(flat, dtype=wide).astype(numpy_dtype).reshape(shape)
    return np.array(flat, dtype=numpy_dtype).reshape(shape)


def parse_predict_body(
    body: Any, signature: meta_graph_pb2.SignatureDef
) -> tuple[dict[str, np.ndarray], bool]:
    """A decoded ``:predict`` JSON body → (input alias → array, row_format).

    Raises
    ------
    ServingError
        INVALID_ARGUMENT for a malformed body, in TF Serving's terms.
    """
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances and has_inputs:
        raise _invalid("Not both 'instances' and 'inputs' can be specified in the request")
    if not has_instances and not has_inputs:
        raise _invalid("Missing 'inputs' or 'instances' key")
    aliases = sorted(signature.inputs)
    if has_instances:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise _invalid("Expecting 'instances' to be an list/array")
        if not instances:
            raise _invalid("No values in 'instances' list")
        named = isinstance(instances[0], dict) and not _is_b64(instances[0])
        if not named:
            if len(aliases) != 1:
                raise _invalid(
                    f"Expecting object with named inputs for each instance; the signature has "
                    f"{len(aliases)} inputs: {aliases}"
                )
            return {aliases[0]: json_to_array(instances, signature.inputs[aliases[0]], aliases[0])}, True
        for index, instance in enumerate(instances):
            if not isinstance(instance, dict) or _is_b64(instance) or set(instance) != set(instances[0]):
                raise _invalid(
                    f"instance {index} does not name the same inputs as instance 0 "
                    f"({sorted(instances[0])})"
                )
        return {
            alias: json_to_array([instance[alias] for instance in instances],
                                 signature.inputs[alias], alias)
            for alias in instances[0]
            if alias in signature.inputs
        } | _unknown_aliases(instances[0], signature), True
    inputs = body["inputs"]
    if isinstance(inputs, dict) and not _is_b64(inputs):
        return {
            alias: json_to_array(value, signature.inputs[alias], alias)
            for alias, value in inputs.items()
            if alias in signature.inputs
        } | _unknown_aliases(inputs, signature), False
    if len(aliases) != 1:
        raise _invalid(f"Expecting object with named inputs; the signature has {len(aliases)} inputs: {aliases}")
    return {aliases[0]: json_to_array(inputs, signature.inputs[aliases[0]], aliases[0])}, False


def _unknown_aliases(named: Mapping[str, Any], signature: meta_graph_pb2.SignatureDef) -> dict[str, np.ndarray]:
    # Extra names are kept (as empty placeholders) so the signature check can
    # report them in TF Serving's "Sent extra" message.
    return {alias: np.zeros(0) for alias in named if alias not in signature.inputs}


def _to_json(array: np.ndarray, alias: str) -> Any:
    if array.dtype == object or array.dtype.kind == "S":
        binary = alias.endswith(BYTES_SUFFIX)
        flat = [
            {BINARY_KEY: base64.b64encode(bytes(item)).decode("ascii")} if binary
            else bytes(item).decode("utf-8", errors="replace")
            for item in array.ravel()
        ]
        holder = np.empty(len(flat), dtype=object)
        holder[:] = flat
        return holder.reshape(array.shape).tolist()
    if array.dtype == np.float32:
        # Shortest decimal that round-trips the float32, as TF Serving prints
        # (0.1, not 0.10000000149011612).
        return np.array([float(text) for text in array.ravel().astype(str)],
                        dtype=np.float64).reshape(array.shape).tolist()
    return array.tolist()


def format_predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    """Output alias → array, in the response shape of the request's format.

    Raises
    ------
    ServingError
        INVALID_ARGUMENT when the row format is asked for outputs whose dim 0
        differ (TF Serving refuses the same).
    """
    if not row_format:
        if len(outputs) == 1:
            ((alias, array),) = outputs.items()
            return {"outputs": _to_json(array, alias)}
        return {"outputs": {alias: _to_json(array, alias) for alias, array in outputs.items()}}
    sizes = {array.shape[0] if array.ndim else None for array in outputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise _invalid(
            "Tensor name(s) have inconsistent batch size: "
            + ", ".join(f"{alias}={list(array.shape)}" for alias, array in outputs.items())
            + "; use the columnar 'inputs' format"
        )
    columns = {alias: _to_json(array, alias) for alias, array in outputs.items()}
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    rows = sizes.pop()
    return {"predictions": [{alias: column[index] for alias, column in columns.items()} for index in range(rows)]}
