"""SavedModel warmup requests, in the format ``tensorflow_model_server`` replays.

TF Serving reads ``<export_dir>/assets.extra/tf_serving_warmup_requests``: a
TFRecord file of serialized ``tensorflow.serving.PredictionLog`` messages
(at most 1000), and runs each one before the version is marked AVAILABLE,
so the first real request does not pay for graph tracing. A failing warmup
request fails the load. The pusher writes one Predict request per model
(``build_predict_warmup``); ``LocalModelServer`` replays them on load.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from musicrec.serving.errors import SavedModelError

WARMUP_FOLDER = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit


def warmup_path(export_dir: str | os.PathLike) -> str:
    """``<export_dir>/assets.extra/tf_serving_warmup_requests``."""
    return os.path.join(os.fspath(export_dir), WARMUP_FOLDER, WARMUP_FILE)


def _zero_input(info: meta_graph_pb2.TensorInfo) -> np.ndarray:
    """Smallest valid tensor for a signature input: unknown sizes become 1.

    Zeros for numbers, ``""`` for strings (the next-track model's padding
    token), ``False`` for booleans.
    """
    if info.tensor_shape.unknown_rank:
        raise ValueError("cannot build a warmup input of unknown rank")
    shape = [dim.size if dim.size >= 0 else 1 for dim in info.tensor_shape.dim]
    if info.dtype == types_pb2.DT_STRING:
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, dtype=tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)


def build_predict_warmup(
    signature_defs: Mapping[str, meta_graph_pb2.SignatureDef],
    model_name: str,
    signature_name: str = "serving_default",
) -> prediction_log_pb2.PredictionLog:
    """One PredictionLog holding a batch-of-one Predict request for ``signature_name``.

    Raises
    ------
    ValueError
        When the signature is missing or an input has unknown rank.
    """
    if signature_name not in signature_defs:
        raise ValueError(f"no signature {signature_name!r} to warm up (have {sorted(signature_defs)})")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    for alias, info in signature_defs[signature_name].inputs.items():
        request.inputs[alias].CopyFrom(
            tf.make_tensor_proto(_zero_input(info), dtype=tf.dtypes.as_dtype(info.dtype))
        )
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.CopyFrom(request)
    return log


def write_warmup_requests(
    export_dir: str | os.PathLike, logs: Sequence[prediction_log_pb2.PredictionLog]
) -> str:
    """Write ``logs`` as the export's warmup TFRecord file, atomically; return its path."""
    if not 0 < len(logs) <= MAX_WARMUP_RECORDS:
        raise ValueError(f"give 1 to {MAX_WARMUP_RECORDS} warmup requests, got {len(logs)}")
    path = warmup_path(export_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staging = f"{path}.tmp-{os.getpid()}"
    with tf.io.TFRecordWriter(staging) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    os.replace(staging, path)
    return path


def read_warmup_requests(export_dir: str | os.PathLike) -> list[prediction_log_pb2.PredictionLog]:
    """The export's warmup requests; empty when it has none.

    Raises
    ------
    SavedModelError
        (a ValueError) DATA_LOSS when the file is corrupt, INVALID_ARGUMENT
        when it holds more than ``MAX_WARMUP_RECORDS`` records.
    """
    path = warmup_path(export_dir)
    if not os.path.isfile(path):
        return []
    logs = []
    try:
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            if len(logs) == MAX_WARMUP_RECORDS:
                raise SavedModelError(grpc.StatusCode.INVALID_ARGUMENT,
                                      f"{path}: more than {MAX_WARMUP_RECORDS} warmup records")
            log = prediction_log_pb2.PredictionLog()
            log.ParseFromString(record)
            logs.append(log)
    except tf.errors.OpError as error:
        raise SavedModelError(grpc.StatusCode.DATA_LOSS, f"{path}: corrupt warmup file: {error.message}") \
            from error
    except DecodeError as error:
        raise SavedModelError(grpc.StatusCode.DATA_LOSS,
                              f"{path}: a warmup record is not a PredictionLog: {error}") from error
    return logs
