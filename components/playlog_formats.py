"""The play-log formats' parsers: lines or bytes of one file → a :class:`Play` or :class:`DeadLetter` per row.

Five formats are understood (:mod:`~musicrec.components.playlog_readers` picks one per file):

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

Every parser yields exactly one record per input row: a :class:`Play` or a
:class:`DeadLetter` naming the source, the 1-based line (JSON: the 1-based
record index in the array; a file-level failure: the line where it was
detected) and the reason. Blank lines are not rows. So the rows a file holds
always equal its plays plus its dead letters. The parsers are pure (they
take lines or bytes).
"""
from __future__ import annotations

import csv
import json
from typing import Callable, Iterable, Iterator

from musicrec.components.playlog_rows import (DeadLetter, Play, PlaylogRecord, RowError, artist_track_key,
                                              normalize_track_id, normalize_track_key, optional_ms_played,
                                              parse_timestamp, required_field)

CSV_REQUIRED_COLUMNS = ("user_id", "timestamp", "track_id")
CSV_OPTIONAL_COLUMNS = ("artist", "ms_played")
LASTFM_FIELDS = 6


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

    track_key = normalize_track_id(required_field(field("track_id"), "track_id"))
    return Play(user_id=required_field(field("user_id"), "user_id"),
                timestamp=parse_timestamp(field("timestamp")), track_key=track_key,
                artist=field("artist").strip(), ms_played=optional_ms_played(field("ms_played")),
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
    return Play(user_id=required_field(user_id, "user_id"), timestamp=parse_timestamp(timestamp),
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
    return Play(user_id=required_field(user_id, "user id (parent folder name)"),
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
    return Play(user_id=required_field(_text_field(record, "user_id"), "user_id"),
                timestamp=parse_timestamp(_text_field(record, "timestamp")),
                track_key=normalize_track_id(required_field(_text_field(record, "track_id"), "track_id")),
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
    return Play(user_id=required_field(user_id, "username (or parent folder name)"),
                timestamp=parse_timestamp(_text_field(record, "ts")),
                track_key=normalize_track_id(uri) if uri else artist_track_key(artist, track_name),
                artist=artist, ms_played=ms_played, source=source, line=index)


__all__ = ["parse_csv_lines", "parse_lastfm_lines", "parse_spotify_json", "parse_jsonl_lines",
           "parse_spotify_extended_json", "CSV_REQUIRED_COLUMNS", "CSV_OPTIONAL_COLUMNS", "LASTFM_FIELDS"]
