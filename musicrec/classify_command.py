"""``musicrec classify FILE...``: top genres per audio file, from the server.

Any format ``musicrec.models.features.load_audio`` decodes (WAV, FLAC,
OGG/Vorbis, Opus, MP3, ...) at any sample rate and channel count. Log-mel
segments come from ``musicrec.models.features`` (the single source of
truth); the server returns per-segment probabilities, averaged per file.
A file that cannot be classified (corrupt, not audio, too short, silent, or
refused by the server) gets one error line saying why, the other files are
still classified, and the command exits 1. With several files a progress
bar runs on stderr, so stdout keeps one result per file.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from musicrec.client_commands import add_server_flags, client, emit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="audio files (WAV, FLAC, OGG, MP3, ...)")
    parser.add_argument("--config", help="the pipeline config the model was trained with")
    parser.add_argument("--top", type=int, default=3, help="genres per file (default %(default)s)")
    add_server_flags(parser, "genre")


class ProgressBar:
    """``[#####.....] 5/10 name`` on a stream, redrawn in place on a terminal, one line per step otherwise."""

    WIDTH = 24

    def __init__(self, total: int, stream: TextIO | None = None):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr  # looked up now: it may be redirected
        self.in_place = hasattr(stream, "isatty") and stream.isatty()

    def show(self, done: int, label: str) -> None:
        filled = self.WIDTH * done // max(self.total, 1)
        line = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{self.total} {label}"
        if self.in_place:
            self.stream.write("\r\033[K" + line[:200])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.in_place:
            self.stream.write("\n")
            self.stream.flush()


def run(args: argparse.Namespace) -> int:
    import os

    from musicrec.models.features import AudioDecodeError
    from musicrec.pipeline.config import feature_params, load_config
    from musicrec.serving.errors import ServingError

    if args.top < 1:
        print("musicrec classify: --top must be at least 1", file=sys.stderr)
        return 2
    params = feature_params(load_config(args.config))
    failures = 0
    progress = ProgressBar(len(args.files)) if len(args.files) > 1 else None
    with client(args) as grpc_client:
        for index, path in enumerate(args.files):
            if progress:
                progress.show(index, os.path.basename(path))
            try:
                top = classify_file(grpc_client, args.model, path, params, args.top)
            except (AudioDecodeError, ServingError) as exc:
                failures += 1
                emit(args.json, {"path": path, "error": str(exc)}, f"{path}: error: {exc}")
                continue
            text = f"{path}: " + ", ".join(f"{g['genre']} {g['probability']:.3f}" for g in top)
            emit(args.json, {"path": path, "top_genres": top}, text)
        if progress:
            progress.show(len(args.files), "done")
            progress.close()
    if failures:
        print(f"musicrec classify: {failures} of {len(args.files)} files could not be classified",
              file=sys.stderr)
    return 1 if failures else 0


def classify_file(grpc_client, model_name: str, path: str, params, top: int) -> list[dict[str, Any]]:
    """Top genres of one file: segment probabilities from the server, averaged per track.

    Returns:
        ``[{"genre": name, "probability": p}, ...]``, at most ``top``, most probable first.

    Raises:
        AudioDecodeError: the file does not decode, or is too short or silent.
        ServingError: the server refused or failed the request.
    """
    import numpy as np

    from musicrec.models.features import track_segments

    outputs = grpc_client.predict(model_name, {"log_mel": track_segments(path, params)},
                                  output_filter=["probabilities", "classes"])
    probabilities = outputs["probabilities"].mean(axis=0)
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in outputs["classes"][0]]
    order = np.argsort(-probabilities, kind="stable")[:top]
    return [{"genre": classes[i], "probability": round(float(probabilities[i]), 6)} for i in order]
