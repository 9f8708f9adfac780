"""What the audio ExampleGen reads and where each track goes: listing the files, assigning splits.

A folder-per-genre tree or a metadata CSV lists :class:`AudioSource` s
(:func:`list_sources`); each track's split is the one the CSV gives, else a
stable hash of its artist or track id (:func:`assign_split`), so one artist
never spans two splits.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import posixpath
from typing import Mapping

from musicrec.components import beam_io

DEFAULT_SPLIT_FRACTIONS: Mapping[str, float] = {"train": 0.8, "eval": 0.1, "test": 0.1}


@dataclasses.dataclass(frozen=True)
class AudioSource:
    """One input audio file and what is known about it.

    Attributes:
        path: local path or any URI ``tf.io.gfile`` reads (``gs://...``).
        genre: label name.
        track_id: stable id of the track (the file stem unless given).
        artist: artist name, ``""`` when unknown.
        split: a split given with the file (``train``, ``eval`` or ``test``,
            from the metadata CSV), which wins over the hash; ``""``: none.
    """

    path: str
    genre: str
    track_id: str
    artist: str = ""
    split: str = ""


def list_sources(audio_dir: str | None = None,
                 metadata_csv: str | None = None) -> tuple[list[AudioSource], list[str]]:
    """Lists the input files and the label vocabulary.

    Exactly one of the arguments is given.

    Args:
        audio_dir: folder-per-genre tree: every non-hidden regular file directly
            in ``<audio_dir>/<genre>/`` is a track of that genre; its track id is
            the file stem and its artist is unknown.
        metadata_csv: CSV with a header and columns ``path``, ``genre`` and
            optionally ``artist``, ``track_id`` and ``split``; relative paths
            are relative to the CSV's folder; a missing ``track_id`` is the
            file stem; a ``split`` (``train``, ``eval``, ``test``) pins the
            row's split (a predefined split, or cross-validation folds), an
            empty one leaves it to the hash.

    Returns:
        ``(sources, labels)``: sources sorted by path, and the sorted distinct
        genres (line index in ``labels.txt`` = label id).

    Raises:
        ValueError: both or neither argument given, the folder has no genre
            sub-folders, or a CSV row lacks its path or genre or names an
            unknown split.
        FileNotFoundError: ``audio_dir`` or ``metadata_csv`` does not exist.
    """
    if (audio_dir is None) == (metadata_csv is None):
        raise ValueError("give exactly one of audio_dir or metadata_csv")
    sources = _list_genre_folders(audio_dir) if audio_dir is not None else _read_metadata_csv(metadata_csv)
    sources.sort(key=lambda source: source.path)
    labels = sorted({source.genre for source in sources})
    return sources, labels


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _stem(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path.rstrip("/")))[0]


def _list_genre_folders(audio_dir: str) -> list[AudioSource]:
    import tensorflow as tf

    if not tf.io.gfile.isdir(audio_dir):
        raise FileNotFoundError(f"audio_dir {audio_dir!r} is not a directory")
    sources = []
    genres = [name.rstrip("/") for name in tf.io.gfile.listdir(audio_dir)]
    genre_dirs = [g for g in genres
                  if not _is_hidden(g) and tf.io.gfile.isdir(posixpath.join(audio_dir, g))]
    if not genre_dirs:
        raise ValueError(f"audio_dir {audio_dir!r} holds no genre sub-folders")
    for genre in genre_dirs:
        genre_dir = posixpath.join(audio_dir, genre)
        for name in tf.io.gfile.listdir(genre_dir):
            path = posixpath.join(genre_dir, name.rstrip("/"))
            if _is_hidden(name) or tf.io.gfile.isdir(path):
                continue
            sources.append(AudioSource(path=path, genre=genre, track_id=_stem(path)))
    return sources


def _read_metadata_csv(metadata_csv: str) -> list[AudioSource]:
    import tensorflow as tf

    if not tf.io.gfile.exists(metadata_csv):
        raise FileNotFoundError(f"metadata_csv {metadata_csv!r} does not exist")
    base_dir = posixpath.dirname(metadata_csv)
    with tf.io.gfile.GFile(metadata_csv, "r") as handle:
        reader = csv.DictReader(io.StringIO(handle.read()))
        missing = {"path", "genre"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{metadata_csv}: missing columns {sorted(missing)}")
        sources = []
        for line_number, row in enumerate(reader, start=2):
            path, genre = (row.get("path") or "").strip(), (row.get("genre") or "").strip()
            if not path or not genre:
                raise ValueError(f"{metadata_csv}:{line_number}: empty path or genre")
            if "://" not in path and not posixpath.isabs(path):
                path = posixpath.join(base_dir, path)
            split = (row.get("split") or "").strip()
            if split and split not in beam_io.SPLITS:
                raise ValueError(f"{metadata_csv}:{line_number}: split {split!r} is none of "
                                 f"{list(beam_io.SPLITS)}")
            sources.append(AudioSource(
                path=path, genre=genre,
                track_id=(row.get("track_id") or "").strip() or _stem(path),
                artist=(row.get("artist") or "").strip(), split=split))
    return sources


def check_split_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Validates split fractions: exactly the splits in ``beam_io.SPLITS``, >= 0, sum 1."""
    if set(fractions) != set(beam_io.SPLITS):
        raise ValueError(f"split fractions need exactly {list(beam_io.SPLITS)}, got {sorted(fractions)}")
    values = {split: float(fractions[split]) for split in beam_io.SPLITS}
    if any(v < 0 for v in values.values()) or abs(sum(values.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {values}")
    return values


def split_key(source: AudioSource) -> str:
    """What decides the split: the artist when known, else the track id."""
    return f"artist:{source.artist}" if source.artist else f"track:{source.track_id}"


def assign_split(source: AudioSource, fractions: Mapping[str, float] = DEFAULT_SPLIT_FRACTIONS) -> str:
    """Split of a track: the one it was listed with, else from an MD5 of :func:`split_key`.

    The hash is stable across runs and machines: the first 8 bytes of the
    digest map to a point in [0, 1), compared with the cumulative fractions
    in ``beam_io.SPLITS`` order.
    """
    if source.split:
        return source.split
    digest = hashlib.md5(split_key(source).encode("utf-8")).digest()
    point = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    cumulative = 0.0
    for split in beam_io.SPLITS:
        cumulative += fractions[split]
        if point < cumulative:
            return split
    return beam_io.SPLITS[-1]  # rounding when the fractions sum to 1 - epsilon


__all__ = ["AudioSource", "list_sources", "check_split_fractions", "split_key", "assign_split",
           "DEFAULT_SPLIT_FRACTIONS"]
