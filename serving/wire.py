"""What the two ends of TF Serving agree on: ports, names, version folders, SavedModel signatures.

Clients (:mod:`musicrec.serving.client`), the training side (the Pusher and
the bulk inference handler in ``musicrec.components``) and the server all
read these from here, so none of them imports the server's internals
(``servables``, ``server``, ``model_registry``, ...). Layout, as TF Serving
reads it::

    <base_path>/<version>/saved_model.pb    # version: a non-negative integer

Children whose names are not integers (e.g. ``.tmp-7`` while the pusher
copies) are ignored, exactly as TF Serving's file system source does.
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

# TensorFlow, protobuf and grpc are imported where they are used, so that the
# command line reads the default ports without loading them (``musicrec --help``).
if TYPE_CHECKING:
    from tensorflow.core.framework import tensor_shape_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

# TF Serving's default ports (``--port``, ``--rest_api_port``).
DEFAULT_GRPC_PORT = 8500
DEFAULT_REST_PORT = 8501
# Where the local server listens and clients call unless told otherwise.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_GRPC_TARGET = f"{DEFAULT_HOST}:{DEFAULT_GRPC_PORT}"
DEFAULT_REST_URL = f"http://{DEFAULT_HOST}:{DEFAULT_REST_PORT}"

# The ModelServerConfig that lists every model of a serving base: ``<serving_base>/models.config``.
MODELS_CONFIG = "models.config"


def serving_base(workdir: str) -> str:
    """Where a workdir's pushed models go and ``musicrec serve --workdir`` reads them.

    ``<workdir>/serving/<model_name>/<version>``: the pipeline's pushers write
    there, the command line serves it.
    """
    return os.path.join(workdir, "serving")

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
    SavedModelError
        (a ValueError) DATA_LOSS when the proto cannot be parsed, NOT_FOUND
        when it has no MetaGraph tagged ``tag``: the codes TensorFlow's C++
        loader, and so TF Serving, reports for them.
    """
    import grpc
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    from musicrec.serving.errors import SavedModelError

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
        raise SavedModelError(grpc.StatusCode.DATA_LOSS, f"Can't parse {path} as binary proto: {error}") \
            from error
    for meta_graph in saved_model.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    tags = [list(graph.meta_info_def.tags) for graph in saved_model.meta_graphs]
    raise SavedModelError(grpc.StatusCode.NOT_FOUND, f"{path} has no MetaGraph tagged {tag!r} (tags: {tags})")


def dtype_name(dtype_enum: int) -> str:
    """Readable name of a ``types_pb2.DataType`` value, e.g. ``"float32"``."""
    import tensorflow as tf

    try:
        return tf.dtypes.as_dtype(dtype_enum).name
    except TypeError:  # DT_INVALID or a value newer than this TF
        return f"DataType({dtype_enum})"


def shape_dims(shape: tensor_shape_pb2.TensorShapeProto) -> tuple[int | None, ...] | None:
    """Dimensions of a TensorShapeProto, None for unknown sizes; None if rank unknown."""
    if shape.unknown_rank:
        return None
    return tuple(dim.size if dim.size >= 0 else None for dim in shape.dim)
