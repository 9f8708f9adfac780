"""The demo data's catalogue and listeners: tracks with artists, and play logs a next-track model can learn.

Users favour one or two genres, each genre's tracks form a few fixed cyclic
playlists, and within a session a listener usually moves on to the current
track's playlist successor, otherwise jumps to a popular track of a genre
they like. Sessions are separated by gaps far longer than 30 minutes and
plays inside a session by the length of a real song. Cold-start tracks are
drawn uniformly (:func:`choose_cold_tracks`) and their plays held out
(:func:`hold_out_cold_plays`).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Sequence

import numpy as np

from musicrec.demo_data_audio import genre_names
from musicrec.demo_data_config import (STREAM_CATALOGUE, STREAM_HOLDOUT, STREAM_USER, DemoDataConfig,
                                       random_stream)


@dataclasses.dataclass(frozen=True)
class Track:
    """One catalogue track; its audio is ``<out>/<relative_path>``."""

    track_id: str
    genre: str
    artist: str
    song_ms: int  # nominal length of the "real" song, for ms_played and play spacing

    @property
    def relative_path(self) -> str:
        return f"audio/{self.genre}/{self.track_id}.wav"


_NAME_WORDS_A = ("Amber", "Broken", "Crystal", "Distant", "Electric", "Fading", "Golden", "Hollow",
                 "Iron", "Jade", "Kinetic", "Lunar", "Midnight", "Neon", "Opal", "Paper",
                 "Quiet", "Rusty", "Silver", "Velvet")
_NAME_WORDS_B = ("Atlas", "Bloom", "Circuit", "Delta", "Echo", "Foxes", "Garden", "Harbour",
                 "Island", "Jets", "Kites", "Lanterns", "Machines", "Nomads", "Orbit", "Pilots",
                 "Rivers", "Signals", "Tides", "Wolves")


def _artist_names(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct two-word artist names (numbered once the word pairs run out)."""
    pairs = [f"{a} {b}" for a in _NAME_WORDS_A for b in _NAME_WORDS_B]
    order = rng.permutation(len(pairs))
    return [pairs[order[i % len(pairs)]] + ("" if i < len(pairs) else f" {i // len(pairs) + 1}")
            for i in range(count)]


def build_catalogue(config: DemoDataConfig) -> list[Track]:
    """The tracks, ordered by id: genre by genre, artists spread evenly over a genre's tracks."""
    rng = random_stream(config, STREAM_CATALOGUE)
    genres = genre_names(config.n_genres)
    artists = _artist_names(rng, config.n_genres * config.artists_per_genre)
    low_ms, high_ms = (1000 * s for s in config.song_seconds_range)
    tracks = []
    for g, genre in enumerate(genres):
        genre_artists = artists[g * config.artists_per_genre:(g + 1) * config.artists_per_genre]
        owners = rng.permutation(np.arange(config.tracks_per_genre) % config.artists_per_genre)
        for owner in owners:
            tracks.append(Track(track_id=f"trk-{len(tracks):05d}", genre=genre,
                                artist=genre_artists[owner],
                                song_ms=int(rng.uniform(low_ms, high_ms))))
    return tracks


@dataclasses.dataclass(frozen=True)
class Play:
    """One generated play of ``track_index`` (an index into the catalogue)."""

    user_id: str
    timestamp: int  # Unix seconds, UTC
    track_index: int
    ms_played: int
    session_index: int = 0  # the user's session, counted from 0 in time order


def _draw(rng: np.random.Generator, cumulative_weights: np.ndarray) -> int:
    """An index drawn with probability proportional to its weight (given as a cumulative sum).

    Same distribution as ``rng.choice(p=...)`` but an order of magnitude faster
    for the tens of thousands of single draws the play log needs.
    """
    return int(np.searchsorted(cumulative_weights, rng.random() * cumulative_weights[-1],
                               side="right"))


class _ListeningModel:
    """Genre playlists (who follows whom) and per-genre popularity, shared by all users."""

    def __init__(self, config: DemoDataConfig, tracks: Sequence[Track]):
        rng = random_stream(config, STREAM_CATALOGUE, 1)
        genres = genre_names(config.n_genres)
        self.genre_tracks = [np.array([i for i, t in enumerate(tracks) if t.genre == g])
                             for g in genres]
        self.successor = np.zeros(len(tracks), dtype=np.int64)
        self.popularity_cumulative = []
        for members in self.genre_tracks:
            shuffled = rng.permutation(members)
            for playlist in np.array_split(shuffled, config.playlists_per_genre):
                self.successor[playlist] = np.roll(playlist, -1)
            ranks = rng.permutation(members.shape[0]) + 1
            self.popularity_cumulative.append(np.cumsum(ranks.astype(float) ** -config.popularity_exponent))
        self.track_genre = np.zeros(len(tracks), dtype=np.int64)
        for g, members in enumerate(self.genre_tracks):
            self.track_genre[members] = g

    def popular_track(self, rng: np.random.Generator, genre: int) -> int:
        return int(self.genre_tracks[genre][_draw(rng, self.popularity_cumulative[genre])])


def _user_genre_weights(rng: np.random.Generator, config: DemoDataConfig) -> np.ndarray:
    """Probabilities over genres: ``favourite_genre_share`` on one or two favourites."""
    n_favourites = 1 + int(rng.random() < 0.5)
    favourites = rng.choice(config.n_genres, size=n_favourites, replace=False)
    weights = np.full(config.n_genres, (1.0 - config.favourite_genre_share)
                      / (config.n_genres - n_favourites))
    split = rng.dirichlet(np.full(n_favourites, 4.0))
    weights[favourites] = config.favourite_genre_share * split
    return weights


def _user_plays(user_index: int, user_id: str, config: DemoDataConfig, tracks: Sequence[Track],
                model: _ListeningModel, start_unix: int) -> tuple[list[Play], int]:
    """One user's plays in time order, and how many sessions they form."""
    rng = random_stream(config, STREAM_USER, user_index)
    genre_cumulative = np.cumsum(_user_genre_weights(rng, config))
    activity = rng.lognormal(0.0, 0.4)
    n_sessions = max(1, int(rng.poisson(config.sessions_per_user_mean * activity)))
    span_s = config.span_days * 86400
    session_starts = np.sort(rng.uniform(0, span_s, size=n_sessions)).astype(np.int64) + start_unix
    min_gap_s = int(config.min_session_gap_minutes * 60)

    def jump() -> int:
        return model.popular_track(rng, _draw(rng, genre_cumulative))

    plays: list[Play] = []
    last_end = None
    for session_index, session_start in enumerate(session_starts):
        clock = int(session_start)
        if last_end is not None and clock - last_end < min_gap_s:
            # Sessions drawn too close together: push this one past the break, by hours.
            clock = last_end + min_gap_s + int(rng.uniform(0, 6 * 3600))
        length = min(config.session_length_max,
                     1 + int(rng.geometric(1.0 / (config.session_length_mean - 1.0))))
        current = jump()
        for position in range(length):
            if position:
                if rng.random() < config.follow_probability:
                    current = int(model.successor[current])
                else:
                    previous = current
                    while current == previous:
                        current = jump()
            song_ms = tracks[current].song_ms
            if rng.random() < config.skip_probability:
                ms_played = int(1000 * rng.uniform(*config.skip_seconds_range))
            else:
                ms_played = song_ms
            plays.append(Play(user_id, clock, current, ms_played, session_index))
            # The next play starts when this one stops, after a short pause.
            clock += int(np.ceil(ms_played / 1000)) + int(rng.integers(0, 6))
        last_end = plays[-1].timestamp + int(np.ceil(plays[-1].ms_played / 1000))
    return plays, len(session_starts)


def generate_plays(config: DemoDataConfig, tracks: Sequence[Track]) -> tuple[list[Play], int]:
    """All users' plays, sorted by user then time, and the number of sessions."""
    model = _ListeningModel(config, tracks)
    start_unix = int(dt.datetime.fromisoformat(config.start_date)
                     .replace(tzinfo=dt.timezone.utc).timestamp())
    width = max(4, len(str(config.n_users - 1)))
    plays: list[Play] = []
    n_sessions = 0
    for user_index in range(config.n_users):
        user_plays, user_sessions = _user_plays(user_index, f"user-{user_index:0{width}d}", config,
                                                tracks, model, start_unix)
        plays.extend(user_plays)
        n_sessions += user_sessions
    return plays, n_sessions


def choose_cold_tracks(config: DemoDataConfig, n_tracks: int) -> np.ndarray:
    """Catalogue indices of the cold-start tracks, sorted: a uniform draw without replacement.

    ``round(cold_track_fraction * n_tracks)`` tracks (at least one when the
    fraction is positive). The draw has its own random stream, so the audio
    and the plays do not change with the fraction.
    """
    if config.cold_track_fraction <= 0:
        return np.zeros(0, dtype=np.int64)
    count = min(n_tracks - 1, max(1, round(config.cold_track_fraction * n_tracks)))
    rng = random_stream(config, STREAM_HOLDOUT)
    return np.sort(rng.choice(n_tracks, size=count, replace=False))


def hold_out_cold_plays(plays: Sequence[Play], cold: np.ndarray) -> tuple[list[Play], list[tuple[Play, bool]]]:
    """Splits the play log for cold start.

    Returns:
        the plays that stay in the play log (no cold track), and every play of
        each session that played a cold track, in order, paired with whether it
        was held out (a cold track's play).
    """
    cold_set = set(int(i) for i in cold)
    sessions_with_cold = {(p.user_id, p.session_index) for p in plays if p.track_index in cold_set}
    kept = [p for p in plays if p.track_index not in cold_set]
    context = [(p, p.track_index in cold_set) for p in plays
               if (p.user_id, p.session_index) in sessions_with_cold]
    return kept, context


__all__ = ["Track", "Play", "build_catalogue", "generate_plays", "choose_cold_tracks", "hold_out_cold_plays"]
