"""Log-mel audio features: the one source of truth for their parameters.

The Beam ingestion job, the trainer, the evaluator and the ``classify`` client
all compute features through this module (audio files are decoded by
:mod:`musicrec.models.audio_files`), so a parameter changed here changes
everywhere at once.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class AudioFeatureParams:
    """Parameters of the log-mel front end.

    Attributes:
        sample_rate: Hz; every input is resampled to it and mixed to mono.
        n_fft: STFT window length, in samples.
        hop_length: STFT hop, in samples.
        n_mels: number of mel bands.
        fmin: lowest mel band edge, in Hz.
        fmax: highest mel band edge, in Hz; ``None`` means ``sample_rate / 2``.
        segment_seconds: length of one model input segment, in seconds.
        segment_hop_seconds: distance between segment starts, in seconds.
        log_floor: added to the mel power before the natural log, so silence
            maps to ``log(log_floor)`` instead of ``-inf`` (``compression: log``).
        center: frame the signal as librosa's ``center=True`` does (``n_fft // 2``
            zeros on either side, frame ``t`` centred on sample ``t * hop_length``);
            ``False``: frame ``t`` starts at sample ``t * hop_length``.
        compression: how mel power becomes the features: ``"log"``,
            ``log(mel_power + log_floor)``; ``"log10_1p"``, ``log10(1 + 10000 *
            mel_power)`` (musicnn's "logC", :data:`LOG10_1P_GAIN`), 0 for silence.
    """

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 64
    fmin: float = 20.0
    fmax: float | None = None
    segment_seconds: float = 3.0
    segment_hop_seconds: float = 3.0
    log_floor: float = 1e-6
    center: bool = False
    compression: str = "log"

    def __post_init__(self):
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop_length <= 0:
            raise ValueError("sample_rate, n_fft and hop_length must be positive")
        if self.n_mels <= 0:
            raise ValueError("n_mels must be positive")
        if self.segment_samples < self.n_fft:
            raise ValueError(
                f"segment_seconds={self.segment_seconds} is shorter than one "
                f"STFT window ({self.n_fft} samples at {self.sample_rate} Hz)"
            )
        if self.segment_hop_seconds <= 0:
            raise ValueError("segment_hop_seconds must be positive")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, got {self.compression!r}")

    @property
    def segment_samples(self) -> int:
        """Samples in one segment."""
        return int(round(self.segment_seconds * self.sample_rate))

    @property
    def frames_per_segment(self) -> int:
        """STFT frames in one segment.

        ``center=False``: the frames that fit in ``segment_samples``.
        ``center=True``: ``librosa.time_to_frames(segment_seconds) + 1``, the
        patch length musicnn was trained on (187 frames for 3 s at 16 kHz, hop 256).
        """
        if self.center:
            return 1 + (self.segment_samples - self.n_fft // 2) // self.hop_length
        return 1 + (self.segment_samples - self.n_fft) // self.hop_length

    @property
    def segment_hop_frames(self) -> int:
        """Frames between the starts of consecutive segments (at least 1).

        Centred framing with the hop equal to the segment length gives
        back-to-back segments (musicnn's non-overlapping patches), however
        the seconds round to frames.
        """
        if self.center and self.segment_hop_seconds == self.segment_seconds:
            return self.frames_per_segment
        return max(1, int(round(self.segment_hop_seconds * self.sample_rate / self.hop_length)))

    def frame_count(self, samples: int) -> int:
        """STFT frames of a waveform of ``samples`` samples (0 when too short for one)."""
        if self.center:
            return 1 + samples // self.hop_length
        return 0 if samples < self.n_fft else 1 + (samples - self.n_fft) // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "AudioFeatureParams":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown audio feature parameters: {unknown}")
        return cls(**values)


# What AudioFeatureParams.compression may be, and the gain of "log10_1p" (musicnn's).
COMPRESSIONS = ("log", "log10_1p")
LOG10_1P_GAIN = 10000.0


def compress(mel_power: np.ndarray, params: AudioFeatureParams) -> np.ndarray:
    """Mel power to features, in place when ``mel_power`` is float32 (``params.compression``)."""
    if params.compression == "log10_1p":
        mel_power *= LOG10_1P_GAIN
        mel_power += 1.0
        return np.log10(mel_power, out=mel_power)
    mel_power += params.log_floor
    return np.log(mel_power, out=mel_power)


def decompress(features: np.ndarray, params: AudioFeatureParams) -> np.ndarray:
    """The inverse of :func:`compress`: mel power (float64, at least 0) from log-mel features."""
    values = np.asarray(features, dtype=np.float64)
    if params.compression == "log10_1p":
        return np.maximum((np.power(10.0, values) - 1.0) / LOG10_1P_GAIN, 0.0)
    return np.maximum(np.exp(values) - params.log_floor, 0.0)


# STFT frames per FFT call: 256 windows of 2048 float32 samples is 2 MiB, so a
# block stays in cache and a long track never needs one array of all its frames.
_STFT_BLOCK_FRAMES = 256


def log_mel(waveform: np.ndarray, params: AudioFeatureParams,
            filterbank: np.ndarray | None = None) -> np.ndarray:
    """Log-mel spectrogram of a mono waveform.

    The same spectrogram as ``librosa.feature.melspectrogram(y, sr, n_fft,
    hop_length, window="hann", center, pad_mode="constant", power=2.0, n_mels,
    fmin, fmax)`` (librosa's Slaney mel filters, its periodic Hann window),
    compressed as ``params.compression`` says, computed with a
    single-precision FFT (``scipy.fft``) over blocks of frames: about twice as
    fast as librosa's own STFT, which computes in double precision, and within
    1e-4 of it after the log (``tests/models/test_features_log_mel.py``). librosa
    itself is imported only to build the filters, so a Beam worker that is
    handed ``filterbank`` never pays librosa's seconds of imports.

    Args:
        waveform: float array ``[samples]`` at ``params.sample_rate``.
        params: the feature parameters.
        filterbank: ``mel_filterbank(params)``, float32 ``[1 + n_fft // 2,
            n_mels]``; computed (and cached per ``params``) when ``None``.

    Returns:
        float32 array ``[frames, n_mels]`` with ``frames =
        params.frame_count(samples)`` (0 when the waveform is too short for
        one window), values ``log(mel_power + log_floor)`` or ``log10(1 +
        10000 * mel_power)``.
    """
    frames = _frames(waveform, params)
    if filterbank is None:
        filterbank = _cached_filterbank(params)
    mel_power = np.empty((frames.shape[0], params.n_mels), dtype=np.float32)
    for start, power in _power_blocks(frames, params):
        np.dot(power, filterbank, out=mel_power[start:start + power.shape[0]])
    return compress(mel_power, params)


def power_spectrogram(waveform: np.ndarray, params: AudioFeatureParams) -> np.ndarray:
    """STFT power of a mono waveform, as ``abs(librosa.stft(y, n_fft, hop_length, center)) ** 2``.

    Single precision, as :func:`log_mel` computes it (librosa's periodic Hann
    window, zero padding when ``params.center``).

    Returns:
        float32 ``[frames, 1 + n_fft // 2]``, ``frames = params.frame_count(samples)``.
    """
    frames = _frames(waveform, params)
    power = np.empty((frames.shape[0], 1 + params.n_fft // 2), dtype=np.float32)
    for start, block in _power_blocks(frames, params):
        power[start:start + block.shape[0]] = block
    return power


def _frames(waveform: np.ndarray, params: AudioFeatureParams) -> np.ndarray:
    """The STFT's frames of ``waveform``, a strided view: float32 ``[frames, n_fft]`` (0 frames
    when it is shorter than one window)."""
    waveform = np.ascontiguousarray(waveform, dtype=np.float32)
    if params.center:
        waveform = np.pad(waveform, params.n_fft // 2)
    if waveform.shape[0] < params.n_fft:
        return np.zeros((0, params.n_fft), dtype=np.float32)
    return np.lib.stride_tricks.sliding_window_view(waveform, params.n_fft)[::params.hop_length]


def _power_blocks(frames: np.ndarray, params: AudioFeatureParams):
    """Yields ``(first frame, power float32 [block frames, 1 + n_fft // 2])`` over blocks of
    :data:`_STFT_BLOCK_FRAMES` frames."""
    import scipy.fft

    window = _hann_window(params.n_fft)
    windowed = np.empty((min(_STFT_BLOCK_FRAMES, frames.shape[0]), params.n_fft), dtype=np.float32)
    for start in range(0, frames.shape[0], _STFT_BLOCK_FRAMES):
        block = frames[start:start + _STFT_BLOCK_FRAMES]
        np.multiply(block, window, out=windowed[:block.shape[0]])
        spectrum = scipy.fft.rfft(windowed[:block.shape[0]], axis=-1)
        power = np.square(spectrum.real)
        power += np.square(spectrum.imag)
        yield start, power


@functools.lru_cache(maxsize=4)
def _hann_window(n_fft: int) -> np.ndarray:
    """The periodic Hann window librosa's STFT uses (``scipy.signal.get_window("hann", n_fft)``)."""
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    window.setflags(write=False)
    return window


@functools.lru_cache(maxsize=8)
def _cached_filterbank(params: AudioFeatureParams) -> np.ndarray:
    filters = mel_filterbank(params)
    filters.setflags(write=False)
    return filters


def mel_filterbank(params: AudioFeatureParams) -> np.ndarray:
    """The mel filters :func:`log_mel` applies, as a matrix for in-graph front ends.

    librosa's Slaney-style filters (``htk=False``, ``norm="slaney"``), the
    ones ``librosa.feature.melspectrogram`` builds from the same parameters,
    so a ``tf.signal`` front end multiplying its STFT power by this matrix
    reproduces :func:`log_mel`.

    Returns:
        float32 ``[1 + n_fft // 2, n_mels]``: STFT power ``[frames, bins]``
        times this matrix is mel power ``[frames, n_mels]``.
    """
    import librosa

    filters = librosa.filters.mel(sr=params.sample_rate, n_fft=params.n_fft, n_mels=params.n_mels,
                                  fmin=params.fmin, fmax=params.fmax, htk=False, norm="slaney")
    return np.ascontiguousarray(filters.T, dtype=np.float32)


def segment(features: np.ndarray, params: AudioFeatureParams) -> np.ndarray:
    """Cuts a log-mel spectrogram into fixed-length segments.

    Args:
        features: float32 ``[frames, n_mels]`` from :func:`log_mel`.
        params: the feature parameters.

    Returns:
        float32 ``[n_segments, frames_per_segment, n_mels]``; segments start
        every ``segment_hop_frames`` frames and a trailing partial segment is
        dropped, so a clip shorter than one segment gives ``n_segments == 0``.
    """
    length, hop = params.frames_per_segment, params.segment_hop_frames
    count = 0 if features.shape[0] < length else 1 + (features.shape[0] - length) // hop
    if count == 0:
        return np.zeros((0, length, features.shape[1]), dtype=np.float32)
    starts = np.arange(count) * hop
    return np.stack([features[s:s + length] for s in starts]).astype(np.float32, copy=False)


def expected_segments(duration_seconds: float, params: AudioFeatureParams) -> int:
    """Number of segments :func:`~musicrec.models.audio_files.track_segments` yields for a clip of that length."""
    frames = params.frame_count(int(duration_seconds * params.sample_rate))
    if frames < params.frames_per_segment:
        return 0
    return 1 + (frames - params.frames_per_segment) // params.segment_hop_frames


__all__ = [
    "AudioFeatureParams", "log_mel", "power_spectrogram", "mel_filterbank", "compress", "decompress", "COMPRESSIONS",
    "LOG10_1P_GAIN", "segment", "expected_segments",
]
