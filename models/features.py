"""Log-mel audio features: the one source of truth for their parameters.

The Beam ingestion job, the trainer, the evaluator and the ``classify`` client
all compute features through this module, so a parameter changed here changes
everywhere at once.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np


class AudioDecodeError(ValueError):
    """The file could not be decoded as audio, or held no usable samples."""


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
            maps to ``log(log_floor)`` instead of ``-inf``.
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

    @property
    def segment_samples(self) -> int:
        """Samples in one segment."""
        return int(round(self.segment_seconds * self.sample_rate))

    @property
    def frames_per_segment(self) -> int:
        """STFT frames in one segment (``center=False`` framing)."""
        return 1 + (self.segment_samples - self.n_fft) // self.hop_length

    @property
    def segment_hop_frames(self) -> int:
        """Frames between the starts of consecutive segments (at least 1)."""
        return max(1, int(round(self.segment_hop_seconds * self.sample_rate / self.hop_length)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "AudioFeatureParams":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown audio feature parameters: {unknown}")
        return cls(**values)


def load_audio(path: str, params: AudioFeatureParams) -> np.ndarray:
    """Decodes an audio file to mono float32 samples at ``params.sample_rate``.

    Args:
        path: local path or any path ``tf.io.gfile`` opens (``gs://``, ...).
        params: the feature parameters; only ``sample_rate`` is used.

    Returns:
        float32 array of shape ``[samples]``, values in [-1, 1].

    Raises:
        AudioDecodeError: the file is unreadable, not audio, or empty.
    """
    import librosa  # heavy; the serving image never needs it

    try:
        waveform, _ = librosa.load(_local_or_buffer(path), sr=params.sample_rate, mono=True,
                                   res_type="soxr_hq")
    except Exception as exc:  # librosa raises many types for bad input
        raise AudioDecodeError(f"cannot decode {path}: {type(exc).__name__}: {exc}") from exc
    if waveform.size == 0:
        raise AudioDecodeError(f"{path} holds no audio samples")
    if not np.all(np.isfinite(waveform)):
        raise AudioDecodeError(f"{path} holds non-finite samples")
    return waveform.astype(np.float32, copy=False)


def _local_or_buffer(path: str):
    """Returns ``path`` itself for local files, else a file object via tf.io.gfile."""
    if "://" not in path:
        return path
    import io

    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as handle:
        return io.BytesIO(handle.read())


def mel_filterbank(params: AudioFeatureParams) -> np.ndarray:
    """Slaney mel filters, float32 ``[1 + n_fft // 2, n_mels]`` (linear bins to mels)."""
    import librosa

    filters = librosa.filters.mel(sr=params.sample_rate, n_fft=params.n_fft, n_mels=params.n_mels,
                                  fmin=params.fmin, fmax=params.fmax)
    return filters.T.astype(np.float32)


def log_mel(waveform: np.ndarray, params: AudioFeatureParams) -> np.ndarray:
    """Log-mel spectrogram of a mono waveform.

    Args:
        waveform: float array ``[samples]`` at ``params.sample_rate``.
        params: the feature parameters.

    Returns:
        float32 array ``[frames, n_mels]`` with
        ``frames = 1 + (samples - n_fft) // hop_length`` (0 when the waveform
        is shorter than one window), values ``log(mel_power + log_floor)``.
    """
    import librosa

    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.shape[0] < params.n_fft:
        return np.zeros((0, params.n_mels), dtype=np.float32)
    power = librosa.feature.melspectrogram(
        y=waveform, sr=params.sample_rate, n_fft=params.n_fft, hop_length=params.hop_length,
        window="hann", center=False, power=2.0, n_mels=params.n_mels, fmin=params.fmin,
        fmax=params.fmax)
    return np.log(power + params.log_floor).T.astype(np.float32)


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


def track_segments(path: str, params: AudioFeatureParams) -> np.ndarray:
    """Loads a file and returns its segments ``[n_segments, frames, n_mels]``.

    Raises:
        AudioDecodeError: undecodable, or shorter than one segment.
    """
    waveform = load_audio(path, params)
    segments = segment(log_mel(waveform, params), params)
    if segments.shape[0] == 0:
        seconds = waveform.shape[0] / params.sample_rate
        raise AudioDecodeError(
            f"{path} is {seconds:.2f} s long, shorter than one {params.segment_seconds} s segment")
    return segments


def expected_segments(duration_seconds: float, params: AudioFeatureParams) -> int:
    """Number of segments :func:`track_segments` yields for a clip of that length."""
    frames = 1 + (int(duration_seconds * params.sample_rate) - params.n_fft) // params.hop_length
    if frames < params.frames_per_segment:
        return 0
    return 1 + (frames - params.frames_per_segment) // params.segment_hop_frames


__all__ = [
    "AudioDecodeError", "AudioFeatureParams", "load_audio", "log_mel", "mel_filterbank",
    "segment", "track_segments", "expected_segments",
]
