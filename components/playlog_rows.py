"""What a play-log row becomes: a :class:`Play` or a :class:`DeadLetter`, and the field rules every format shares.

Track keys are normalised one way for every reader and every client
(:func:`normalize_track_key`); timestamps are ISO-8601 or Unix seconds
(:func:`parse_timestamp`); a field that breaks a rule raises
:class:`RowError`, whose message is the dead letter's reason.
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import re

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


def required_field(value: str, name: str) -> str:
    """``value`` stripped; :class:`RowError` ``"empty <name>"`` when nothing is left."""
    value = value.strip()
    if not value:
        raise RowError(f"empty {name}")
    return value


def optional_ms_played(text: str) -> int | None:
    """Milliseconds played from text: ``None`` when empty; :class:`RowError` when not a count."""
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


__all__ = ["Play", "DeadLetter", "PlaylogRecord", "RowError", "normalize_track_id", "normalize_track_key",
           "artist_track_key", "parse_timestamp", "required_field", "optional_ms_played"]
