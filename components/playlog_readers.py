"""Play-log readers: raw listening histories → :class:`Play` or :class:`DeadLetter`.

Five formats are understood:

- ``csv``: generic CSV with a header naming ``user_id``, ``timestamp``,
  ``track_id`` and optionally ``artist`` and ``ms_played`` (any column order;
  extra columns are ignored). ``timestamp`` is ISO-8601 (``Z``, an offset, or
  naive = UTC) or Unix seconds. The demo data generator writes this format.
- ``lastfm_tsv``: the Last.fm 1K dump, no header,
  ``userid \\t ISO-timestamp \\t artist-mbid \\t artist-name \\t track-mbid \\t track-name``,
  newest first. The key is the track mbid, else ``"<artist> - <track>"``.
- ``spotify_json``: a Spotify ``StreamingHistory*.json`` (a JSON array of
  ``{endTime "2021-10-06 01:44" UTC, artistName, trackName, msPlayed}``); the
  user is the parent folder's name and the key ``"<artist> - <track>"``
  (the export has no track ids). The timestamp is ``endTime``.
- ``spotify_extended_json``: Spotify's extended streaming history
  (``endsong_*.json`` / ``Streaming_History_Audio_*.json``), a JSON array of
  ``{ts ISO-8601 UTC, username, ms_played, master_metadata_track_name,
  master_metadata_album_artist_name, spotify_track_uri, skipped, ...}``. The
  user is ``username`` (else the parent folder), the key the track URI (else
  ``"<artist> - <track>"``). Podcast episodes and audiobook chapters have no
  track and become dead letters (``not a music track``). The timestamp is
  ``ts`` (the end of the play, like ``endTime``).
- ``jsonl``: one JSON object per line with the generic CSV's fields
  (``user_id``, ``timestamp`` ISO string or Unix seconds, ``track_id``,
  optional ``artist`` and ``ms_played``).

Every reader yields exactly one record per input row: a :class:`Play` or a
:class:`DeadLetter` naming the source, the 1-based line (JSON: the 1-based
record index in the array; a file-level failure: the line where it was
detected) and the reason. Blank lines are not rows. So the rows a file holds
always equal its plays plus its dead letters.

The parse functions are pure (they take lines or bytes); :func:`read_playlog`
opens a file through ``tf.io.gfile`` (local paths, ``gs://`` …) and streams
text formats line by line, so a large TSV never sits in memory whole.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import fnmatch
import gzip
import json
import math
import posixpath
import re
from typing import Callable, Iterable, Iterator, Sequence

FORMATS = ("csv", "jsonl", "lastfm_tsv", "spotify_json", "spotify_extended_json")
AUTO = "auto"
SPOTIFY_HISTORY_GLOB = "streaminghistory*.json"
# The extended streaming history: older exports name files endsong_<n>.json,
# newer ones Streaming_History_Audio_<years>_<n>.json (lower-cased here).
SPOTIFY_EXTENDED_GLOBS = ("endsong*.json", "streaming_history_audio*.json")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
CSV_REQUIRED_COLUMNS = ("user_id", "timestamp", "track_id")
CSV_OPTIONAL_COLUMNS = ("artist", "ms_played")
LASTFM_FIELDS = 6
_COMPRESSED_SUFFIX = ".gz"
_UNIX_SECONDS = re.compile(r"[+-]?\d+(\.\d*)?")
_WHITESPACE = re.compile(r"\s+")


@dataclasses.dataclass(frozen=True)
class Play:
    """One valid play.

    Attributes:
        user_id: listener id (stripped, non-empty).
        timestamp: Unix seconds (UTC), floored to the second.
        track_key: normalised key (:func:`normalize_track_key`), non-empty.
        artist: artist name as given, ``""`` when unknown.
        ms_played: milliseconds played, ``None`` when the format lacks it.
        source: path of the file the play came from.
        line: 1-based line (JSON: record index) in ``source``; breaks ties in time order.
    """

    user_id: str
    timestamp: int
    track_key: str
    artist: str
    ms_played: int | None
    source: str
    line: int


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A rejected row: where it was and why."""

    source: str
    line: int
    reason: str

    def to_dict(self) -> dict:
        """The ``dead_letters.jsonl`` record: ``{"source", "line", "reason"}``."""
        return {"source": self.source, "line": self.line, "reason": self.reason}


PlaylogRecord = Play | DeadLetter


class RowError(ValueError):
    """A row cannot become a play; the message is the dead letter's reason."""


def normalize_track_id(text: str) -> str:
    """An explicit track id, whitespace runs → one space, stripped; case kept (ids can be case-sensitive)."""
    return _WHITESPACE.sub(" ", text).strip()


def normalize_track_key(text: str) -> str:
    """The one track-key normalisation: lowercase, whitespace runs → one space, stripped.

    Used by every reader and by anyone who needs to look a key up (serving
    clients), so the same track always gets the same key.
    """
    return normalize_track_id(text).lower()


def artist_track_key(artist: str, track_name: str) -> str:
    """Key of a track known only by names: ``normalize_track_key("<artist> - <track>")``."""
    return normalize_track_key(f"{artist} - {track_name}")


def parse_timestamp(text: str) -> int:
    """Unix seconds (UTC, floored) from ISO-8601 or a Unix-seconds number.

    ISO-8601 may end in ``Z`` or an offset such as ``+02:00``; a naive time
    is UTC. Raises :class:`RowError` when ``text`` is neither.
    """
    text = text.strip()
    if not text:
        raise RowError("empty timestamp")
    if _UNIX_SECONDS.fullmatch(text):
        seconds = float(text)
        if not math.isfinite(seconds) or abs(seconds) > 253402300799:  # 9999-12-31T23:59:59Z
            raise RowError(f"timestamp out of range: {text!r}")
        return math.floor(seconds)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError as exc:
        raise RowError(f"bad timestamp {text!r}: {exc}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return math.floor(moment.timestamp())


def _required(value: str, name: str) -> str:
    value = value.strip()
    if not value:
        raise RowError(f"empty {name}")
    return value


def _optional_ms(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        ms_played = int(text)
    except ValueError:
        raise RowError(f"bad ms_played {text!r}") from None
    if ms_played < 0:
        raise RowError(f"negative ms_played {ms_played}")
    return ms_played


def _numbered_text_lines(lines: Iterable[bytes], source: str,
                         encoding: str = "utf-8") -> Iterator[tuple[int, str | DeadLetter]]:
    """``(line_number, text)`` per non-blank line, or a dead letter for undecodable bytes."""
    for number, raw in enumerate(lines, start=1):
        # The first line may carry a byte-order mark that no field should keep.
        codec = "utf-8-sig" if number == 1 and encoding == "utf-8" else encoding
        try:
            text = raw.decode(codec).rstrip("\r\n")
        except UnicodeDecodeError as exc:
            yield number, DeadLetter(source, number, f"undecodable bytes: {exc.reason} at byte {exc.start}")
            continue
        if text.strip():
            yield number, text


def parse_csv_lines(lines: Iterable[bytes], source: str) -> Iterator[PlaylogRecord]:
    """Generic CSV (bytes per line, header first) → a Play or DeadLetter per data row.

    A header that lacks a required column (or repeats one) makes every row of
    the file, the header line included, a dead letter: nothing in it can be
    trusted to be a play.
    """
    columns: dict[str, int] | None = None
    bad_header_line: int | None = None
    for number, text in _numbered_text_lines(lines, source):
        if isinstance(text, DeadLetter):
            if columns is None and bad_header_line is None:
                bad_header_line = number
            yield text
            continue
        if columns is None and bad_header_line is None:
            names = [name.strip().lower() for name in next(csv.reader([text]))]
            if any(name not in names for name in CSV_REQUIRED_COLUMNS) or len(set(names)) != len(names):
                bad_header_line = number
                yield DeadLetter(source, number, f"bad CSV header {names}: needs "
                                 f"{', '.join(CSV_REQUIRED_COLUMNS)} once each")
            else:
                columns = {name: names.index(name) for name in names}
            continue
        if bad_header_line is not None:
            yield DeadLetter(source, number, f"unusable CSV header (line {bad_header_line})")
            continue
        try:
            yield _csv_play(text, columns, source, number)
        except RowError as exc:
            yield DeadLetter(source, number, str(exc))


def _csv_play(text: str, columns: dict[str, int], source: str, number: int) -> Play:
    try:
        (fields,) = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        raise RowError(f"bad CSV row: {exc}") from None
    if len(fields) != len(columns):
        raise RowError(f"expected {len(columns)} fields, got {len(fields)}")

    def field(name: str) -> str:
        return fields[columns[name]] if name in columns else ""

    track_key = normalize_track_id(_required(field("track_id"), "track_id"))
    return Play(user_id=_required(field("user_id"), "user_id"),
                timestamp=parse_timestamp(field("timestamp")), track_key=track_key,
                artist=field("artist").strip(), ms_played=_optional_ms(field("ms_played")),
                source=source, line=number)


def parse_lastfm_lines(lines: Iterable[bytes], source: str) -> Iterator[PlaylogRecord]:
    """Last.fm 1K TSV (bytes per line, no header) → a Play or DeadLetter per row."""
    yield from _line_records(lines, source, _lastfm_play)


def _line_records(lines: Iterable[bytes], source: str,
                  to_play: Callable[[str, str, int], Play]) -> Iterator[PlaylogRecord]:
    """Numbered text lines → ``to_play(text, source, line)`` or a DeadLetter each."""
    for number, text in _numbered_text_lines(lines, source):
        if isinstance(text, DeadLetter):
            yield text
            continue
        try:
            yield to_play(text, source, number)
        except RowError as exc:
            yield DeadLetter(source, number, str(exc))


def _lastfm_play(text: str, source: str, number: int) -> Play:
    fields = text.split("\t")
    if len(fields) != LASTFM_FIELDS:
        raise RowError(f"expected {LASTFM_FIELDS} tab-separated fields, got {len(fields)}")
    user_id, timestamp, _artist_mbid, artist, track_mbid, track_name = fields
    if track_mbid.strip():
        track_key = normalize_track_key(track_mbid)
    elif artist.strip() and track_name.strip():
        track_key = artist_track_key(artist, track_name)
    else:
        raise RowError("no track mbid and no artist and track name")
    return Play(user_id=_required(user_id, "user_id"), timestamp=parse_timestamp(timestamp),
                track_key=track_key, artist=artist.strip(), ms_played=None,
                source=source, line=number)


def parse_spotify_json(data: bytes, source: str, user_id: str) -> Iterator[PlaylogRecord]:
    """A ``StreamingHistory*.json`` file's bytes → a Play or DeadLetter per array element.

    A file that is not UTF-8, not JSON or not an array is one dead letter (at
    the line where the problem was found).
    """
    yield from _json_records(data, source, lambda record, index: _spotify_play(
        record, source, index, user_id))


def _json_records(data: bytes, source: str,
                  to_play: Callable[[object, int], Play]) -> Iterator[PlaylogRecord]:
    """A JSON array's elements → ``to_play(element, 1-based index)`` or a DeadLetter each."""
    records = _json_array(data, source)
    if isinstance(records, DeadLetter):
        yield records
        return
    for index, record in enumerate(records, start=1):
        try:
            yield to_play(record, index)
        except RowError as exc:
            yield DeadLetter(source, index, str(exc))


def _spotify_play(record: object, source: str, index: int, user_id: str) -> Play:
    if not isinstance(record, dict):
        raise RowError(f"expected a JSON object, got {type(record).__name__}")
    names = {}
    for name in ("endTime", "artistName", "trackName"):
        value = record.get(name)
        if not isinstance(value, str) or not value.strip():
            raise RowError(f"missing or empty {name}")
        names[name] = value
    ms_played = record.get("msPlayed")
    if ms_played is not None and (isinstance(ms_played, bool) or not isinstance(ms_played, int)
                                  or ms_played < 0):
        raise RowError(f"bad msPlayed {ms_played!r}")
    return Play(user_id=_required(user_id, "user id (parent folder name)"),
                timestamp=parse_timestamp(names["endTime"]),
                track_key=artist_track_key(names["artistName"], names["trackName"]),
                artist=names["artistName"].strip(), ms_played=ms_played, source=source, line=index)


def parse_jsonl_lines(lines: Iterable[bytes], source: str) -> Iterator[PlaylogRecord]:
    """Generic JSON lines (bytes per line) → a Play or DeadLetter per non-blank line."""
    yield from _line_records(lines, source, _jsonl_play)


def _text_field(record: dict, name: str) -> str:
    value = record.get(name)
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise RowError(f"bad {name} {value!r}")
    return value


def _jsonl_play(text: str, source: str, number: int) -> Play:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RowError(f"bad JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(record, dict):
        raise RowError(f"expected a JSON object, got {type(record).__name__}")
    ms_played = record.get("ms_played")
    if ms_played is not None and (isinstance(ms_played, bool) or not isinstance(ms_played, int)
                                  or ms_played < 0):
        raise RowError(f"bad ms_played {ms_played!r}")
    return Play(user_id=_required(_text_field(record, "user_id"), "user_id"),
                timestamp=parse_timestamp(_text_field(record, "timestamp")),
                track_key=normalize_track_id(_required(_text_field(record, "track_id"), "track_id")),
                artist=_text_field(record, "artist").strip(), ms_played=ms_played,
                source=source, line=number)


def _json_array(data: bytes, source: str) -> list | DeadLetter:
    """A whole-file JSON array, or the one dead letter that says why it is not one."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        return DeadLetter(source, line, f"undecodable bytes: {exc.reason} at byte {exc.start}")
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        return DeadLetter(source, exc.lineno, f"bad JSON: {exc.msg} (column {exc.colno})")
    if not isinstance(records, list):
        return DeadLetter(source, 1, f"expected a JSON array, got {type(records).__name__}")
    return records


def parse_spotify_extended_json(data: bytes, source: str, folder_user_id: str) -> Iterator[PlaylogRecord]:
    """An ``endsong_*.json`` file's bytes → a Play or DeadLetter per array element.

    ``line`` is the 1-based record index, as for ``StreamingHistory*.json``.
    """
    yield from _json_records(data, source, lambda record, index: _spotify_extended_play(
        record, source, index, folder_user_id))


def _spotify_extended_play(record: object, source: str, index: int, folder_user_id: str) -> Play:
    if not isinstance(record, dict):
        raise RowError(f"expected a JSON object, got {type(record).__name__}")
    track_name = _text_field(record, "master_metadata_track_name").strip()
    artist = _text_field(record, "master_metadata_album_artist_name").strip()
    uri = _text_field(record, "spotify_track_uri").strip()
    if not (uri or (track_name and artist)):
        if _text_field(record, "episode_name") or _text_field(record, "spotify_episode_uri") \
                or _text_field(record, "audiobook_title"):
            raise RowError("not a music track (podcast episode or audiobook)")
        raise RowError("missing spotify_track_uri and master_metadata track and artist names")
    ms_played = record.get("ms_played")
    if ms_played is not None and (isinstance(ms_played, bool) or not isinstance(ms_played, int)
                                  or ms_played < 0):
        raise RowError(f"bad ms_played {ms_played!r}")
    user_id = _text_field(record, "username").strip() or folder_user_id
    return Play(user_id=_required(user_id, "username (or parent folder name)"),
                timestamp=parse_timestamp(_text_field(record, "ts")),
                track_key=normalize_track_id(uri) if uri else artist_track_key(artist, track_name),
                artist=artist, ms_played=ms_played, source=source, line=index)


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
