"""One loaded SavedModel version (a "servable") and how a request against it is checked.

Version folders and the SavedModel's signatures on disk are read by
:mod:`musicrec.serving.wire`; a version is loaded by :mod:`musicrec.serving.loading`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from musicrec.serving.errors import ServingError
from musicrec.serving.signature_call import SignatureCaller
from musicrec.serving.tensor_proto import element_count, shape_of, to_ndarray
from musicrec.serving.wire import DEFAULT_SIGNATURE_NAME, dtype_name, shape_dims


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _item_bytes(dtype_enum: int) -> int:
    """Bytes one element of ``dtype_enum`` takes decoded (a string or an unknown dtype: a pointer, 8)."""
    if dtype_enum == types_pb2.DT_STRING:
        return 8
    try:
        return tf.dtypes.as_dtype(dtype_enum).size
    except TypeError:  # DT_INVALID or newer than this TF; such an input never decodes anyway
        return 8


def _decode_input(
    alias: str,
    proto: tensor_pb2.TensorProto,
    expected_dtype: int,
    item_bytes: int,
    max_decoded_bytes: int,
) -> np.ndarray:
    """One request TensorProto → ndarray, checked for dtype and size (shape later).

    ``expected_dtype`` is the signature's ``DataType`` for ``alias`` and
    ``item_bytes`` its ``_item_bytes``.
    """
    if proto.dtype != expected_dtype:
        raise _invalid(
            f"Expects arg[{alias}] to be {dtype_name(expected_dtype)} "
            f"but {dtype_name(proto.dtype)} is provided"
        )
    dims = shape_of(proto)
    if dims and min(dims) < 0:
        raise _invalid(f"tensor parsing error: {alias}: negative dimension in shape {dims}")
    num_elements = element_count(dims)
    # A repeated-field proto may hold one value that fills a huge shape;
    # refuse before numpy allocates it.
    if num_elements * item_bytes > max_decoded_bytes:
        raise _invalid(
            f"tensor parsing error: {alias}: shape {dims} expands to "
            f"{num_elements * item_bytes} bytes, over the {max_decoded_bytes}-byte limit"
        )
    try:
        return to_ndarray(proto)
    except Exception as error:  # numpy/TF raise ValueError, TypeError, ...
        raise _invalid(f"tensor parsing error: {alias}: {error}") from error


def _check_shape(alias: str, array: np.ndarray, expected: tuple[int | None, ...] | None) -> None:
    if expected is not None and (
        len(expected) != array.ndim
        or any(want is not None and want != got for want, got in zip(expected, array.shape))
    ):
        readable = "[" + ", ".join("?" if size is None else str(size) for size in expected) + "]"
        raise _invalid(
            f"input {alias} has shape {list(array.shape)} but the signature expects {readable}"
        )


def op_error_status(error: tf.errors.OpError) -> grpc.StatusCode:
    """TF and gRPC share the canonical status codes; map by number."""
    for status in grpc.StatusCode:
        if status.value[0] == error.error_code:
            return status
    return grpc.StatusCode.INTERNAL


@dataclass(frozen=True)
class Servable:
    """One loaded version of one model.

    Attributes
    ----------
    name : str
        Model name as configured on the server.
    version : int
        Version folder number.
    path : str
        Export directory ``<base_path>/<version>``.
    signature_defs : Mapping[str, SignatureDef]
        Every SignatureDef of the ``serve`` MetaGraph, as stored on disk.
    functions : Mapping[str, Any]
        Callable signature functions of the loaded SavedModel, by name.
    """

    name: str
    version: int
    path: str
    signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]
    functions: Mapping[str, Any] = field(repr=False)
    # Keeps the restored object (and its variables) alive with the functions.
    saved_model: Any = field(repr=False, default=None)
    # Signature key → _SignaturePlan, filled on first use: the protos are
    # immutable once loaded, so a request never re-reads them.
    _plans: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def signature_def_map(self) -> Any:
        """The ``tensorflow.serving.SignatureDefMap`` GetModelMetadata packs."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in self.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature)
        return signature_map

    def signature(self, signature_name: str) -> meta_graph_pb2.SignatureDef:
        """The SignatureDef of a callable signature ("" means ``serving_default``).

        Raises
        ------
        ServingError
            FAILED_PRECONDITION for an unknown signature, as TF Serving answers.
        """
        return self._plan(signature_name).signature

    def _plan(self, signature_name: str) -> "_SignaturePlan":
        signature_name = signature_name or DEFAULT_SIGNATURE_NAME
        plan = self._plans.get(signature_name)
        if plan is not None:
            return plan
        if signature_name not in self.functions:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{signature_name}" not found. '
                f"Available signatures: {sorted(self.functions)}",
            )
        plan = self._plans[signature_name] = _SignaturePlan(
            self.signature_defs[signature_name], self.functions[signature_name])
        return plan

    def prepare(
        self,
        signature_name: str,
        inputs: Mapping[str, tensor_pb2.TensorProto],
        output_filter: Sequence[str] = (),
        max_decoded_bytes: int = 1 << 30,
    ) -> "PreparedCall":
        """Decode and check a Predict request's tensors (see ``predict``)."""
        plan = self._plan(signature_name)
        plan.check_input_names(inputs)
        arrays = {
            alias: _decode_input(alias, proto, plan.input_dtype_enums[alias], plan.input_item_bytes[alias],
                                 max_decoded_bytes)
            for alias, proto in inputs.items()
        }
        return self.prepare_arrays(signature_name, arrays, output_filter)

    def prepare_arrays(
        self,
        signature_name: str,
        arrays: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
    ) -> "PreparedCall":
        """Check already-typed input arrays (e.g. decoded from REST JSON) against a signature."""
        signature_name = signature_name or DEFAULT_SIGNATURE_NAME
        plan = self._plan(signature_name)
        plan.check_input_names(arrays)
        output_aliases = (_select_outputs(plan.signature, output_filter) if output_filter
                          else list(plan.output_aliases))
        for alias, array in arrays.items():
            _check_shape(alias, array, plan.input_shapes[alias])
        return PreparedCall(signature_name, dict(arrays), output_aliases)

    def execute(self, signature_name: str, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a checked call; every output alias → array (strings as ``object`` bytes).

        The inputs must have passed ``prepare``/``prepare_arrays`` (names,
        dtypes, shapes): the signature runs through ``SignatureCaller``'s flat
        call, which leaves those checks to them.
        """
        try:
            return self._plan(signature_name).call(arrays)
        except tf.errors.OpError as error:
            raise ServingError(op_error_status(error), error.message) from error
        except (TypeError, ValueError) as error:
            raise _invalid(f"signature {signature_name} rejected the inputs: {error}") from error

    def predict(
        self,
        signature_name: str,
        inputs: Mapping[str, tensor_pb2.TensorProto],
        output_filter: Sequence[str] = (),
        max_decoded_bytes: int = 1 << 30,
    ) -> dict[str, np.ndarray]:
        """Run one signature on request tensors, with TF Serving's checks.

        Parameters
        ----------
        signature_name : str
            Signature key; empty means ``serving_default``.
        inputs : Mapping[str, TensorProto]
            Input alias → tensor; must name exactly the signature's inputs.
        output_filter : Sequence[str]
            Output aliases to return; empty returns all outputs.
        max_decoded_bytes : int
            Upper bound on one decoded input tensor, in bytes.

        Returns
        -------
        dict[str, np.ndarray]
            Output alias → array (``object`` dtype of ``bytes`` for strings).

        Raises
        ------
        ServingError
            FAILED_PRECONDITION for an unknown signature (TF Serving's code),
            INVALID_ARGUMENT for missing/extra inputs, wrong dtype or shape,
            unparsable tensors and unknown output aliases.
        """
        call = self.prepare(signature_name, inputs, output_filter, max_decoded_bytes)
        outputs = self.execute(call.signature_name, call.arrays)
        return {alias: outputs[alias] for alias in call.output_aliases}


class _SignaturePlan:
    """What a request against one SignatureDef is checked and converted with, read once."""

    __slots__ = ("signature", "input_names", "input_shapes", "input_dtype_enums", "input_item_bytes",
                 "output_aliases", "call")

    def __init__(self, signature: meta_graph_pb2.SignatureDef, function: Any) -> None:
        self.signature = signature
        self.input_names = frozenset(signature.inputs)
        self.input_shapes = {alias: shape_dims(info.tensor_shape) for alias, info in signature.inputs.items()}
        self.input_dtype_enums = {alias: info.dtype for alias, info in signature.inputs.items()}
        self.input_item_bytes = {alias: _item_bytes(info.dtype) for alias, info in signature.inputs.items()}
        self.output_aliases = list(signature.outputs)
        self.call = SignatureCaller(function, signature)

    def check_input_names(self, inputs: Mapping[str, Any]) -> None:
        if len(inputs) != len(self.input_names) or any(alias not in self.input_names for alias in inputs):
            _check_input_names(self.signature, inputs)


@dataclass(frozen=True)
class PreparedCall:
    """A checked request: signature key, input alias → array, outputs to return."""

    signature_name: str
    arrays: Mapping[str, np.ndarray]
    output_aliases: list[str]


def _check_input_names(
    signature: meta_graph_pb2.SignatureDef, inputs: Mapping[str, Any]
) -> None:
    requested, expected = set(inputs), set(signature.inputs)
    if requested == expected:
        return
    # TF Serving's wording, so clients see the same text from either server.
    raise _invalid(
        f"input size does not match signature: {len(requested)}!={len(expected)} "
        f"len({{{','.join(sorted(requested))}}}) != len({{{','.join(sorted(expected))}}}). "
        f"Sent extra: {{{','.join(sorted(requested - expected))}}}. "
        f"Missing but required: {{{','.join(sorted(expected - requested))}}}."
    )


def _select_outputs(
    signature: meta_graph_pb2.SignatureDef, output_filter: Sequence[str]
) -> list[str]:
    if not output_filter:
        return list(signature.outputs)
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise _invalid(
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {{{','.join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise _invalid(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return list(output_filter)
