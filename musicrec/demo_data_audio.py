"""Synthetic genre audio for the demo data: one recipe per genre, rendered with numpy.

Every genre has a recipe (timbre, tempo range, drum patterns, pitch range,
scale) so that genres differ in what log-mel features capture, while each
track draws its own key, tempo, melody, mix and noise from the generator it
is given (:func:`synthesize_track`).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np


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


__all__ = ["Voice", "GenreRecipe", "GENRE_RECIPES", "genre_names", "synthesize_track"]
