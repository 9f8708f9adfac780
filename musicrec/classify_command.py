"""``musicrec classify FILE...``: genre of audio files, from the server.

Prints the ``--top`` most likely genres of each file. Any format
``musicrec.models.audio_files.load_audio`` decodes (WAV, FLAC, OGG/Vorbis,
Opus, MP3, ...) at any sample rate and channel count. The file
is decoded to 22 050 Hz mono and sent to the model's ``from_waveform``
signature, which computes the model's own features in its graph (the
parameters it was trained with travel inside it): nothing here, and no
``--config``, decides features. A track is answered as one clip (files over
:data:`MAX_REQUEST_SECONDS` are sent in equal parts whose answers are
averaged by length). A file that cannot be classified (corrupt, not audio,
silent, shorter than one of the model's segments, or refused by the server)
gets one error line saying why, the other files are still classified, and
the command exits 1. With several files a progress bar runs on stderr, so
stdout keeps one result per file.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from musicrec.client_commands import add_server_flags, client, emit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="audio files (WAV, FLAC, OGG, MP3, ...)")
    parser.add_argument("--config", help="not needed: the model computes its own features "
                                         "(accepted so that older scripts still run)")
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


# Longest audio per request: 600 s at 22 050 Hz is 53 MB of float32, within the client's and
# the server's default 64 MiB message limit.
MAX_REQUEST_SECONDS = 600.0


def run(args: argparse.Namespace) -> int:
    import os

    from musicrec.models.audio_files import AudioDecodeError
    from musicrec.serving.errors import ServingError

    if args.top < 1:
        print("musicrec classify: --top must be at least 1", file=sys.stderr)
        return 2
    if args.config:
        print("musicrec classify: --config is not used: the model computes its own features "
              "from the waveform", file=sys.stderr)
    failures = 0
    progress = ProgressBar(len(args.files)) if len(args.files) > 1 else None
    with client(args) as grpc_client:
        for index, path in enumerate(args.files):
            if progress:
                progress.show(index, os.path.basename(path))
            try:
                top = classify_file(grpc_client, args.model, path, args.top)
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


def request_parts(samples: int, rate: int, max_seconds: float = MAX_REQUEST_SECONDS) -> list[slice]:
    """Equal consecutive parts of a waveform, each at most ``max_seconds`` long (one part if it fits)."""
    count = max(1, -(-samples // int(max_seconds * rate)))
    bounds = [round(i * samples / count) for i in range(count + 1)]
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:])]


def _readable(error, path: str, seconds: float) -> Exception:
    """A ``ServingError`` as one line: a clip the model finds too short becomes that
    dead-letter reason with the file's length; anything else keeps its message, on one line."""
    import re

    from musicrec.models.audio_files import REASON_TOO_SHORT, AudioDecodeError
    from musicrec.serving.errors import ServingError

    message = " ".join(error.message.split())
    too_short = re.search(r"too short: [^\]]*?one (\S+) s segment", message)
    if too_short:
        return AudioDecodeError(REASON_TOO_SHORT, f"{path} is {seconds:.2f} s long, shorter than "
                                                  f"one {too_short.group(1)} s segment of the model")
    return ServingError(error.code, message)


def classify_file(grpc_client, model_name: str, path: str, top: int) -> list[dict[str, Any]]:
    """Top genres of one file, from the model's ``from_waveform`` signature.

    Returns:
        ``[{"genre": name, "probability": p}, ...]``, at most ``top``, most probable first.

    Raises:
        AudioDecodeError: the file does not decode, is silent, or is shorter
            than one of the model's segments (the server says so: "too short").
        ServingError: the server refused or failed the request otherwise
            (its message on one line).
    """
    import numpy as np

    from musicrec.models.audio_files import REASON_SILENT, SILENCE_PEAK_DBFS, AudioDecodeError, load_audio, peak_dbfs
    from musicrec.models.features import AudioFeatureParams
    from musicrec.models.genre.frontends import WAVEFORM_SAMPLE_RATE
    from musicrec.serving.errors import ServingError

    waveform = load_audio(path, AudioFeatureParams(sample_rate=WAVEFORM_SAMPLE_RATE))
    level = peak_dbfs(waveform)
    if level < SILENCE_PEAK_DBFS:
        raise AudioDecodeError(REASON_SILENT, f"{path} peaks at {level:.1f} dBFS, below "
                                              f"{SILENCE_PEAK_DBFS:.0f} dBFS")
    total = np.zeros(0)
    classes: list[str] = []
    for part in request_parts(waveform.shape[0], WAVEFORM_SAMPLE_RATE):
        try:
            outputs = grpc_client.predict(model_name, {"waveform": waveform[None, part]},
                                          signature_name="from_waveform",
                                          output_filter=["probabilities", "classes"])
        except ServingError as exc:
            raise _readable(exc, path, waveform.shape[0] / WAVEFORM_SAMPLE_RATE) from exc
        weighted = outputs["probabilities"][0] * (part.stop - part.start)
        total = weighted if not total.size else total + weighted
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in outputs["classes"][0]]
    probabilities = total / waveform.shape[0]
    order = np.argsort(-probabilities, kind="stable")[:top]
    return [{"genre": classes[i], "probability": round(float(probabilities[i]), 6)} for i in order]
