"""Version folders on disk and one loaded SavedModel version (a "servable").

Layout, as TF Serving reads it::

    <base_path>/<version>/saved_model.pb    # version: a non-negative integer

Children whose names are not integers (e.g. ``.tmp-7`` while the pusher
copies) are ignored, exactly as TF Serving's file system source does.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from musicrec.serving.errors import ServingError

SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"
SERVE_TAG = "serve"
DEFAULT_SIGNATURE_NAME = "serving_default"

_VERSION_NAME = re.compile(r"^[0-9]+$")


def list_versions(base_path: str | os.PathLike) -> list[int]:
    """Integer version folders under ``base_path``, ascending.

    Parameters
    ----------
    base_path : str or os.PathLike
        Folder that holds one sub-folder per model version.

    Returns
    -------
    list of int
        Versions found; empty when ``base_path`` does not exist. Names that are
        not plain integers and plain files are ignored.
    """
    try:
        entries = list(os.scandir(base_path))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        int(entry.name)
        for entry in entries
        if _VERSION_NAME.match(entry.name) and entry.is_dir()
    )


def saved_model_file(export_dir: str | os.PathLike) -> str | None:
    """Path of the SavedModel proto in ``export_dir``, or None when absent."""
    for name in (SAVED_MODEL_PB, SAVED_MODEL_PBTXT):
        candidate = os.path.join(export_dir, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def read_signature_defs(
    export_dir: str | os.PathLike, tag: str = SERVE_TAG
) -> dict[str, meta_graph_pb2.SignatureDef]:
    """Every SignatureDef of the ``tag`` MetaGraph, read from the proto on disk.

    This is the map TF Serving returns from GetModelMetadata, including
    ``__saved_model_init_op``.

    Raises
    ------
    FileNotFoundError
        When ``export_dir`` holds no ``saved_model.pb`` / ``saved_model.pbtxt``.
    ValueError
        When the proto cannot be parsed or has no MetaGraph tagged ``tag``.
    """
    path = saved_model_file(export_dir)
    if path is None:
        raise FileNotFoundError(f"no {SAVED_MODEL_PB} in {export_dir}")
    saved_model = saved_model_pb2.SavedModel()
    with open(path, "rb") as proto_file:
        content = proto_file.read()
    try:
        if path.endswith(".pbtxt"):
            text_format.Parse(content.decode("utf-8"), saved_model)
        else:
            saved_model.ParseFromString(content)
    except Exception as error:  # protobuf raises several unrelated types
        raise ValueError(f"cannot parse {path}: {error}") from error
    for meta_graph in saved_model.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    tags = [list(graph.meta_info_def.tags) for graph in saved_model.meta_graphs]
    raise ValueError(f"{path} has no MetaGraph tagged {tag!r} (tags: {tags})")


def dtype_name(dtype_enum: int) -> str:
    """Readable name of a ``types_pb2.DataType`` value, e.g. ``"float32"``."""
    try:
        return tf.dtypes.as_dtype(dtype_enum).name
    except TypeError:  # DT_INVALID or a value newer than this TF
        return f"DataType({dtype_enum})"


def shape_dims(shape: tensor_shape_pb2.TensorShapeProto) -> tuple[int | None, ...] | None:
    """Dimensions of a TensorShapeProto, None for unknown sizes; None if rank unknown."""
    if shape.unknown_rank:
        return None
    return tuple(dim.size if dim.size >= 0 else None for dim in shape.dim)


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _decode_input(
    alias: str,
    proto: tensor_pb2.TensorProto,
    spec: meta_graph_pb2.TensorInfo,
    max_decoded_bytes: int,
) -> np.ndarray:
    """One request TensorProto → ndarray, checked against its signature entry."""
    if proto.dtype != spec.dtype:
        raise _invalid(
            f"Expects arg[{alias}] to be {dtype_name(spec.dtype)} "
            f"but {dtype_name(proto.dtype)} is provided"
        )
    dims = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in dims):
        raise _invalid(f"tensor parsing error: {alias}: negative dimension in shape {dims}")
    num_elements = int(np.prod(dims, dtype=np.int64))
    item_bytes = 8 if proto.dtype == types_pb2.DT_STRING else tf.dtypes.as_dtype(proto.dtype).size
    # A repeated-field proto may hold one value that fills a huge shape;
    # refuse before numpy allocates it.
    if num_elements * item_bytes > max_decoded_bytes:
        raise _invalid(
            f"tensor parsing error: {alias}: shape {dims} expands to "
            f"{num_elements * item_bytes} bytes, over the {max_decoded_bytes}-byte limit"
        )
    try:
        array = tf.make_ndarray(proto)
    except Exception as error:  # numpy/TF raise ValueError, TypeError, ...
        raise _invalid(f"tensor parsing error: {alias}: {error}") from error
    expected = shape_dims(spec.tensor_shape)
    if expected is not None and (
        len(expected) != array.ndim
        or any(want is not None and want != got for want, got in zip(expected, array.shape))
    ):
        readable = "[" + ", ".join("?" if size is None else str(size) for size in expected) + "]"
        raise _invalid(
            f"input {alias} has shape {list(array.shape)} but the signature expects {readable}"
        )
    return array


def _status_of(error: tf.errors.OpError) -> grpc.StatusCode:
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

    def signature_def_map(self) -> Any:
        """The ``tensorflow.serving.SignatureDefMap`` GetModelMetadata packs."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in self.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature)
        return signature_map

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
        signature_name = signature_name or DEFAULT_SIGNATURE_NAME
        function = self.functions.get(signature_name)
        if function is None:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{signature_name}" not found. '
                f"Available signatures: {sorted(self.functions)}",
            )
        signature = self.signature_defs[signature_name]
        _check_input_names(signature, inputs)
        output_aliases = _select_outputs(signature, output_filter)
        arrays = {
            alias: _decode_input(alias, proto, signature.inputs[alias], max_decoded_bytes)
            for alias, proto in inputs.items()
        }
        tensors = {
            alias: tf.convert_to_tensor(array, dtype=tf.dtypes.as_dtype(signature.inputs[alias].dtype))
            for alias, array in arrays.items()
        }
        try:
            results = function(**tensors)
        except tf.errors.OpError as error:
            raise ServingError(_status_of(error), error.message) from error
        except (TypeError, ValueError) as error:
            raise _invalid(f"signature {signature_name} rejected the inputs: {error}") from error
        return {alias: np.asarray(results[alias]) for alias in output_aliases}


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


def load_servable(name: str, version: int, path: str | os.PathLike) -> Servable:
    """Load one SavedModel version and its callable signatures.

    Only signatures present both in the proto and as restored functions are
    callable (``__saved_model_init_op`` is listed but never callable).

    Raises
    ------
    FileNotFoundError, ValueError
        From ``read_signature_defs`` when the proto is missing or malformed.
    Exception
        Whatever ``tf.saved_model.load`` raises for a broken export.
    """
    path = os.fspath(path)
    signature_defs = read_signature_defs(path)
    saved_model = tf.saved_model.load(path, tags=[SERVE_TAG])
    functions = {
        key: function
        for key, function in saved_model.signatures.items()
        if key in signature_defs
    }
    return Servable(
        name=name,
        version=version,
        path=path,
        signature_defs=signature_defs,
        functions=functions,
        saved_model=saved_model,
    )
