"""What the client commands share: server flags, the gRPC client, output.

Each client command lives in its own module (``classify_command``,
``recommend_command``, ``playlist_command``, ``batch_command``) with
``add_arguments(parser)`` and ``run(args) -> int``. Those modules import
nothing heavy at module level, so that ``musicrec --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from musicrec.serving.wire import DEFAULT_GRPC_TARGET



def add_server_flags(parser: argparse.ArgumentParser, model_name: str) -> None:
    parser.add_argument("--server", default=DEFAULT_GRPC_TARGET, help="gRPC host:port (default %(default)s)")
    parser.add_argument("--model", default=model_name, help="served model name (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--json", action="store_true", help="one JSON object per input on stdout")


def client(args: argparse.Namespace):
    """A ``PredictionClient`` for ``--server``, with ``--timeout`` per request."""
    from musicrec.serving.client import PredictionClient

    return PredictionClient(args.server, timeout_seconds=args.timeout)


def emit(as_json: bool, payload: dict[str, Any], text: str) -> None:
    """Prints one result: JSON with ``--json``, else the human-readable line."""
    print(json.dumps(payload) if as_json else text, flush=True)
