"""A local model server compatible with TF Serving's gRPC and REST APIs.

Used when the real ``tensorflow_model_server`` binary is not on PATH. gRPC:
``PredictionService`` and ``ModelService`` (``grpc_services``); REST: see
``rest``. Both share one ``ServingCore`` (registry, optional batching, metrics).
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Iterable, Mapping, Sequence

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from musicrec.serving.config import ModelEntry
from musicrec.serving.core import ServingCore
from musicrec.serving.grpc_services import ModelServicer, PredictionServicer
from musicrec.serving.load_retries import LoadRetries
from musicrec.serving.model_registry import DEFAULT_POLL_WAIT_SECONDS, ModelRegistry
from musicrec.serving.rest import RestServer
from musicrec.serving.loading import load_servable
from musicrec.serving.server_options import (
    DEFAULT_REST_TIMEOUT_MS,
    BatchingOptions,
    ModelLoadOptions,
    threads_per_cpu_default,
)
from musicrec.serving.wire import DEFAULT_GRPC_PORT, DEFAULT_HOST
from musicrec.serving.worker_pool import LifoWorkerPool

LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_DEFAULT_WORKERS = 512  # TF Serving's default batching (1000 rows x 5) would otherwise mean 5 000


def default_max_workers(batching: BatchingOptions | None) -> int:
    """Threads handling gRPC calls when none are asked for (``--grpc_max_threads``).

    TF Serving's default, 4 per CPU. A thread stays with its call until the
    answer is ready, including the wait for a batch, so with batching on
    every queued row holds one thread: fewer than ``max_batch_size *
    (num_batch_threads + 1)`` threads (the batches running plus the next one
    filling) would cap every batch below the ``max_batch_size`` the
    parameters ask for (with 16 threads and 32 clients, batches of
    next_track's requests averaged 7.4 rows and the server answered 544
    requests/s; with 64, 9.5 rows and 660 requests/s; ``docs/serving.md``).

    Parameters
    ----------
    batching : BatchingOptions or None
        The server's batching settings; None when batching is off.

    Returns
    -------
    int
        4 × CPUs, or with batching enough for full batches if that is more,
        at most ``MAX_DEFAULT_WORKERS`` (512). Threads start only as calls
        arrive, so an idle server holds few.
    """
    per_cpu = threads_per_cpu_default()
    if batching is None:
        return per_cpu
    wanted = batching.max_batch_size * (batching.num_batch_threads + 1)
    return min(MAX_DEFAULT_WORKERS, max(per_cpu, wanted))


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
    loading : ModelLoadOptions
        Load retries, warmup, signature method check and labels (TF Serving's
        flags and defaults: 5 retries a minute apart).
    rest_threads : int or None
        Threads answering REST requests (``--rest_api_num_threads``); None:
        4 per CPU, as TF Serving.
    rest_timeout_ms : int
        ``--rest_api_timeout_in_ms``.
    grpc_channel_arguments : sequence of (str, value)
        Extra gRPC server options (``--grpc_channel_arguments``), applied last.
    """

    def __init__(
        self,
        models: Mapping[str, str] | Iterable[ModelEntry],
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_GRPC_PORT,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        poll_wait_seconds: float = DEFAULT_POLL_WAIT_SECONDS,
        max_workers: int | None = None,
        rest_port: int | None = None,
        batching: BatchingOptions | None = None,
        metrics_path: str | None = None,
        loading: ModelLoadOptions = ModelLoadOptions(),
        rest_threads: int | None = None,
        rest_timeout_ms: int = DEFAULT_REST_TIMEOUT_MS,
        grpc_channel_arguments: Sequence[tuple[str, Any]] = (),
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
        self.rest_threads = rest_threads if rest_threads is not None else threads_per_cpu_default()
        self.rest_timeout_ms = rest_timeout_ms
        self.metrics_path = metrics_path
        self.grpc_channel_arguments = list(grpc_channel_arguments)
        loader = functools.partial(load_servable, warmup=loading.enable_model_warmup,
                                   check_method_name=loading.enable_signature_method_name_check)
        self.registry = ModelRegistry(
            models, poll_wait_seconds=poll_wait_seconds, loader=loader,
            retries=LoadRetries(loading.max_num_load_retries, loading.load_retry_interval_micros / 1e6),
            allow_unavailable_labels=loading.allow_version_labels_for_unavailable_models)
        self.core = ServingCore(self.registry, max_decoded_bytes=max_message_bytes, batching=batching,
                                check_method_name=loading.enable_signature_method_name_check)
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
            When a model's versions all fail to load (after the retries).
        LoadCancelled
            When ``request_stop`` was called while loading.
        OSError
            When an address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("server already started")
        self.registry.load_initial()
        options = dict([
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            # gRPC enables SO_REUSEPORT by default, which would let two servers
            # share a port silently; a busy port must fail loudly instead.
            ("grpc.so_reuseport", 0),
        ] + self.grpc_channel_arguments)
        options = list(options.items())
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
                                    max_body_bytes=self.max_message_bytes, metrics_path=self.metrics_path,
                                    num_threads=self.rest_threads, timeout_ms=self.rest_timeout_ms)
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

    def request_stop(self) -> None:
        """Make a ``start`` still loading models give up (LoadCancelled); safe in a signal handler."""
        self.registry.stop_polling(timeout_seconds=0)

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
