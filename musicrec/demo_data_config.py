"""What the demo data generator makes (:class:`DemoDataConfig`), and its random streams.

Every random draw comes from a ``numpy.random.Generator`` seeded from
``config.seed`` and a purpose (:func:`random_stream`), so the same config
gives the same data, and a change to one purpose's draws leaves the others'.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np

from musicrec.demo_data_audio import GENRE_RECIPES

# The purposes of the random streams: the catalogue (and the listening model), each track's
# audio, each user's plays, the choice of cold-start tracks.
STREAM_CATALOGUE, STREAM_AUDIO, STREAM_USER, STREAM_HOLDOUT = 1, 2, 3, 4


@dataclasses.dataclass(frozen=True)
class DemoDataConfig:
    """What to generate. Every field is part of ``generation.json``.

    Attributes:
        seed: root of every random draw; another seed gives other data.
        n_genres: genres to use, the first ``n_genres`` of :data:`GENRE_RECIPES`
            (at least 4, at most ``len(GENRE_RECIPES)``).
        tracks_per_genre: audio tracks per genre.
        artists_per_genre: distinct artists per genre (names unique overall).
        track_seconds: length of each audio clip, in seconds (6.5 s gives two
            3-s segments at the default feature parameters).
        sample_rate: audio sample rate, in Hz.
        n_users: listeners in the play log.
        sessions_per_user_mean: mean listening sessions per user over the span.
        session_length_mean: mean plays per session (at least 2 plays each).
        session_length_max: most plays in one session.
        playlists_per_genre: fixed cyclic track orders per genre; a session
            follows them, which is what makes the order learnable.
        follow_probability: chance that the next play is the current track's
            playlist successor (else a popularity-weighted jump).
        favourite_genre_share: share of a user's session starts and jumps that
            go to their one or two favourite genres.
        popularity_exponent: Zipf exponent of track popularity within a genre.
        skip_probability: chance that a play is a short skip.
        song_seconds_range: nominal song lengths ``(min, max)`` in seconds; a
            full play lasts the whole song, the next play starts right after.
        skip_seconds_range: ``(min, max)`` seconds listened before a skip.
        min_session_gap_minutes: least inactivity between sessions (keep it
            well above the 30-minute session break used downstream).
        start_date: first day of the log, ``YYYY-MM-DD`` (UTC).
        span_days: days over which sessions are spread.
        cold_track_fraction: share of the catalogue held out of the play log
            (cold-start tracks, drawn uniformly); 0 holds out none, any
            positive share holds out at least one track.
    """

    seed: int = 0
    n_genres: int = 6
    tracks_per_genre: int = 40
    artists_per_genre: int = 8
    track_seconds: float = 6.5
    sample_rate: int = 22050
    n_users: int = 300
    sessions_per_user_mean: float = 10.0
    session_length_mean: float = 10.0
    session_length_max: int = 40
    playlists_per_genre: int = 4
    follow_probability: float = 0.75
    favourite_genre_share: float = 0.85
    popularity_exponent: float = 1.0
    skip_probability: float = 0.08
    song_seconds_range: tuple[float, float] = (180.0, 300.0)
    skip_seconds_range: tuple[float, float] = (5.0, 30.0)
    min_session_gap_minutes: float = 90.0
    start_date: str = "2026-01-01"
    span_days: int = 90
    cold_track_fraction: float = 0.1

    def __post_init__(self):
        # JSON round trips turn tuples into lists; store tuples so equality holds.
        object.__setattr__(self, "song_seconds_range", tuple(self.song_seconds_range))
        object.__setattr__(self, "skip_seconds_range", tuple(self.skip_seconds_range))
        problems = []
        if not 4 <= self.n_genres <= len(GENRE_RECIPES):
            problems.append(f"n_genres={self.n_genres} must be in [4, {len(GENRE_RECIPES)}]")
        for name in ("tracks_per_genre", "artists_per_genre", "n_users", "playlists_per_genre",
                     "span_days"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be at least 1")
        if self.artists_per_genre > self.tracks_per_genre:
            problems.append("artists_per_genre must not exceed tracks_per_genre")
        if self.playlists_per_genre > self.tracks_per_genre:
            problems.append("playlists_per_genre must not exceed tracks_per_genre")
        if self.sample_rate < 8000:
            problems.append(f"sample_rate={self.sample_rate} Hz is below 8000 Hz")
        if self.track_seconds <= 0.5:
            problems.append(f"track_seconds={self.track_seconds} must exceed 0.5 s")
        if self.sessions_per_user_mean <= 0:
            problems.append("sessions_per_user_mean must be positive")
        if self.session_length_mean < 2 or self.session_length_max < 2:
            problems.append("session_length_mean and session_length_max must be at least 2")
        for name in ("follow_probability", "favourite_genre_share", "skip_probability",
                     "cold_track_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name}={getattr(self, name)} must be in [0, 1]")
        if self.cold_track_fraction >= 1.0:
            problems.append("cold_track_fraction must leave some tracks with plays")
        if self.popularity_exponent < 0:
            problems.append("popularity_exponent must not be negative")
        for name in ("song_seconds_range", "skip_seconds_range"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                problems.append(f"{name}={getattr(self, name)} must be 0 < min <= max")
        if self.song_seconds_range[1] >= 30 * 60:
            problems.append("song_seconds_range max must stay below the 30-minute session break")
        if self.min_session_gap_minutes <= 30:
            problems.append("min_session_gap_minutes must exceed the 30-minute session break")
        try:
            dt.date.fromisoformat(self.start_date)
        except (TypeError, ValueError):
            problems.append(f"start_date={self.start_date!r} is not YYYY-MM-DD")
        if problems:
            raise ValueError("invalid DemoDataConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def random_stream(config: DemoDataConfig, *stream: int) -> np.random.Generator:
    """An independent generator per (seed, purpose, index...), stable under config changes."""
    return np.random.default_rng([config.seed, *stream])


__all__ = ["DemoDataConfig", "random_stream", "STREAM_CATALOGUE", "STREAM_AUDIO", "STREAM_USER", "STREAM_HOLDOUT"]
