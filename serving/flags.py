"""Command line of the local model server, with TF Serving's flag names.

``python -m musicrec.serving --port=8500 --model_name=genre
--model_base_path=/srv/genre`` or ``--model_config_file=models.config``.
Flags take ``--flag=value`` or ``--flag value``. ``--host`` is ours: the real
binary always listens on all interfaces, the local server on loopback unless
told otherwise.
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading
from dataclasses import dataclass
from typing import Sequence

from musicrec.serving.config import read_model_config
from musicrec.serving.model_registry import DEFAULT_POLL_WAIT_SECONDS, ModelLoadError
from musicrec.serving.server import (
    DEFAULT_HOST,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PORT,
    LocalModelServer,
)

LOGGER = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "default"  # TF Serving's default --model_name
STOP_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class ServerFlags:
    """Parsed server flags; ``models`` maps model name → base path."""

    host: str
    port: int
    rest_api_port: int
    models: dict[str, str]
    file_system_poll_wait_seconds: float
    max_message_bytes: int


def build_parser() -> argparse.ArgumentParser:
    """Parser for the flags of ``python -m musicrec.serving``."""
    parser = argparse.ArgumentParser(
        prog="python -m musicrec.serving",
        description="Local TF-Serving-compatible gRPC model server for SavedModels.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="gRPC port (0 picks a free one)")
    parser.add_argument("--rest_api_port", type=int, default=0,
                        help="REST port; accepted for compatibility, REST is not served yet")
    parser.add_argument("--model_name", default=DEFAULT_MODEL_NAME,
                        help="name of the single model served from --model_base_path")
    parser.add_argument("--model_base_path", default="",
                        help="folder holding <version>/saved_model.pb")
    parser.add_argument("--model_config_file", default="",
                        help="text ModelServerConfig; overrides --model_name/--model_base_path")
    parser.add_argument("--file_system_poll_wait_seconds", type=float,
                        default=DEFAULT_POLL_WAIT_SECONDS,
                        help="seconds between scans for new versions (0 disables)")
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
            models = read_model_config(args.model_config_file)
        except (OSError, ValueError) as error:
            parser.error(f"--model_config_file: {error}")
    elif args.model_base_path:
        models = {args.model_name: args.model_base_path}
    else:
        parser.error("give --model_base_path or --model_config_file")
    if args.port < 0 or args.rest_api_port < 0:
        parser.error("ports must be >= 0")
    if args.max_message_bytes <= 0:
        parser.error("--max_message_bytes must be positive")
    return ServerFlags(
        host=args.host,
        port=args.port,
        rest_api_port=args.rest_api_port,
        models=models,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        max_message_bytes=args.max_message_bytes,
    )


def server_from_flags(flags: ServerFlags) -> LocalModelServer:
    """An unstarted ``LocalModelServer`` configured by ``flags``."""
    return LocalModelServer(
        flags.models,
        host=flags.host,
        port=flags.port,
        max_message_bytes=flags.max_message_bytes,
        poll_wait_seconds=flags.file_system_poll_wait_seconds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT, then stop gracefully.

    Returns
    -------
    int
        Process exit status: 0 after a clean stop, 1 when a model failed to
        load or the port could not be bound.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    flags = parse_flags(argv)
    if flags.rest_api_port:
        LOGGER.warning("--rest_api_port=%d accepted but REST is not served yet", flags.rest_api_port)
    server = server_from_flags(flags)
    try:
        server.start()
    except (ModelLoadError, OSError) as error:
        LOGGER.error("%s", error)
        return 1
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame) -> None:
        LOGGER.info("Received %s; stopping", signal.Signals(signum).name)
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        # A timed wait keeps the main thread responsive to signals.
        while not stop_requested.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop(STOP_GRACE_SECONDS)
    return 0
