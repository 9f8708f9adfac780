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

ProgressFn = Callable[[str], None]

METADATA_HEADER = ("path", "genre", "artist", "track_id")
PLAYLOG_HEADER = ("user_id", "timestamp", "track_id", "artist", "ms_played")
HOLDOUT_HEADER = PLAYLOG_HEADER + ("session_id", "held_out")
HOLDOUT_PLAYS_PATH = "holdout/cold_plays.csv"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
GENERATION_FORMAT_VERSION = 2


# --------------------------------------------------------------------------- config


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


# --------------------------------------------------------------------------- genre recipes


@dataclasses.dataclass(frozen=True)
class Voice:
    """One pitched part of a genre recipe.

    Attributes:
        oscillator: key of :data:`_OSCILLATORS`.
        midi_range: lowest and highest MIDI note of the part.
        step: note grid, in sixteenth notes.
        motion: ``"walk"`` (stepwise melody), ``"leap"`` (random scale notes),
            ``"root"`` (root of the bar's chord, for bass lines and chords).
        rest_probability: chance that a grid slot stays silent.
        attack_s, decay_s: envelope rise time and exponential decay constant, s.
        hold: note length in grid steps (above 1 the notes overlap).
        chord: semitone intervals stacked on every note.
        offset: start of the grid within the bar, in sixteenths (off-beats).
        level: mix level before per-track jitter.
        echo: feedback of a dotted-eighth echo (dub), 0 for none.
    """

    oscillator: str
    midi_range: tuple[int, int]
    step: int
    motion: str = "walk"
    rest_probability: float = 0.0
    attack_s: float = 0.005
    decay_s: float = 0.3
    hold: float = 1.0
    chord: tuple[int, ...] = (0,)
    offset: int = 0
    level: float = 1.0
    echo: float = 0.0


@dataclasses.dataclass(frozen=True)
class GenreRecipe:
    """How one genre sounds: tempo, scale, pitched voices and 16-step drum patterns.

    Drum patterns hold 16 characters per bar: ``x`` a hit, ``o`` a soft hit,
    ``.`` silence. ``noise_floor`` is a constant hiss level (ambient wash).
    """

    name: str
    bpm_range: tuple[float, float]
    scale: tuple[int, ...]
    voices: tuple[Voice, ...]
    kick: str = ""
    snare: str = ""
    hat: str = ""
    drum_level: float = 1.0
    noise_floor: float = 0.0
    drive: float = 0.0


_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
_HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)
_MAJOR_PENTATONIC = (0, 2, 4, 7, 9)
_MINOR_PENTATONIC = (0, 3, 5, 7, 10)
_PHRYGIAN = (0, 1, 3, 5, 7, 8, 10)

# The first four are the most distinct, since tiny data sets use only those.
GENRE_RECIPES: tuple[GenreRecipe, ...] = (
    GenreRecipe(
        "ambient", (60, 76), _MAJOR_PENTATONIC,
        voices=(Voice("pad", (40, 55), 16, motion="root", attack_s=0.9, decay_s=4.0, hold=1.3,
                      chord=(0, 7, 16), level=0.8),
                Voice("sine", (64, 84), 8, rest_probability=0.3, attack_s=0.4, decay_s=1.5,
                      hold=1.5, level=0.5)),
        noise_floor=0.006),
    GenreRecipe(
        "techno", (124, 134), _MINOR,
        voices=(Voice("square", (33, 45), 4, motion="root", offset=2, attack_s=0.003,
                      decay_s=0.12, level=0.8),
                Voice("saw", (57, 72), 2, motion="leap", rest_probability=0.6, decay_s=0.07,
                      chord=(0, 7), level=0.35)),
        kick="x...x...x...x...", snare="....x.......x...", hat="o.x.o.x.o.x.o.x.",
        drum_level=1.2),
    GenreRecipe(
        "rock", (100, 140), _MINOR_PENTATONIC,
        voices=(Voice("dist_saw", (40, 52), 2, motion="root", attack_s=0.005, decay_s=0.5,
                      chord=(0, 7, 12), level=0.6),
                Voice("saw", (28, 40), 2, motion="root", decay_s=0.3, level=0.5)),
        kick="x.....x.x.......", snare="....x.......x...", hat="x.x.x.x.x.x.x.x.",
        drive=2.5),
    GenreRecipe(
        "chiptune", (140, 170), _MAJOR,
        voices=(Voice("pulse", (72, 96), 1, motion="leap", attack_s=0.001, decay_s=0.15,
                      level=0.45),
                Voice("square", (45, 57), 2, motion="root", attack_s=0.001, decay_s=0.2,
                      level=0.4)),
        kick="x.......x.......", snare="....x.......x...", hat="x.x.x.x.x.x.x.x.",
        drum_level=0.5),
    GenreRecipe(
        "dub", (64, 80), _MINOR,
        voices=(Voice("sine", (28, 40), 4, motion="root", rest_probability=0.2, attack_s=0.01,
                      decay_s=0.6, hold=1.0, level=1.2),
                Voice("fm", (60, 72), 4, motion="root", offset=2, attack_s=0.002, decay_s=0.08,
                      chord=(0, 3, 7), level=0.35, echo=0.55)),
        kick="........x.......", snare="........x.......", hat="..o...o...o...o.",
        drum_level=0.9),
    GenreRecipe(
        "baroque", (88, 116), _HARMONIC_MINOR,
        voices=(Voice("harpsichord", (62, 86), 1, attack_s=0.001, decay_s=0.35, hold=1.5,
                      level=0.5),
                Voice("harpsichord", (40, 55), 4, motion="root", attack_s=0.001, decay_s=0.6,
                      level=0.5)),
    ),
    GenreRecipe(
        "drum-and-bass", (166, 178), _MINOR,
        voices=(Voice("reese", (26, 38), 8, motion="root", attack_s=0.02, decay_s=1.2, hold=1.0,
                      level=0.7),
                Voice("fm", (67, 79), 4, motion="leap", rest_probability=0.5, decay_s=0.4,
                      level=0.2)),
        kick="x.........x.....", snare="....x.......x...", hat="x.xxx.x.x.xxx.x.",
        drum_level=1.1),
    GenreRecipe(
        "industrial", (110, 130), _PHRYGIAN,
        voices=(Voice("metal", (36, 60), 2, motion="leap", rest_probability=0.3,
                      attack_s=0.002, decay_s=0.25, level=0.6),),
        kick="x..x..x.x..x..x.", snare="....x..x....x.xx", hat="xxxxxxxxxxxxxxxx",
        drum_level=1.0, noise_floor=0.01, drive=3.0),
)


def genre_names(n_genres: int | None = None) -> list[str]:
    """Names of the first ``n_genres`` recipes (all of them when ``None``)."""
    return [recipe.name for recipe in GENRE_RECIPES[:n_genres]]


# --------------------------------------------------------------------------- synthesis


def _sine(freq: float, t: np.ndarray) -> np.ndarray:
    return np.sin(2 * np.pi * freq * t)


def _saw(freq: float, t: np.ndarray) -> np.ndarray:
    return 2.0 * np.mod(freq * t, 1.0) - 1.0


def _square(freq: float, t: np.ndarray, duty: float = 0.5) -> np.ndarray:
    return np.where(np.mod(freq * t, 1.0) < duty, 1.0, -1.0)


def _pulse(freq: float, t: np.ndarray) -> np.ndarray:
    return _square(freq, t, duty=0.25)


def _pad(freq: float, t: np.ndarray) -> np.ndarray:
    # Slightly detuned sines beat slowly, the usual cheap "warm pad".
    return (_sine(freq, t) + 0.7 * _sine(freq * 1.004, t) + 0.3 * _sine(freq * 2.003, t)) / 2.0


def _fm(freq: float, t: np.ndarray) -> np.ndarray:
    index = 3.0 * np.exp(-t / 0.15)
    return np.sin(2 * np.pi * freq * t + index * np.sin(2 * np.pi * 2.0 * freq * t))


def _metal(freq: float, t: np.ndarray) -> np.ndarray:
    # An inharmonic carrier:modulator ratio gives the clangy, bell-like industrial timbre.
    return np.sin(2 * np.pi * freq * t + 6.0 * np.sin(2 * np.pi * 1.414 * freq * t))


def _harpsichord(freq: float, t: np.ndarray) -> np.ndarray:
    # Sum over k of (r * exp(-6 t))**k * sin(k w t) / k in closed form: partial k decays
    # k times faster than the fundamental (bright attack, mellow tail), r < 1 limits the band.
    damping = 0.85 * np.exp(-6.0 * t)
    angle = 2 * np.pi * freq * t
    return np.arctan2(damping * np.sin(angle), 1.0 - damping * np.cos(angle))


def _reese(freq: float, t: np.ndarray) -> np.ndarray:
    return (_saw(freq, t) + _saw(freq * 1.012, t)) * 0.5 + 0.8 * _sine(freq, t)


def _dist_saw(freq: float, t: np.ndarray) -> np.ndarray:
    return np.tanh(2.5 * (_saw(freq, t) + _saw(freq * 1.006, t)))


_OSCILLATORS: dict[str, Callable[[float, np.ndarray], np.ndarray]] = {
    "sine": _sine, "saw": _saw, "square": _square, "pulse": _pulse, "pad": _pad, "fm": _fm,
    "metal": _metal, "harpsichord": _harpsichord, "reese": _reese, "dist_saw": _dist_saw,
}


def _midi_to_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def _scale_notes(key: int, scale: Sequence[int], low: int, high: int) -> np.ndarray:
    """MIDI notes of the scale rooted at pitch class ``key`` within ``[low, high]``."""
    notes = [n for n in range(low, high + 1) if (n - key) % 12 in scale]
    if not notes:
        raise ValueError(f"no notes of the scale within MIDI [{low}, {high}]")
    return np.array(notes)


def _add(buffer: np.ndarray, start: int, sound: np.ndarray) -> None:
    """Mixes ``sound`` into ``buffer`` at sample ``start``, cutting what runs past the end."""
    if start >= buffer.shape[0]:
        return
    end = min(buffer.shape[0], start + sound.shape[0])
    buffer[start:end] += sound[:end - start]


def _note(oscillator: str, freq: float, seconds: float, voice: Voice, sample_rate: int) -> np.ndarray:
    """One enveloped note, float32 ``[samples]``, cut once it has decayed by 60 dB."""
    n_samples = min(int(seconds * sample_rate), int(7.0 * voice.decay_s * sample_rate))
    t = np.arange(n_samples, dtype=np.float32) / np.float32(sample_rate)
    envelope = np.exp(-t / np.float32(voice.decay_s))
    attack = min(n_samples, int(voice.attack_s * sample_rate))
    envelope[:attack] *= np.arange(attack, dtype=np.float32) / max(1, attack)
    release = min(n_samples, int(0.01 * sample_rate))  # a 10-ms fade avoids clicks
    envelope[n_samples - release:] *= np.linspace(1.0, 0.0, release, dtype=np.float32)
    return _OSCILLATORS[oscillator](freq, t) * envelope


def _drum_kit(rng: np.random.Generator, sample_rate: int) -> dict[str, np.ndarray]:
    """Kick, snare and hat one-shots with a little per-track variation, float64 ``[samples]``."""
    def seconds(length: float) -> np.ndarray:
        return np.arange(int(length * sample_rate)) / sample_rate

    t = seconds(0.35)
    low, high = rng.uniform(40, 55), rng.uniform(120, 180)
    sweep = low + (high - low) * np.exp(-t / 0.04)
    kick = np.sin(2 * np.pi * np.cumsum(sweep) / sample_rate) * np.exp(-t / 0.12)
    t = seconds(0.25)
    snare = (np.diff(rng.standard_normal(t.shape[0] + 1)) * 0.35 * np.exp(-t / 0.09)
             + 0.5 * np.sin(2 * np.pi * rng.uniform(170, 210) * t) * np.exp(-t / 0.06))
    t = seconds(0.07)
    hat = np.diff(rng.standard_normal(t.shape[0] + 1)) * 0.25 * np.exp(-t / rng.uniform(0.012, 0.025))
    return {"kick": kick, "snare": snare, "hat": hat}


def synthesize_track(recipe: GenreRecipe, rng: np.random.Generator, seconds: float,
                     sample_rate: int) -> np.ndarray:
    """Renders one track of a genre.

    Args:
        recipe: the genre's recipe.
        rng: the track's own generator (key, tempo, melody, mix and noise).
        seconds: clip length, in seconds.
        sample_rate: in Hz.

    Returns:
        float32 ``[round(seconds * sample_rate)]``, peak between 0.5 and 0.9.
    """
    n_samples = int(round(seconds * sample_rate))
    mix = np.zeros(n_samples)
    key = int(rng.integers(12))
    bpm = rng.uniform(*recipe.bpm_range)
    sixteenth = 60.0 / bpm / 4.0
    n_bars = int(np.ceil(seconds / (16 * sixteenth))) + 1
    # A bar-wise chord progression over scale degrees that bass, chords and melody share.
    progression = rng.choice([0, 0, 3, 4, 5], size=n_bars)

    for voice in recipe.voices:
        notes = _scale_notes(key, recipe.scale, *voice.midi_range)
        tonic = int(np.argmax((notes - key) % 12 == 0))  # lowest note of the key in range
        level = voice.level * rng.uniform(0.8, 1.25)
        part = np.zeros(n_samples)
        position = int(rng.integers(notes.shape[0]))
        for slot in range(voice.offset, n_bars * 16, voice.step):
            start = int(slot * sixteenth * sample_rate)
            if start >= n_samples:
                break
            if rng.random() < voice.rest_probability:
                continue
            if voice.motion == "root":
                octave = int(rng.integers(2)) * len(recipe.scale)
                position = min(notes.shape[0] - 1, tonic + progression[slot // 16] + octave)
            elif voice.motion == "leap":
                position = int(rng.integers(notes.shape[0]))
            else:
                position = int(np.clip(position + rng.integers(-2, 3), 0, notes.shape[0] - 1))
            velocity = rng.uniform(0.7, 1.0)
            duration = voice.step * voice.hold * sixteenth
            for interval in voice.chord:
                freq = _midi_to_hz(notes[position] + interval)
                _add(part, start, velocity * _note(voice.oscillator, freq, duration, voice, sample_rate))
        if voice.echo:
            delay = int(3 * sixteenth * sample_rate)
            for repeat in range(1, 4):
                _add(part, delay * repeat, part[:n_samples - delay * repeat] * voice.echo ** repeat)
        mix += level * part / max(1, len(voice.chord)) ** 0.5

    if recipe.kick or recipe.snare or recipe.hat:
        kit = _drum_kit(rng, sample_rate)
        drum_level = recipe.drum_level * rng.uniform(0.8, 1.25)
        for name, pattern in (("kick", recipe.kick), ("snare", recipe.snare), ("hat", recipe.hat)):
            for bar in range(n_bars):
                for step, hit in enumerate(pattern):
                    if hit == ".":
                        continue
                    accent = 1.0 if hit == "x" else 0.5
                    start = int((bar * 16 + step) * sixteenth * sample_rate)
                    _add(mix, start, drum_level * accent * rng.uniform(0.8, 1.0) * kit[name])

    if recipe.drive:
        mix = np.tanh(recipe.drive * mix / (np.max(np.abs(mix)) + 1e-9))
    peak = np.max(np.abs(mix)) + 1e-9
    noise_level = recipe.noise_floor + 10.0 ** (rng.uniform(-50, -40) / 20.0)
    mix = mix / peak + noise_level * rng.standard_normal(n_samples)
    target_peak = rng.uniform(0.5, 0.9)
    return (mix * (target_peak / np.max(np.abs(mix)))).astype(np.float32)


# --------------------------------------------------------------------------- catalogue


@dataclasses.dataclass(frozen=True)
class Track:
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


def _seed_sequence(config: DemoDataConfig, *stream: int) -> np.random.Generator:
    """An independent generator per (seed, purpose, index...), stable under config changes."""
    return np.random.default_rng([config.seed, *stream])


_STREAM_CATALOGUE, _STREAM_AUDIO, _STREAM_USER, _STREAM_HOLDOUT = 1, 2, 3, 4


def build_catalogue(config: DemoDataConfig) -> list[Track]:
    """The tracks, ordered by id: genre by genre, artists spread evenly over a genre's tracks."""
    rng = _seed_sequence(config, _STREAM_CATALOGUE)
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


# --------------------------------------------------------------------------- play logs


@dataclasses.dataclass(frozen=True)
class Play:
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
        rng = _seed_sequence(config, _STREAM_CATALOGUE, 1)
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
    rng = _seed_sequence(config, _STREAM_USER, user_index)
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
    rng = _seed_sequence(config, _STREAM_HOLDOUT)
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
        rng = _seed_sequence(config, _STREAM_AUDIO, index)
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


__all__ = [
    "DemoDataConfig", "DemoDataSummary", "GENRE_RECIPES", "GenreRecipe", "Voice", "generate",
    "tiny_config", "genre_names", "synthesize_track", "build_catalogue", "generate_plays",
    "format_timestamp", "METADATA_HEADER", "PLAYLOG_HEADER", "HOLDOUT_HEADER",
    "HOLDOUT_PLAYS_PATH", "choose_cold_tracks", "hold_out_cold_plays",
]
