"""Deterministic synthetic demo data: genre-labelled audio and user play logs.

``generate(out_dir, config)`` writes a small, self-consistent data set that
exercises the whole pipeline without downloading anything:

```
<out>/audio/<genre>/<track_id>.wav   16-bit PCM mono, folder per genre (GTZAN layout)
<out>/metadata.csv                   path,genre,artist,track_id (path relative to <out>)
<out>/playlogs/plays.csv             user_id,timestamp,track_id,artist,ms_played
<out>/holdout/cold_plays.csv         the sessions that played a cold track (see below)
<out>/generation.json                the config and the counts (written last)
```

The audio is synthesised with numpy. Every genre has a recipe (timbre, tempo
range, drum patterns, pitch range, scale) so that genres differ in what log-mel
features capture, while each track draws its own key, tempo, melody, mix and
noise. The play logs follow a generative model a next-track model can learn:
users favour one or two genres, each genre's tracks form a few fixed cyclic
playlists, and within a session a listener usually moves on to the current
track's playlist successor, otherwise jumps to a popular track of a genre they
like. Sessions are separated by gaps far longer than 30 minutes and plays inside
a session by the length of a real song.

Cold-start tracks: ``cold_track_fraction`` of the catalogue, drawn uniformly at
random (never picked by genre, popularity or playlist), have audio and metadata
but no play in ``playlogs/``. The plays are generated for the whole catalogue
first, so cold tracks are listened to exactly like warm ones; then every play of
a cold track is moved out of the play log. ``holdout/cold_plays.csv`` keeps,
for evaluation, every session that played a cold track, in full:
``user_id,timestamp,track_id,artist,ms_played,session_id,held_out``, where
``held_out`` is 1 for the plays removed from ``playlogs/`` and 0 for the plays
that stayed there (the context a recommender sees before a cold track).

Every random draw comes from ``numpy.random.Generator`` seeded from
``config.seed`` (per track and per user), and every file is written through a
temporary file and ``os.replace``, so the same config gives byte-identical files.

The parts: :mod:`musicrec.demo_data_config` (what to generate, the random
streams), :mod:`musicrec.demo_data_audio` (genre recipes, synthesis),
:mod:`musicrec.demo_data_listening` (catalogue, play logs, cold-start holdout);
this module writes the files.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import os
from typing import Callable, Sequence

import numpy as np

from musicrec.atomic import write_atomic, write_text_atomic
from musicrec.demo_data_audio import GENRE_RECIPES, genre_names, synthesize_track
from musicrec.demo_data_config import STREAM_AUDIO, DemoDataConfig, random_stream
from musicrec.demo_data_listening import Play, build_catalogue, choose_cold_tracks, generate_plays, hold_out_cold_plays

ProgressFn = Callable[[str], None]

METADATA_HEADER = ("path", "genre", "artist", "track_id")
PLAYLOG_HEADER = ("user_id", "timestamp", "track_id", "artist", "ms_played")
HOLDOUT_HEADER = PLAYLOG_HEADER + ("session_id", "held_out")
HOLDOUT_PLAYS_PATH = "holdout/cold_plays.csv"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
GENERATION_FORMAT_VERSION = 2


def tiny_config(seed: int = 0) -> DemoDataConfig:
    """A very small data set for fast end-to-end tests.

    4 genres x 6 tracks (2 artists and 2 playlists per genre), 20 users with
    about 6 sessions of about 8 plays each: roughly 1 000 plays; generates in
    about a second.
    """
    return DemoDataConfig(seed=seed, n_genres=4, tracks_per_genre=6, artists_per_genre=2,
                          playlists_per_genre=2, n_users=20, sessions_per_user_mean=6.0,
                          session_length_mean=8.0, session_length_max=20, span_days=30)


@dataclasses.dataclass
class DemoDataSummary:
    """Where :func:`generate` wrote its files and how much it wrote.

    ``n_plays`` counts the plays in ``playlog_paths`` (cold tracks' plays
    excluded), ``n_held_out_plays`` the cold tracks' plays, moved to
    ``cold_plays_csv``; ``n_sessions`` counts every generated session.
    """

    out_dir: str
    audio_dir: str
    metadata_csv: str
    playlog_paths: list[str]
    n_tracks: int
    n_users: int
    n_plays: int
    n_sessions: int
    genres: list[str]
    cold_tracks: list[str] = dataclasses.field(default_factory=list)
    cold_plays_csv: str | None = None
    n_held_out_plays: int = 0


def format_timestamp(unix_seconds: int) -> str:
    """ISO-8601 UTC with a ``Z`` suffix, whole seconds: ``2026-01-03T14:22:05Z``."""
    return dt.datetime.fromtimestamp(unix_seconds, tz=dt.timezone.utc).strftime(TIMESTAMP_FORMAT)


# --------------------------------------------------------------------------- writing


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write_wav_atomic(path: str, waveform: np.ndarray, sample_rate: int) -> None:
    import soundfile

    write_atomic(path, lambda tmp: soundfile.write(tmp, waveform, sample_rate, subtype="PCM_16",
                                                    format="WAV"), suffix=".wav")


def _prepare_out_dir(out_dir: str, keep: set[str]) -> None:
    """Refuses foreign non-empty folders; in an earlier demo data set, drops stale audio.

    Readers scan ``audio/<genre>/`` folder by folder, so WAVs of a previous,
    larger generation would otherwise become phantom tracks.
    """
    if not os.path.isdir(out_dir) or not os.listdir(out_dir):
        return
    if not os.path.exists(os.path.join(out_dir, "generation.json")):
        raise FileExistsError(f"{out_dir} is not empty and holds no generation.json: refusing to "
                              "write demo data into it")
    audio_dir = os.path.join(out_dir, "audio")
    for root, _, files in os.walk(audio_dir):
        for name in files:
            path = os.path.join(root, name)
            if name.endswith(".wav") and os.path.relpath(path, out_dir).replace(os.sep, "/") not in keep:
                os.unlink(path)


def generate(out_dir: str, config: DemoDataConfig = DemoDataConfig(),
             progress: ProgressFn | None = None) -> DemoDataSummary:
    """Writes the demo data set described by ``config`` under ``out_dir``.

    ``out_dir`` must be missing, empty or an earlier demo data set (which is
    regenerated in place). ``generation.json`` is written last, so its presence
    marks a complete data set.

    Args:
        out_dir: destination folder.
        config: what to generate.
        progress: called with one human-readable line per stage, if given.

    Returns:
        A :class:`DemoDataSummary` with absolute paths and counts.

    Raises:
        FileExistsError: ``out_dir`` holds something other than demo data.
    """
    report = progress or (lambda message: None)
    out_dir = os.path.abspath(out_dir)
    tracks = build_catalogue(config)
    _prepare_out_dir(out_dir, {t.relative_path for t in tracks})
    genres = genre_names(config.n_genres)
    recipes = {recipe.name: recipe for recipe in GENRE_RECIPES}

    for index, track in enumerate(tracks):
        rng = random_stream(config, STREAM_AUDIO, index)
        waveform = synthesize_track(recipes[track.genre], rng, config.track_seconds,
                                    config.sample_rate)
        _write_wav_atomic(os.path.join(out_dir, track.relative_path), waveform, config.sample_rate)
        if (index + 1) % config.tracks_per_genre == 0:
            report(f"audio: {index + 1}/{len(tracks)} tracks ({track.genre} done)")

    metadata_csv = os.path.join(out_dir, "metadata.csv")
    write_text_atomic(metadata_csv, _csv_text(
        METADATA_HEADER, [(t.relative_path, t.genre, t.artist, t.track_id) for t in tracks]))

    all_plays, n_sessions = generate_plays(config, tracks)
    cold = choose_cold_tracks(config, len(tracks))
    plays, held_out_sessions = hold_out_cold_plays(all_plays, cold)

    def row(play: Play) -> tuple:
        track = tracks[play.track_index]
        return (play.user_id, format_timestamp(play.timestamp), track.track_id, track.artist,
                play.ms_played)

    plays_csv = os.path.join(out_dir, "playlogs", "plays.csv")
    write_text_atomic(plays_csv, _csv_text(PLAYLOG_HEADER, [row(p) for p in plays]))
    report(f"playlogs: {len(plays)} plays in {n_sessions} sessions by {config.n_users} users")
    cold_plays_csv = os.path.join(out_dir, *HOLDOUT_PLAYS_PATH.split("/"))
    write_text_atomic(cold_plays_csv, _csv_text(HOLDOUT_HEADER, [
        (*row(p), f"{p.user_id}/{p.session_index}", int(held_out))
        for p, held_out in held_out_sessions]))
    n_held_out = len(all_plays) - len(plays)
    report(f"holdout: {len(cold)} cold-start tracks without plays; their {n_held_out} plays "
           f"in {HOLDOUT_PLAYS_PATH}")

    summary = DemoDataSummary(
        out_dir=out_dir, audio_dir=os.path.join(out_dir, "audio"), metadata_csv=metadata_csv,
        playlog_paths=[plays_csv], n_tracks=len(tracks), n_users=config.n_users,
        n_plays=len(plays), n_sessions=n_sessions, genres=genres,
        cold_tracks=[tracks[i].track_id for i in cold], cold_plays_csv=cold_plays_csv,
        n_held_out_plays=n_held_out)
    generation = {
        "format_version": GENERATION_FORMAT_VERSION,
        "config": config.to_dict(),
        "counts": {"tracks": summary.n_tracks, "users": summary.n_users, "plays": summary.n_plays,
                   "sessions": summary.n_sessions, "artists": len({t.artist for t in tracks}),
                   "cold_tracks": len(cold), "held_out_plays": n_held_out},
        "genres": genres,
        "files": {"audio": "audio", "metadata": "metadata.csv", "playlogs": ["playlogs/plays.csv"],
                  "holdout": {"cold_plays": HOLDOUT_PLAYS_PATH}},
        # Tracks with audio and metadata but no plays in playlogs/; their plays,
        # with the sessions around them, are in files.holdout.cold_plays.
        "cold_tracks": summary.cold_tracks,
    }
    write_text_atomic(os.path.join(out_dir, "generation.json"),
                       json.dumps(generation, indent=2, sort_keys=True) + "\n")
    report(f"done: {out_dir}")
    return summary


__all__ = ["DemoDataSummary", "generate", "tiny_config", "format_timestamp", "METADATA_HEADER", "PLAYLOG_HEADER",
           "HOLDOUT_HEADER", "HOLDOUT_PLAYS_PATH", "TIMESTAMP_FORMAT"]
