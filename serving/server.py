"""A local model server compatible with TF Serving's gRPC and REST APIs.

Used when the real ``tensorflow_model_server`` binary is not on PATH. gRPC:
``PredictionService`` (``Predict``, ``Classify`` on classification
signatures, ``GetModelMetadata``; ``Regress`` and ``MultiInference`` answer
UNIMPLEMENTED) and ``ModelService`` (``GetModelStatus``,
``HandleReloadConfigRequest``). REST: see ``rest``. Both share one
``ServingCore`` (registry, optional batching, metrics).
"""
from __future__ import annotations

import logging
from typing import Iterable, Mapping

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from musicrec.serving.config import ModelEntry, model_entries_from_proto
from musicrec.serving.core import (
    SIGNATURE_DEF_FIELD,
    ServingCore,
    model_metadata_response,
    model_status_response,
)
from musicrec.serving.errors import ServingError
from musicrec.serving.model_registry import DEFAULT_POLL_WAIT_SECONDS, ModelRegistry
from musicrec.serving.rest import RestServer
from musicrec.serving.servables import DEFAULT_SIGNATURE_NAME, Servable
from musicrec.serving.server_options import BatchingOptions
from musicrec.serving.tensor_proto import fill_tensor_proto
from musicrec.serving.worker_pool import LifoWorkerPool

LOGGER = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8500
DEFAULT_REST_PORT = 8501
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_WORKERS = 16
MAX_DEFAULT_WORKERS = 512  # TF Serving's default batching (1000 rows x 5) would otherwise mean 5 000


def default_max_workers(batching: BatchingOptions | None) -> int:
    """Threads handling gRPC calls when none are asked for (``--grpc_max_threads``).

    A thread stays with its call until the answer is ready, including the
    wait for a batch, so with batching on every queued row holds one thread.
    Fewer than ``max_batch_size * (num_batch_threads + 1)`` threads (the
    batches running plus the next one filling) would cap every batch below
    the ``max_batch_size`` the parameters ask for: with 16 threads and 32
    clients, batches of next_track's requests averaged 7.4 rows and the
    server answered 544 requests/s; with 64, 9.5 rows and 660 requests/s
    (``docs/serving.md``).

    Parameters
    ----------
    batching : BatchingOptions or None
        The server's batching settings; None when batching is off.

    Returns
    -------
    int
        ``DEFAULT_MAX_WORKERS`` (16), or more when batching needs more, at
        most ``MAX_DEFAULT_WORKERS`` (512). Threads start only as calls
        arrive, so an idle server holds few.
    """
    if batching is None:
        return DEFAULT_MAX_WORKERS
    wanted = batching.max_batch_size * (batching.num_batch_threads + 1)
    return min(MAX_DEFAULT_WORKERS, max(DEFAULT_MAX_WORKERS, wanted))


def _servable_for(core: ServingCore, model_spec: model_pb2.ModelSpec) -> Servable:
    choice = model_spec.WhichOneof("version_choice")
    if choice == "version_label":
        return core.servable(model_spec.name, label=model_spec.version_label)
    version = model_spec.version.value if choice == "version" else None
    return core.servable(model_spec.name, version)


def _answer(handler, request, context: grpc.ServicerContext):
    try:
        return handler(request)
    except ServingError as error:
        context.abort(error.code, error.message)
    except Exception as error:  # a bug must become a status, not a dead worker
        LOGGER.exception("request failed unexpectedly")
        context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """PredictionService backed by a ``ServingCore``."""

    def __init__(self, core: ServingCore) -> None:
        self._core = core
        self._observed_predict = self._observed("Predict", self._predict)

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext):
        return _answer(self._observed_predict, request, context)

    def Classify(self, request: classification_pb2.ClassificationRequest, context: grpc.ServicerContext):
        return _answer(self._observed("Classify", self._classify), request, context)

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ):
        return _answer(self._observed("GetModelMetadata", self._get_model_metadata), request, context)

    def Regress(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Regress is not implemented by the local server; use Predict")

    def MultiInference(self, request, context):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not implemented by the local server; use Predict"
        )

    def _observed(self, api: str, handler):
        def run(request):
            with self._core.observe(request.model_spec.name, api, "GRPC"):
                return handler(request)
        return run

    def _predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        servable = _servable_for(self._core, request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE_NAME
        call = servable.prepare(signature_name, request.inputs, list(request.output_filter),
                                self._core.max_decoded_bytes)
        outputs = self._core.run(servable, call)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for alias, array in outputs.items():
            fill_tensor_proto(response.outputs[alias], array)
        return response

    def _classify(
        self, request: classification_pb2.ClassificationRequest
    ) -> classification_pb2.ClassificationResponse:
        servable = _servable_for(self._core, request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE_NAME
        outputs = servable.classify(signature_name, request.input)
        classes, scores = outputs.get("classes"), outputs.get("scores")
        rows = (classes if classes is not None else scores).shape[0]
        response = classification_pb2.ClassificationResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for row in range(rows):
            classification = response.result.classifications.add()
            width = (classes if classes is not None else scores).reshape(rows, -1).shape[1]
            for column in range(width):
                entry = classification.classes.add()
                if classes is not None:
                    entry.label = bytes(classes.reshape(rows, -1)[row, column]).decode("utf-8", "replace")
                if scores is not None:
                    entry.score = float(scores.reshape(rows, -1)[row, column])
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
        return model_metadata_response(_servable_for(self._core, request.model_spec))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """ModelService: version statuses and config reloads."""

    def __init__(self, core: ServingCore) -> None:
        self._core = core

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):
        return _answer(self._get_model_status, request, context)

    def HandleReloadConfigRequest(self, request: model_management_pb2.ReloadConfigRequest, context):
        return _answer(self._reload, request, context)

    def _get_model_status(
        self, request: get_model_status_pb2.GetModelStatusRequest
    ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        if not spec.name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing model name in request.")
        choice = spec.WhichOneof("version_choice")
        statuses = self._core.registry.status(
            spec.name,
            version=spec.version.value if choice == "version" else None,
            label=spec.version_label if choice == "version_label" else None,
        )
        return model_status_response(statuses)

    def _reload(self, request: model_management_pb2.ReloadConfigRequest) -> model_management_pb2.ReloadConfigResponse:
        try:
            entries = model_entries_from_proto(request.config, source="ReloadConfigRequest")
        except ValueError as error:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        errors = self._core.registry.reload(entries)
        if errors:
            # TF Serving answers a failed reload with the error as the RPC status.
            raise ServingError(grpc.StatusCode.UNKNOWN, "; ".join(errors))
        return model_management_pb2.ReloadConfigResponse()


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class LocalModelServer:
    """TF-Serving-compatible gRPC (and optionally REST) model server for local SavedModels.

    Parameters
    ----------
    models : Mapping[str, str] or iterable of ModelEntry
        Model name → base path with ``<version>/saved_model.pb`` folders
        (latest version served), or entries with version policies and labels.
    host : str
        Interface to bind; loopback by default so nothing is exposed.
    port : int
        gRPC TCP port; 0 picks a free one (returned by ``start``).
    rest_port : int or None
        REST TCP port (TF Serving's ``--rest_api_port``); 0 picks a free one,
        None serves no REST API.
    max_message_bytes : int
        Largest request or response message (gRPC) or body (REST), in bytes;
        a larger request is refused with RESOURCE_EXHAUSTED.
    poll_wait_seconds : float
        Seconds between scans for new versions; 0 disables the poller.
    max_workers : int or None
        Most threads handling gRPC calls at once (TF Serving's
        ``--grpc_max_threads``); further calls wait for a free one. None:
        ``default_max_workers(batching)``.
    batching : BatchingOptions or None
        Server-side batching (``--enable_batching``); None disables it.
    metrics_path : str or None
        REST path of the Prometheus metrics (``--monitoring_config_file``).
    """

    def __init__(
        self,
        models: Mapping[str, str] | Iterable[ModelEntry],
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        poll_wait_seconds: float = DEFAULT_POLL_WAIT_SECONDS,
        max_workers: int | None = None,
        rest_port: int | None = None,
        batching: BatchingOptions | None = None,
        metrics_path: str | None = None,
    ) -> None:
        models = models if isinstance(models, Mapping) else list(models)
        if not models:
            raise ValueError("LocalModelServer needs at least one model")
        self.host = host
        self.requested_port = port
        self.requested_rest_port = rest_port
        self.max_message_bytes = max_message_bytes
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be positive")
        self.max_workers = max_workers if max_workers is not None else default_max_workers(batching)
        self.metrics_path = metrics_path
        self.registry = ModelRegistry(models, poll_wait_seconds=poll_wait_seconds)
        self.core = ServingCore(self.registry, max_decoded_bytes=max_message_bytes, batching=batching)
        self._server: grpc.Server | None = None
        self._workers: LifoWorkerPool | None = None
        self._rest: RestServer | None = None
        self.port: int | None = None
        self.rest_port: int | None = None

    @property
    def address(self) -> str:
        """``host:port`` gRPC clients should dial; valid after ``start``."""
        if self.port is None:
            raise RuntimeError("server not started")
        return _bind_address(self.host, self.port)

    @property
    def rest_url(self) -> str:
        """``http://host:port`` of the REST API; valid after ``start`` with a REST port."""
        if self.rest_port is None:
            raise RuntimeError("REST API not started")
        return f"http://{_bind_address(self.host, self.rest_port)}"

    def start(self) -> int:
        """Load every model's wanted versions, bind and start serving.

        Returns
        -------
        int
            The bound gRPC port (the free one chosen when ``port`` was 0).

        Raises
        ------
        ModelLoadError
            When a model's versions all fail to load.
        OSError
            When an address cannot be bound.
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
        workers = LifoWorkerPool(max_workers=self.max_workers, thread_name_prefix="predict")
        server = grpc.server(workers, options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(self.core), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.core), server)
        address = _bind_address(self.host, self.requested_port)
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as error:
            raise OSError(f"cannot bind gRPC server to {address}: {error}") from error
        if port == 0:
            raise OSError(f"cannot bind gRPC server to {address}")
        if self.requested_rest_port is not None:
            self._rest = RestServer(self.core, self.host, self.requested_rest_port,
                                    max_body_bytes=self.max_message_bytes, metrics_path=self.metrics_path)
            self.rest_port = self._rest.port
            self._rest.start()
        server.start()
        self._server, self._workers, self.port = server, workers, port
        self.registry.start_polling()
        served = ", ".join(
            f"{name} v{version}" if version is not None else f"{name} (no version yet)"
            for name, version in self.registry.served_versions().items()
        )
        rest = f", REST on {self.rest_url}" if self._rest is not None else ""
        LOGGER.info("Serving %s on %s (gRPC)%s", served, self.address, rest)
        return port

    def stop(self, grace_seconds: float | None = 5.0) -> None:
        """Stop polling, refuse new requests and let in-flight ones finish.

        Parameters
        ----------
        grace_seconds : float or None
            Seconds in-flight RPCs may still run; None waits for all of them.
        """
        self.registry.stop_polling(timeout_seconds=grace_seconds)
        if self._rest is not None:
            self._rest.stop()
            self._rest = None
        if self._server is not None:
            self._server.stop(grace_seconds).wait()
            self._server = None
            self._workers.shutdown(wait=False)  # in-flight calls have had their grace
            self._workers = None
        self.core.stop()

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
