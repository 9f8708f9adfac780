"""Loading one SavedModel version from disk, as TF Serving's loader does.

``load_servable`` reads the SignatureDefs, restores the SavedModel and
replays its warmup requests (``assets.extra/tf_serving_warmup_requests``);
``load_error_status`` is the status a failed load reports in GetModelStatus.
"""
from __future__ import annotations

import os
from typing import Mapping

import grpc
import numpy as np
import tensorflow as tf

from musicrec.serving import example_inference
from musicrec.serving.errors import SavedModelError, ServingError
from musicrec.serving.servables import Servable, op_error_status
from musicrec.serving.warmup import read_warmup_requests
from musicrec.serving.wire import SERVE_TAG, read_signature_defs


def load_servable(name: str, version: int, path: str | os.PathLike, warmup: bool = True,
                  check_method_name: bool = False) -> Servable:
    """Load one SavedModel version and its callable signatures.

    Only signatures present both in the proto and as restored functions are
    callable (``__saved_model_init_op`` is listed but never callable).

    Parameters
    ----------
    name, version, path
        Model name, version number and export directory.
    warmup : bool
        Replay the export's warmup requests (``--enable_model_warmup``).
    check_method_name : bool
        ``--enable_signature_method_name_check``, for warmup Classify/Regress.

    Raises
    ------
    FileNotFoundError, SavedModelError
        From ``read_signature_defs`` when the proto is missing or malformed,
        or from ``replay_warmup``.
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
    servable = Servable(
        name=name,
        version=version,
        path=path,
        signature_defs=signature_defs,
        functions=functions,
        saved_model=saved_model,
    )
    if warmup:
        replay_warmup(servable, check_method_name)
    return servable


def replay_warmup(servable: Servable, check_method_name: bool = False) -> int:
    """Run the export's warmup requests (``assets.extra``) once; return how many ran.

    Predict, Classify, Regress and MultiInference records run, as
    ``servables/tensorflow/saved_model_warmup.cc`` runs them.

    Raises
    ------
    SavedModelError
        When the warmup file is corrupt, holds another request kind
        (UNIMPLEMENTED) or a request fails (its own status): TF Serving then
        fails the whole load, and so does this server.
    """
    def run(signature_name: str, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        call = servable.prepare_arrays(signature_name, arrays)
        return servable.execute(call.signature_name, call.arrays)

    handlers = {
        "predict_log": lambda request: servable.predict(request.model_spec.signature_name, request.inputs,
                                                        output_filter=list(request.output_filter)),
        "classify_log": lambda request: example_inference.classify(servable, request, run, check_method_name),
        "regress_log": lambda request: example_inference.regress(servable, request, run, check_method_name),
        "multi_inference_log": lambda request: example_inference.multi_inference(servable, request, run,
                                                                                 check_method_name),
    }
    logs = read_warmup_requests(servable.path)
    for index, log in enumerate(logs):
        kind = log.WhichOneof("log_type")
        if kind not in handlers:
            raise SavedModelError(grpc.StatusCode.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}")
        try:
            handlers[kind](getattr(log, kind).request)
        except ServingError as error:
            raise SavedModelError(error.code, f"warmup request {index} of {servable.path} failed: "
                                              f"{error.message}") from error
    return len(logs)


def load_error_status(error: BaseException) -> grpc.StatusCode:
    """The status a failed load reports in GetModelStatus, as TF Serving's loader would.

    ``SavedModelError`` and ``ServingError`` carry theirs; TensorFlow errors
    map by number; a missing file is NOT_FOUND; anything else UNKNOWN.
    """
    if isinstance(error, (SavedModelError, ServingError)):
        return error.code
    if isinstance(error, tf.errors.OpError):
        return op_error_status(error)
    if isinstance(error, FileNotFoundError):
        return grpc.StatusCode.NOT_FOUND
    return grpc.StatusCode.UNKNOWN
