"""Command line of the local model server, with TF Serving's flag names.

``python -m musicrec.serving --port=8500 --rest_api_port=8501 --model_name=genre
--model_base_path=/srv/genre`` or ``--model_config_file=models.config``, plus
the TF Serving flags ``build_parser`` lists (batching, monitoring, threads,
load retries, warmup, labels, gRPC channel arguments), with TF Serving's
defaults. Flags take ``--flag=value`` or ``--flag value``; boolean flags also
``--flag`` alone. ``--host`` and ``--max_message_bytes`` are ours: the real
binary always listens on all interfaces, the local server on loopback unless
told otherwise. As in TF Serving, ``--rest_api_port=0`` (the default) serves
no REST API. SIGTERM or SIGINT stops the server gracefully, also while it is
still loading models.
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

from musicrec.serving.config import ModelEntry, read_model_entries
from musicrec.serving.errors import ServingError
from musicrec.serving.model_registry import DEFAULT_POLL_WAIT_SECONDS, LoadCancelled, ModelLoadError
from musicrec.serving.server_options import (
    DEFAULT_REST_TIMEOUT_MS,
    BatchingOptions,
    ModelLoadOptions,
    parse_grpc_channel_arguments,
    read_batching_parameters,
    read_monitoring_config,
)
from musicrec.serving.server import DEFAULT_MAX_MESSAGE_BYTES, LocalModelServer
from musicrec.serving.wire import DEFAULT_GRPC_PORT, DEFAULT_HOST

LOGGER = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "default"  # TF Serving's default --model_name
STOP_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class ServerFlags:
    """Parsed server flags; ``models`` maps model name → base path.

    ``model_entries`` holds the same models with their version policies and
    labels; ``batching`` is None unless ``--enable_batching``;
    ``metrics_path`` is None unless a monitoring config enables Prometheus.
    """

    host: str
    port: int
    rest_api_port: int
    models: dict[str, str]
    file_system_poll_wait_seconds: float
    max_message_bytes: int
    model_entries: tuple[ModelEntry, ...] = ()
    batching: BatchingOptions | None = None
    metrics_path: str | None = None
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: float = 0.0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    grpc_max_threads: int | None = None
    loading: ModelLoadOptions = ModelLoadOptions()
    rest_api_num_threads: int | None = None
    rest_api_timeout_in_ms: int = DEFAULT_REST_TIMEOUT_MS
    grpc_channel_arguments: list[tuple[str, Any]] = field(default_factory=list)


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """Parser for the flags of ``python -m musicrec.serving``."""
    parser = argparse.ArgumentParser(
        prog="python -m musicrec.serving",
        description="Local TF-Serving-compatible gRPC model server for SavedModels.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_GRPC_PORT,
                        help="gRPC port (0 picks a free one)")
    parser.add_argument("--rest_api_port", type=int, default=0,
                        help="REST port (0, the default, serves no REST API)")
    parser.add_argument("--model_name", default=DEFAULT_MODEL_NAME,
                        help="name of the single model served from --model_base_path")
    parser.add_argument("--model_base_path", default="",
                        help="folder holding <version>/saved_model.pb")
    parser.add_argument("--model_config_file", default="",
                        help="text ModelServerConfig; overrides --model_name/--model_base_path")
    parser.add_argument("--file_system_poll_wait_seconds", type=float,
                        default=DEFAULT_POLL_WAIT_SECONDS,
                        help="seconds between scans for new versions (0 disables)")
    parser.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0.0,
                        help="seconds between re-reads of --model_config_file (0 reads it once)")
    parser.add_argument("--enable_batching", type=_parse_bool, nargs="?", const=True, default=False,
                        help="batch concurrent Predict calls server-side")
    parser.add_argument("--batching_parameters_file", default="",
                        help="text BatchingParameters (max_batch_size, batch_timeout_micros, ...)")
    parser.add_argument("--monitoring_config_file", default="",
                        help="text MonitoringConfig; prometheus_config enables /monitoring/prometheus/metrics")
    parser.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                        help="threads one TF op may use (0: TensorFlow's default, one per core)")
    parser.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                        help="TF ops that may run at once (0: TensorFlow's default, one per core)")
    parser.add_argument("--grpc_max_threads", type=int, default=None,
                        help="most gRPC calls handled at once (default 4 per CPU, or with batching enough "
                             "threads for full batches if more: max_batch_size x (num_batch_threads + 1))")
    parser.add_argument("--grpc_channel_arguments", default="",
                        help="gRPC server arguments, key=value,... (e.g. grpc.max_connection_age_ms=2000)")
    parser.add_argument("--rest_api_num_threads", type=int, default=None,
                        help="threads answering REST requests (default 4 per CPU)")
    parser.add_argument("--rest_api_timeout_in_ms", type=int, default=DEFAULT_REST_TIMEOUT_MS,
                        help="a REST model call that ends later is answered 504 (default %(default)s)")
    defaults = ModelLoadOptions()
    parser.add_argument("--max_num_load_retries", type=int, default=defaults.max_num_load_retries,
                        help="tries after a failed version load before giving up (default %(default)s)")
    parser.add_argument("--load_retry_interval_micros", type=int, default=defaults.load_retry_interval_micros,
                        help="microseconds between load tries; negative: no wait (default %(default)s)")
    parser.add_argument("--enable_model_warmup", type=_parse_bool, nargs="?", const=True,
                        default=defaults.enable_model_warmup,
                        help="replay assets.extra/tf_serving_warmup_requests on load (default true)")
    parser.add_argument("--enable_signature_method_name_check", type=_parse_bool, nargs="?", const=True,
                        default=defaults.enable_signature_method_name_check,
                        help="Classify/Regress require the signature's method_name (default false)")
    parser.add_argument("--allow_version_labels_for_unavailable_models", type=_parse_bool, nargs="?",
                        const=True, default=defaults.allow_version_labels_for_unavailable_models,
                        help="let a config label versions not loaded yet, e.g. at startup (default false)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="interface to bind (ours, not a TF Serving flag)")
    parser.add_argument("--max_message_bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
                        help="largest gRPC request/response in bytes (ours)")
    return parser


def parse_flags(argv: Sequence[str] | None = None) -> ServerFlags:
    """Parse ``argv`` (without the program name) into ``ServerFlags``.

    Exits with status 2 and a usage message (argparse) when no model is given,
    a flag is malformed or the config file is invalid.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model_config_file:
        if args.model_base_path:
            LOGGER.warning("--model_config_file overrides --model_base_path")
        try:
            entries = read_model_entries(args.model_config_file)
        except (OSError, ValueError) as error:
            parser.error(f"--model_config_file: {error}")
    elif args.model_base_path:
        entries = [ModelEntry(args.model_name, args.model_base_path)]
    else:
        parser.error("give --model_base_path or --model_config_file")
    batching = None
    if args.enable_batching:
        try:
            batching = (read_batching_parameters(args.batching_parameters_file)
                        if args.batching_parameters_file else BatchingOptions())
        except (OSError, ValueError) as error:
            parser.error(f"--batching_parameters_file: {error}")
    elif args.batching_parameters_file:
        LOGGER.warning("--batching_parameters_file is ignored without --enable_batching")
    metrics_path = None
    if args.monitoring_config_file:
        try:
            metrics_path = read_monitoring_config(args.monitoring_config_file)
        except (OSError, ValueError) as error:
            parser.error(f"--monitoring_config_file: {error}")
        if metrics_path and not args.rest_api_port:
            LOGGER.warning("Prometheus metrics are served on the REST port; give --rest_api_port")
    if args.port < 0 or args.rest_api_port < 0:
        parser.error("ports must be >= 0")
    if args.max_message_bytes <= 0:
        parser.error("--max_message_bytes must be positive")
    if args.tensorflow_intra_op_parallelism < 0 or args.tensorflow_inter_op_parallelism < 0:
        parser.error("TF parallelism flags must be >= 0")
    for name in ("grpc_max_threads", "rest_api_num_threads"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    if args.max_num_load_retries < 0:
        parser.error("--max_num_load_retries must be >= 0")
    try:
        channel_arguments = parse_grpc_channel_arguments(args.grpc_channel_arguments)
    except ValueError as error:
        parser.error(str(error))
    loading = ModelLoadOptions(
        max_num_load_retries=args.max_num_load_retries,
        load_retry_interval_micros=args.load_retry_interval_micros,
        enable_model_warmup=args.enable_model_warmup,
        enable_signature_method_name_check=args.enable_signature_method_name_check,
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
    )
    return ServerFlags(
        host=args.host,
        port=args.port,
        rest_api_port=args.rest_api_port,
        models={entry.name: entry.base_path for entry in entries},
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        max_message_bytes=args.max_message_bytes,
        model_entries=tuple(entries),
        batching=batching,
        metrics_path=metrics_path,
        model_config_file=args.model_config_file,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        tensorflow_intra_op_parallelism=args.tensorflow_intra_op_parallelism,
        tensorflow_inter_op_parallelism=args.tensorflow_inter_op_parallelism,
        grpc_max_threads=args.grpc_max_threads,
        loading=loading,
        rest_api_num_threads=args.rest_api_num_threads,
        rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
        grpc_channel_arguments=channel_arguments,
    )


def server_from_flags(flags: ServerFlags) -> LocalModelServer:
    """An unstarted ``LocalModelServer`` configured by ``flags``."""
    return LocalModelServer(
        flags.model_entries or flags.models,
        host=flags.host,
        port=flags.port,
        rest_port=flags.rest_api_port or None,
        max_message_bytes=flags.max_message_bytes,
        poll_wait_seconds=flags.file_system_poll_wait_seconds,
        batching=flags.batching,
        metrics_path=flags.metrics_path,
        max_workers=flags.grpc_max_threads,
        loading=flags.loading,
        rest_threads=flags.rest_api_num_threads,
        rest_timeout_ms=flags.rest_api_timeout_in_ms,
        grpc_channel_arguments=flags.grpc_channel_arguments,
    )


class _ConfigFileWatcher:
    """Re-reads ``--model_config_file`` and reloads the server when its text changes."""

    def __init__(self, server: LocalModelServer, path: str) -> None:
        self._server = server
        self._path = path
        self._last_text = self._read()

    def _read(self) -> str | None:
        try:
            with open(self._path, encoding="utf-8") as handle:
                return handle.read()
        except OSError as error:
            LOGGER.error("cannot read %s: %s", self._path, error)
            return None

    def check(self) -> None:
        text = self._read()
        if text is None or text == self._last_text:
            return
        self._last_text = text
        try:
            entries = read_model_entries(self._path)
        except (OSError, ValueError) as error:
            LOGGER.error("not reloading %s: %s", self._path, error)
            return
        try:
            errors = self._server.registry.reload(entries)
        except ServingError as error:  # e.g. a label on a version not available
            errors = [error.message]
        for message in errors:
            LOGGER.error("reload of %s: %s", self._path, message)


def _configure_tensorflow_threads(flags: ServerFlags) -> None:
    """Apply the TF thread-pool flags; must run before the first model loads."""
    if flags.tensorflow_intra_op_parallelism or flags.tensorflow_inter_op_parallelism:
        import tensorflow as tf

        if flags.tensorflow_intra_op_parallelism:
            tf.config.threading.set_intra_op_parallelism_threads(flags.tensorflow_intra_op_parallelism)
        if flags.tensorflow_inter_op_parallelism:
            tf.config.threading.set_inter_op_parallelism_threads(flags.tensorflow_inter_op_parallelism)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT, then stop gracefully.

    The signal handlers are in place before the models load, so a SIGTERM
    during a long load (or its retries) stops the server cleanly once the
    version being read is loaded. (``tensorflow_model_server`` installs none
    and dies at once.)

    Returns
    -------
    int
        Process exit status: 0 after a clean stop (also during loading), 1
        when a model failed to load or the port could not be bound.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    flags = parse_flags(argv)
    _configure_tensorflow_threads(flags)
    server = server_from_flags(flags)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame) -> None:
        LOGGER.info("Received %s; stopping", signal.Signals(signum).name)
        stop_requested.set()
        server.request_stop()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
    except LoadCancelled as error:
        LOGGER.info("%s; exiting", error)
        server.stop(STOP_GRACE_SECONDS)
        _restore(previous)
        return 0
    except (ModelLoadError, OSError) as error:
        LOGGER.error("%s", error)
        server.stop(STOP_GRACE_SECONDS)
        _restore(previous)
        return 1
    watcher = None
    if flags.model_config_file and flags.model_config_file_poll_wait_seconds > 0:
        watcher = _ConfigFileWatcher(server, flags.model_config_file)
    wait_seconds = min(0.5, flags.model_config_file_poll_wait_seconds or 0.5)
    try:
        # A timed wait keeps the main thread responsive to signals.
        while not stop_requested.wait(wait_seconds):
            if watcher is not None:
                watcher.check()
    finally:
        _restore(previous)
        server.stop(STOP_GRACE_SECONDS)
    return 0


def _restore(handlers: dict) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
