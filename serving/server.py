"""A local PredictionService gRPC server, compatible with TF Serving's API.

Used when the real ``tensorflow_model_server`` binary is not on PATH. It
implements ``Predict`` and ``GetModelMetadata`` on SavedModels exported with
``model.export()``; Classify, Regress and MultiInference answer UNIMPLEMENTED.
"""
from __future__ import annotations

import logging
from concurrent import futures
from typing import Mapping

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from musicrec.serving.errors import ServingError
from musicrec.serving.model_registry import DEFAULT_POLL_WAIT_SECONDS, ModelRegistry
from musicrec.serving.servables import DEFAULT_SIGNATURE_NAME, Servable

LOGGER = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8500
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_WORKERS = 8
SIGNATURE_DEF_FIELD = "signature_def"


def _servable_for(registry: ModelRegistry, model_spec: model_pb2.ModelSpec) -> Servable:
    if model_spec.WhichOneof("version_choice") == "version_label":
        # No labels are configured on this server, so every label is unknown.
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Unrecognized servable version label: {model_spec.version_label}",
        )
    version = model_spec.version.value if model_spec.HasField("version") else None
    return registry.get(model_spec.name, version)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """PredictionService backed by a ``ModelRegistry``.

    Parameters
    ----------
    registry : ModelRegistry
        Source of the servable for each request's model spec.
    max_decoded_bytes : int
        Upper bound on one decoded input tensor, in bytes.
    """

    def __init__(self, registry: ModelRegistry, max_decoded_bytes: int) -> None:
        self._registry = registry
        self._max_decoded_bytes = max_decoded_bytes

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext):
        return self._answer(self._predict, request, context)

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ):
        return self._answer(self._get_model_metadata, request, context)

    def Classify(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Classify is not implemented by the local server; use Predict")

    def Regress(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Regress is not implemented by the local server; use Predict")

    def MultiInference(self, request, context):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not implemented by the local server; use Predict"
        )

    @staticmethod
    def _answer(handler, request, context: grpc.ServicerContext):
        try:
            return handler(request)
        except ServingError as error:
            context.abort(error.code, error.message)
        except Exception as error:  # a bug must become a status, not a dead worker
            LOGGER.exception("request failed unexpectedly")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")

    def _predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        servable = _servable_for(self._registry, request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE_NAME
        outputs = servable.predict(
            signature_name,
            request.inputs,
            output_filter=list(request.output_filter),
            max_decoded_bytes=self._max_decoded_bytes,
        )
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for alias, array in outputs.items():
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(array))
        return response

    def _get_model_metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.HasField("model_spec"):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        if not request.metadata_field:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "GetModelMetadataRequest must specify at least one metadata_field",
            )
        for metadata_field in request.metadata_field:
            if metadata_field != SIGNATURE_DEF_FIELD:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {metadata_field} is not supported"
                )
        servable = _servable_for(self._registry, request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(servable.signature_def_map())
        return response


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class LocalModelServer:
    """TF-Serving-compatible gRPC model server for SavedModels on local disk.

    Parameters
    ----------
    models : Mapping[str, str]
        Model name → base path with ``<version>/saved_model.pb`` folders.
    host : str
        Interface to bind; loopback by default so nothing is exposed.
    port : int
        TCP port; 0 picks a free one (returned by ``start``).
    max_message_bytes : int
        Largest request or response message, in bytes; a larger request is
        refused with RESOURCE_EXHAUSTED by gRPC.
    poll_wait_seconds : float
        Seconds between scans for new versions; 0 disables the poller.
    max_workers : int
        Threads handling RPCs.
    """

    def __init__(
        self,
        models: Mapping[str, str],
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        poll_wait_seconds: float = DEFAULT_POLL_WAIT_SECONDS,
        max_workers: int = DEFAULT_MAX_WORKERS,
    ) -> None:
        if not models:
            raise ValueError("LocalModelServer needs at least one model")
        self.host = host
        self.requested_port = port
        self.max_message_bytes = max_message_bytes
        self.max_workers = max_workers
        self.registry = ModelRegistry(models, poll_wait_seconds=poll_wait_seconds)
        self._server: grpc.Server | None = None
        self.port: int | None = None

    @property
    def address(self) -> str:
        """``host:port`` clients should dial; valid after ``start``."""
        if self.port is None:
            raise RuntimeError("server not started")
        return _bind_address(self.host, self.port)

    def start(self) -> int:
        """Load every model's latest version, bind and start serving.

        Returns
        -------
        int
            The bound port (the free one chosen when ``port`` was 0).

        Raises
        ------
        ModelLoadError
            When a model's latest version fails to load.
        OSError
            When the address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("server already started")
        self.registry.load_initial()
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            # gRPC enables SO_REUSEPORT by default, which would let two servers
            # share a port silently; a busy port must fail loudly instead.
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="predict"),
            options=options,
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.registry, max_decoded_bytes=self.max_message_bytes), server
        )
        address = _bind_address(self.host, self.requested_port)
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as error:
            raise OSError(f"cannot bind gRPC server to {address}: {error}") from error
        if port == 0:
            raise OSError(f"cannot bind gRPC server to {address}")
        server.start()
        self._server, self.port = server, port
        self.registry.start_polling()
        LOGGER.info(
            "Serving %s on %s (gRPC PredictionService)",
            ", ".join(
                f"{name} v{version}" if version is not None else f"{name} (no version yet)"
                for name, version in self.registry.served_versions().items()
            ),
            self.address,
        )
        return port

    def stop(self, grace_seconds: float | None = 5.0) -> None:
        """Stop polling, refuse new RPCs and let in-flight ones finish.

        Parameters
        ----------
        grace_seconds : float or None
            Seconds in-flight RPCs may still run; None waits for all of them.
        """
        self.registry.stop_polling(timeout_seconds=grace_seconds)
        if self._server is not None:
            self._server.stop(grace_seconds).wait()
            self._server = None

    def wait(self, timeout_seconds: float | None = None) -> bool:
        """Block until the server stops; True if it stopped within the timeout."""
        server = self._server
        if server is None:
            return True
        timed_out = server.wait_for_termination(timeout_seconds)
        return not timed_out

    def __enter__(self) -> "LocalModelServer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
