"""Play-log readers: raw listening histories → :class:`~musicrec.components.playlog_rows.Play` or
:class:`~musicrec.components.playlog_rows.DeadLetter`.

:func:`list_playlog_files` finds the files and their formats (by name under
``"auto"``: :func:`detect_format`); :func:`read_playlog` opens one through
``tf.io.gfile`` (local paths, ``gs://`` …, ``.gz`` decompressed) and streams
text formats line by line to their parser
(:mod:`~musicrec.components.playlog_formats`, which describes the formats),
so a large TSV never sits in memory whole. Every row read is one record, so
the rows a file holds always equal its plays plus its dead letters.
"""
from __future__ import annotations

import fnmatch
import gzip
import posixpath
from typing import Iterator, Sequence

from musicrec.components.playlog_formats import (parse_csv_lines, parse_jsonl_lines, parse_lastfm_lines,
                                                 parse_spotify_extended_json, parse_spotify_json)
from musicrec.components.playlog_rows import DeadLetter, PlaylogRecord

FORMATS = ("csv", "jsonl", "lastfm_tsv", "spotify_json", "spotify_extended_json")
AUTO = "auto"
SPOTIFY_HISTORY_GLOB = "streaminghistory*.json"
# The extended streaming history: older exports name files endsong_<n>.json,
# newer ones Streaming_History_Audio_<years>_<n>.json (lower-cased here).
SPOTIFY_EXTENDED_GLOBS = ("endsong*.json", "streaming_history_audio*.json")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
_COMPRESSED_SUFFIX = ".gz"


def spotify_user_id(path: str) -> str:
    """The listener of a Spotify history file: its parent folder's name."""
    return posixpath.basename(posixpath.dirname(path.replace("\\", "/")))


def _uncompressed_name(path: str) -> str:
    name = posixpath.basename(path.replace("\\", "/")).lower()
    return name[:-len(_COMPRESSED_SUFFIX)] if name.endswith(_COMPRESSED_SUFFIX) else name


def detect_format(path: str) -> str | None:
    """The reader for ``path`` by name (``.gz`` ignored), ``None`` when unrecognised.

    ``*.csv`` → ``csv``, ``*.tsv`` → ``lastfm_tsv``, ``*.jsonl``/``*.ndjson`` →
    ``jsonl``, ``StreamingHistory*.json`` → ``spotify_json``, ``endsong*.json``
    and ``Streaming_History_Audio*.json`` → ``spotify_extended_json``. Other JSON files are not guessed:
    Spotify exports hold
    several (``Userdata.json`` …) that are not play logs.
    """
    name = _uncompressed_name(path)
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".tsv"):
        return "lastfm_tsv"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if fnmatch.fnmatch(name, SPOTIFY_HISTORY_GLOB):
        return "spotify_json"
    if any(fnmatch.fnmatch(name, pattern) for pattern in SPOTIFY_EXTENDED_GLOBS):
        return "spotify_extended_json"
    return None


def _check_format(format: str) -> None:
    if format != AUTO and format not in FORMATS:
        raise ValueError(f"unknown play-log format {format!r}; use {AUTO!r} or one of {FORMATS}")


def list_playlog_files(paths: Sequence[str], format: str = AUTO
                       ) -> tuple[list[tuple[str, str]], list[str]]:
    """Expands files, folders (recursively) and globs into ``(path, format)`` pairs.

    Args:
        paths: files, folders or glob patterns (local or any ``tf.io.gfile`` scheme).
        format: ``"auto"`` or one of :data:`FORMATS` for every file.

    Returns:
        ``(files, skipped)``: sorted unique ``(path, format)`` pairs, and the
        files found inside folders or globs that were left out because
        ``format="auto"`` recognised no reader for them (or they are hidden).

    Raises:
        FileNotFoundError: a path matches nothing, or nothing readable is found.
        ValueError: ``format`` is unknown, or a file named explicitly has no
            recognisable format under ``"auto"``.
    """
    import tensorflow as tf  # noqa: PLC0415 - only listing needs TF's file systems

    _check_format(format)
    files: dict[str, str] = {}
    skipped: set[str] = set()

    def consider(path: str, explicit: bool) -> None:
        chosen = format if format != AUTO else detect_format(path)
        hidden = posixpath.basename(path).startswith((".", "_"))
        if chosen is None and explicit:
            raise ValueError(f"cannot tell the play-log format of {path}; pass format= one of {FORMATS}")
        if chosen is None or (hidden and not explicit):
            skipped.add(path)
        else:
            files[path] = chosen

    for pattern in paths:
        if tf.io.gfile.isdir(pattern):
            for folder, _subfolders, names in tf.io.gfile.walk(pattern):
                for name in names:
                    consider(posixpath.join(folder, name), explicit=False)
        elif tf.io.gfile.exists(pattern) and not any(c in pattern for c in "*?["):
            consider(pattern, explicit=True)
        else:
            matches = [m for m in tf.io.gfile.glob(pattern) if not tf.io.gfile.isdir(m)]
            if not matches:
                raise FileNotFoundError(f"play-log path matches nothing: {pattern}")
            for match in matches:
                consider(match, explicit=False)
    if not files:
        raise FileNotFoundError(f"no play-log files in {list(paths)} (skipped: {sorted(skipped)})")
    return sorted(files.items()), sorted(skipped)


def _iter_lines(handle) -> Iterator[bytes]:
    return iter(handle.readline, b"")


def read_playlog(path: str, format: str) -> Iterator[PlaylogRecord]:
    """Reads one play-log file (``.gz`` decompressed) into Plays and DeadLetters.

    Text formats stream line by line. A file that cannot be opened or stops
    being readable yields one dead letter at the line it reached, so the job
    carries on with the other files.
    """
    import tensorflow as tf  # noqa: PLC0415 - gs:// and friends without Beam's GCP extras

    _check_format(format)
    if format == AUTO:
        format = detect_format(path) or ""
        if not format:
            yield DeadLetter(path, 0, "unrecognised play-log file name")
            return
    last_line = 0
    try:
        with tf.io.gfile.GFile(path, "rb") as raw:
            handle = gzip.GzipFile(fileobj=raw) if path.lower().endswith(_COMPRESSED_SUFFIX) else raw
            # A Spotify export file is one JSON array (at most ~15 k plays).
            if format == "spotify_json":
                yield from parse_spotify_json(handle.read(), path, spotify_user_id(path))
                return
            if format == "spotify_extended_json":
                yield from parse_spotify_extended_json(handle.read(), path, spotify_user_id(path))
                return
            parse = {"csv": parse_csv_lines, "jsonl": parse_jsonl_lines,
                     "lastfm_tsv": parse_lastfm_lines}[format]
            for record in parse(_iter_lines(handle), path):
                last_line = record.line
                yield record
    except (OSError, EOFError, tf.errors.OpError) as exc:
        yield DeadLetter(path, last_line + 1, f"cannot read file: {exc}")


__all__ = ["list_playlog_files", "read_playlog", "detect_format", "spotify_user_id", "FORMATS", "AUTO"]
