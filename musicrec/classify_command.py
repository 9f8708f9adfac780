"""``musicrec classify FILE...``: top genres per audio file, from the server.

Log-mel segments come from ``musicrec.models.features`` (the single source of
truth); the server returns per-segment probabilities, averaged per track.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from musicrec.client_commands import add_server_flags, client, emit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+")
    parser.add_argument("--config", help="the pipeline config the model was trained with")
    parser.add_argument("--top", type=int, default=3)
    add_server_flags(parser, "genre")


def run(args: argparse.Namespace) -> int:
    from musicrec.models.features import AudioDecodeError
    from musicrec.pipeline.config import feature_params, load_config
    from musicrec.serving.errors import ServingError

    params = feature_params(load_config(args.config))
    failures = 0
    with client(args) as grpc_client:
        for index, path in enumerate(args.files, start=1):
            if len(args.files) > 1 and not args.json:
                print(f"[{index}/{len(args.files)}] {path}", file=sys.stderr)
            try:
                top = classify_file(grpc_client, args.model, path, params, args.top)
            except (AudioDecodeError, ServingError) as exc:
                failures += 1
                emit(args.json, {"path": path, "error": str(exc)}, f"{path}: error: {exc}")
                continue
            text = f"{path}: " + ", ".join(f"{g['genre']} {g['probability']:.3f}" for g in top)
            emit(args.json, {"path": path, "top_genres": top}, text)
    return 1 if failures else 0


def classify_file(grpc_client, model_name: str, path: str, params, top: int) -> list[dict[str, Any]]:
    """Top genres of one file: segment probabilities from the server, averaged per track."""
    import numpy as np

    from musicrec.models.features import track_segments

    outputs = grpc_client.predict(model_name, {"log_mel": track_segments(path, params)},
                                  output_filter=["probabilities", "classes"])
    probabilities = outputs["probabilities"].mean(axis=0)
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in outputs["classes"][0]]
    order = np.argsort(-probabilities, kind="stable")[:top]
    return [{"genre": classes[i], "probability": round(float(probabilities[i]), 6)} for i in order]
