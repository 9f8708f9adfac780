"""Audio files to mono waveforms and log-mel segments, with one stable reason for every file refused.

Decoding is libsndfile's (through ``soundfile``), resampling soxr's; the
features are those of :mod:`musicrec.models.features`. A file that cannot be used
raises :class:`AudioDecodeError` whose ``reason`` is one of
:data:`DECODE_REASONS` (ingestion counts its dead letters by it).
"""
from __future__ import annotations

import numpy as np

from musicrec.models.features import AudioFeatureParams, log_mel, segment


class AudioDecodeError(ValueError):
    """The file could not be decoded as audio, or held no usable samples.

    Attributes:
        reason: one of :data:`DECODE_REASONS`, exact and stable (dead letters
            are grouped by it).
        detail: what exactly went wrong, for people (path, decoder message).
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# Dead-letter reasons: one exact string per class of bad input, so that
# dead_letters.jsonl can be counted and filtered by reason (docs/ingestion.md).
REASON_EMPTY = "empty file"
REASON_UNREADABLE = "unreadable file"
REASON_NOT_AUDIO = "not audio"
REASON_CORRUPT = "corrupt audio"
REASON_TOO_SHORT = "too short"
REASON_SILENT = "silent"
DECODE_REASONS = (REASON_EMPTY, REASON_UNREADABLE, REASON_NOT_AUDIO, REASON_CORRUPT,
                  REASON_TOO_SHORT, REASON_SILENT)

# A clip whose peak stays below this level (dBFS) holds no music worth a
# label: -60 dBFS is far under the quietest passages of mastered recordings.
SILENCE_PEAK_DBFS = -60.0

# First bytes of the containers libsndfile decodes. A file that starts with
# one of them but does not decode is "corrupt audio"; one that starts with
# none of them and does not decode is "not audio".
_AUDIO_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"ID3", b"FORM", b".snd", b"caff",
                b"wvpk", b"MAC ")


def _looks_like_audio(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) starts like an audio container.

    MPEG audio without an ID3 tag starts with an 11-bit frame sync (``0xFFE``).
    """
    if head.startswith(_AUDIO_MAGIC):
        return True
    return len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0


def _open_binary(path: str):
    """A binary file object: builtin ``open`` for local paths, ``tf.io.gfile`` for URIs."""
    if "://" not in path:
        return open(path, "rb")
    import tensorflow as tf

    return tf.io.gfile.GFile(path, "rb")


def _decode(handle, path: str) -> tuple[np.ndarray, int]:
    """Decodes an open file with libsndfile: ``(float32 [samples, channels], rate)``.

    A local file is decoded from its path, so libsndfile reads it without calling back
    into Python (and without holding the GIL); ``handle`` then only supplies the first bytes.
    """
    import soundfile as sf

    head = handle.read(16)
    if not head:
        raise AudioDecodeError(REASON_EMPTY, f"{path} is 0 bytes")
    handle.seek(0)
    try:
        with sf.SoundFile(path if "://" not in path else handle) as sound:
            rate = sound.samplerate
            try:
                samples = sound.read(dtype="float32", always_2d=True)
            except Exception as exc:  # libsndfile reports mid-stream damage as LibsndfileError
                raise AudioDecodeError(REASON_CORRUPT,
                                       f"{path}: {sound.format} stream does not decode: {exc}") from exc
    except AudioDecodeError:
        raise
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError or TypeError here
        reason = REASON_CORRUPT if _looks_like_audio(head) else REASON_NOT_AUDIO
        raise AudioDecodeError(reason, f"{path}: libsndfile cannot open it: {exc}") from exc
    return samples, rate


def load_audio(path: str, params: AudioFeatureParams) -> np.ndarray:
    """Decodes an audio file to mono float32 samples at ``params.sample_rate``.

    libsndfile (through ``soundfile``) decodes WAV, FLAC, OGG/Vorbis, Opus and
    MP3 directly, so a bad file fails with a clean reason instead of
    librosa's audioread fallback; channels are averaged to mono and the
    result resampled with soxr (``HQ``, the quality librosa's ``soxr_hq``
    uses), so features match those of ``librosa.load``.

    Args:
        path: local path or any path ``tf.io.gfile`` opens (``gs://``, ...).
        params: the feature parameters; only ``sample_rate`` is used.

    Returns:
        float32 array of shape ``[samples]``, values in [-1, 1].

    Raises:
        AudioDecodeError: with ``reason`` one of ``REASON_UNREADABLE`` (cannot
            be opened or read), ``REASON_EMPTY`` (0 bytes), ``REASON_NOT_AUDIO``
            (no audio container libsndfile knows), ``REASON_CORRUPT`` (an audio
            container whose stream does not decode, holds no samples, or holds
            non-finite samples).
    """
    try:
        with _open_binary(path) as handle:
            if "://" in path:  # remote streams may not seek; one track fits in memory
                import io

                handle = io.BytesIO(handle.read())
            samples, rate = _decode(handle, path)
    except AudioDecodeError:
        raise
    except Exception as exc:  # OSError locally; tf.errors.OpError (not an OSError) for URIs
        raise AudioDecodeError(REASON_UNREADABLE, f"{path}: {type(exc).__name__}: {exc}") from exc
    if samples.shape[0] == 0:
        raise AudioDecodeError(REASON_CORRUPT, f"{path}: the audio stream holds no samples")
    waveform = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if not np.all(np.isfinite(waveform)):
        raise AudioDecodeError(REASON_CORRUPT, f"{path} holds non-finite samples")
    if rate != params.sample_rate:
        import soxr

        waveform = soxr.resample(waveform, rate, params.sample_rate, quality="HQ")
    return np.ascontiguousarray(waveform, dtype=np.float32)


def peak_dbfs(waveform: np.ndarray) -> float:
    """Peak level of a ``[samples]`` waveform in dB relative to full scale (``-inf`` for zeros)."""
    peak = max(float(waveform.max()), -float(waveform.min())) if waveform.size else 0.0
    return 20.0 * float(np.log10(peak)) if peak > 0 else float("-inf")


def track_segments(path: str, params: AudioFeatureParams,
                   filterbank: np.ndarray | None = None) -> np.ndarray:
    """Loads a file and returns its segments ``[n_segments, frames, n_mels]``.

    ``filterbank``: as for :func:`~musicrec.models.features.log_mel`.

    Raises:
        AudioDecodeError: as :func:`usable_waveform`.
    """
    return segment(log_mel(usable_waveform(path, params), params, filterbank), params)


def usable_waveform(path: str, params: AudioFeatureParams) -> np.ndarray:
    """:func:`load_audio`, refusing a file too short for one segment or silent.

    Raises:
        AudioDecodeError: undecodable (see :func:`load_audio`), ``REASON_TOO_SHORT``
            (shorter than one segment) or ``REASON_SILENT`` (peak below
            ``SILENCE_PEAK_DBFS``).
    """
    waveform = load_audio(path, params)
    if params.frame_count(waveform.shape[0]) < params.frames_per_segment:
        seconds = waveform.shape[0] / params.sample_rate
        raise AudioDecodeError(
            REASON_TOO_SHORT,
            f"{path} is {seconds:.2f} s long, shorter than one {params.segment_seconds} s segment")
    level = peak_dbfs(waveform)
    if level < SILENCE_PEAK_DBFS:
        raise AudioDecodeError(REASON_SILENT, f"{path} peaks at {level:.1f} dBFS, below "
                                              f"{SILENCE_PEAK_DBFS:.0f} dBFS")
    return waveform


__all__ = [
    "AudioDecodeError", "load_audio", "track_segments", "usable_waveform", "peak_dbfs", "DECODE_REASONS",
    "REASON_EMPTY", "REASON_UNREADABLE", "REASON_NOT_AUDIO", "REASON_CORRUPT", "REASON_TOO_SHORT",
    "REASON_SILENT", "SILENCE_PEAK_DBFS",
]
