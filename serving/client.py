"""gRPC client for TF Serving (real binary or ``LocalModelServer``); REST is :mod:`rest_client`.

Example
-------
>>> with PredictionClient("127.0.0.1:8500") as client:          # doctest: +SKIP
...     client.wait_until_ready("genre", timeout_seconds=30)
...     outputs = client.predict("genre", {"log_mel": batch})
...     outputs["genre"]  # numpy bytes array, shape [batch]

A call that found the server unavailable (gRPC ``UNAVAILABLE``) is retried
with exponential backoff; other failures raise ``ServingError`` with the
gRPC status code.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from musicrec.serving.errors import ServingError
from musicrec.serving.tensor_proto import fill_tensor_proto, make_tensor_proto, to_bytes_array, to_ndarray
from musicrec.serving.wire import DEFAULT_GRPC_TARGET, DEFAULT_SIGNATURE_NAME, dtype_name, shape_dims

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SIGNATURE_DEF_FIELD = "signature_def"
_INTERNAL_SIGNATURE_PREFIX = "__"  # e.g. __saved_model_init_op, not callable


def to_tensor_proto(value: Any) -> Any:
    """ndarray-like → TensorProto; str/bytes arrays become DT_STRING (UTF-8)."""
    return make_tensor_proto(value)


def from_tensor_proto(proto: Any) -> np.ndarray:
    """TensorProto → ndarray (writable); string tensors become numpy bytes (``S``) arrays.

    Note: numpy ``S`` arrays drop trailing NUL bytes of each element.
    """
    if proto.dtype == types_pb2.DT_STRING:
        return to_bytes_array(proto)
    array = to_ndarray(proto)
    if array.dtype == object:
        return array.astype(np.bytes_)
    return array if array.flags.writeable else array.copy()


class PredictionClient:
    """Blocking PredictionService client with retries on UNAVAILABLE.

    Parameters
    ----------
    target : str
        ``host:port`` of the model server.
    timeout_seconds : float
        Deadline of each RPC attempt, in seconds.
    retries : int
        Extra attempts after an UNAVAILABLE status (server not up yet or
        restarting), with exponential backoff. Other statuses are not retried.
    backoff_seconds : float
        Sleep before the first retry; doubles on each later one, up to
        ``max_backoff_seconds``.
    max_message_bytes : int
        Largest request or response message, in bytes.
    max_backoff_seconds : float
        Longest sleep between retries, and the longest gRPC waits before
        reconnecting to a restarted server (its default grows to 120 s).
    """

    def __init__(
        self,
        target: str = DEFAULT_GRPC_TARGET,
        timeout_seconds: float = 10.0,
        retries: int = 3,
        backoff_seconds: float = 0.1,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_backoff_seconds: float = 2.0,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.target = target
        self.timeout_seconds = timeout_seconds
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        reconnect_ms = max(100, int(max_backoff_seconds * 1000))
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.initial_reconnect_backoff_ms", min(reconnect_ms, 200)),
                ("grpc.min_reconnect_backoff_ms", min(reconnect_ms, 200)),
                ("grpc.max_reconnect_backoff_ms", reconnect_ms),
            ],
        )
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)

    @staticmethod
    def _spec(request: Any, model_name: str, version: int | None, label: str | None) -> None:
        request.model_spec.name = model_name
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        if version is not None:
            request.model_spec.version.value = version
        if label is not None:
            request.model_spec.version_label = label

    def predict(
        self,
        model_name: str,
        inputs: Mapping[str, Any],
        signature_name: str = DEFAULT_SIGNATURE_NAME,
        version: int | None = None,
        output_filter: Sequence[str] = (),
        label: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Run a signature on the server.

        Parameters
        ----------
        model_name : str
            Model name configured on the server.
        inputs : Mapping[str, array-like]
            Input alias → array; dtypes must match the signature exactly
            (e.g. float32 for ``log_mel``), as TF Serving does not cast.
        signature_name : str
            Signature key.
        version : int or None
            Specific version; None asks for the latest served one.
        output_filter : Sequence[str]
            Output aliases to return; empty returns all.
        label : str or None
            Version label (e.g. ``"stable"``) instead of a version.

        Returns
        -------
        dict[str, np.ndarray]
            Output alias → array; string outputs are numpy bytes arrays.

        Raises
        ------
        ServingError
            With the server's status code and message.
        """
        request = predict_pb2.PredictRequest()
        self._spec(request, model_name, version, label)
        request.model_spec.signature_name = signature_name
        for alias, value in inputs.items():
            fill_tensor_proto(request.inputs[alias], np.asarray(value))
        request.output_filter.extend(output_filter)
        response = self._call("Predict", self._stub.Predict, request)
        return {alias: from_tensor_proto(proto) for alias, proto in response.outputs.items()}

    def classify(self, model_name: str, examples: Sequence[Any], signature_name: str = DEFAULT_SIGNATURE_NAME,
                 version: int | None = None) -> list[list[tuple[str, float]]]:
        """Classify ``tf.train.Example``s; per example, its (label, score) pairs."""
        request = classification_pb2.ClassificationRequest()
        self._spec(request, model_name, version, None)
        request.model_spec.signature_name = signature_name
        for example in examples:
            request.input.example_list.examples.add().CopyFrom(example)
        response = self._call("Classify", self._stub.Classify, request)
        return [[(entry.label, entry.score) for entry in classification.classes]
                for classification in response.result.classifications]

    def get_model_status(self, model_name: str, version: int | None = None,
                         label: str | None = None) -> list[dict[str, Any]]:
        """ModelService.GetModelStatus: ``[{"version", "state", "error_code", "error_message"}]``.

        ``state`` is e.g. ``"AVAILABLE"``; ``error_code`` a ``grpc.StatusCode``.
        TF Serving ignores a ``label`` here and lists every version.
        """
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request, model_name, version, label)
        response = self._call("GetModelStatus", self._model_stub.GetModelStatus, request)
        return [
            {
                "version": entry.version,
                "state": get_model_status_pb2.ModelVersionStatus.State.Name(entry.state),
                "error_code": _status_code(entry.status.error_code),
                "error_message": entry.status.error_message,
            }
            for entry in response.model_version_status
        ]

    def reload_config(self, config: Any) -> None:
        """ModelService.HandleReloadConfigRequest with a ``ModelServerConfig`` proto."""
        request = model_management_pb2.ReloadConfigRequest()
        request.config.CopyFrom(config)
        self._call("HandleReloadConfigRequest", self._model_stub.HandleReloadConfigRequest, request)

    def get_model_metadata(
        self, model_name: str, version: int | None = None
    ) -> dict[str, dict[str, dict[str, tuple[str, tuple[int | None, ...] | None]]]]:
        """Signatures of the served model.

        Returns
        -------
        dict
            Signature name → ``{"inputs": {alias: (dtype, shape)}, "outputs":
            {...}}`` where dtype is e.g. ``"float32"`` and shape a tuple with
            None for unknown sizes (None itself when the rank is unknown).
            Internal signatures (``__saved_model_init_op``) are left out.
        """
        return signature_summary(self.get_signature_def_map(model_name, version))

    def get_signature_def_map(self, model_name: str, version: int | None = None) -> Any:
        """The raw ``SignatureDefMap`` proto from GetModelMetadata."""
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = model_name
        if version is not None:
            request.model_spec.version.value = version
        request.metadata_field.append(SIGNATURE_DEF_FIELD)
        response = self._call("GetModelMetadata", self._stub.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        if not response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map):
            raise ServingError(
                grpc.StatusCode.INTERNAL,
                f"GetModelMetadata on {self.target}: metadata is not a SignatureDefMap",
            )
        return signature_map

    def wait_until_ready(
        self, model_name: str, timeout_seconds: float = 30.0, poll_seconds: float = 0.2
    ) -> dict:
        """Block until ``model_name`` is served; return its ``get_model_metadata``.

        Raises
        ------
        ServingError
            DEADLINE_EXCEEDED (with the last status seen) when the model is not
            served within ``timeout_seconds``; any status other than
            UNAVAILABLE or NOT_FOUND immediately.
        """
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                return self.get_model_metadata(model_name)
            except ServingError as error:
                if error.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                    raise
                last_error = error
            if time.monotonic() + poll_seconds > deadline:
                raise ServingError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"model {model_name!r} not ready on {self.target} after "
                    f"{timeout_seconds:g} s; last status {last_error}",
                )
            time.sleep(poll_seconds)

    def _call(self, method: str, rpc: Callable, request: Any) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return rpc(request, timeout=self.timeout_seconds)
            except grpc.RpcError as error:
                code, details = error.code(), error.details()
                if code != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise ServingError(code, f"{method} on {self.target}: {details}") from None
                time.sleep(min(self.backoff_seconds * 2**attempt, self.max_backoff_seconds))
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> "PredictionClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def signature_summary(signature_map: Any) -> dict:
    """``SignatureDefMap`` → {signature: {"inputs"|"outputs": {alias: (dtype, shape)}}}."""
    summary = {}
    for name, signature in signature_map.signature_def.items():
        if name.startswith(_INTERNAL_SIGNATURE_PREFIX):
            continue
        summary[name] = {
            "inputs": {alias: (dtype_name(info.dtype), shape_dims(info.tensor_shape))
                       for alias, info in signature.inputs.items()},
            "outputs": {alias: (dtype_name(info.dtype), shape_dims(info.tensor_shape))
                        for alias, info in signature.outputs.items()},
        }
    return summary


def _status_code(number: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN
