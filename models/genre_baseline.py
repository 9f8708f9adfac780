"""The classical genre baseline: MFCC, spectral centroid and contrast statistics, logistic regression.

Per frame: 20 MFCCs, the spectral centroid (Hz) and the 7 spectral-contrast
values (6 octave bands from 200 Hz and the rest), 28 values. Per clip: their
mean and standard deviation over the clip's frames, 56 values. A
scikit-learn pipeline standardises them (``StandardScaler``) and fits a
multinomial ``LogisticRegression``.

Two front ends give the frame features:

- :func:`frame_features_from_waveform`: librosa on the audio, the textbook
  recipe (STFT magnitude for centroid and contrast, 128-band mel for MFCC)
  at :data:`BASELINE_FEATURE_PARAMS` (22 050 Hz, whatever front end the
  Keras model uses). Audio ingestion stores each track's clip vector
  (:func:`track_vector`) in its examples, and the evaluator fits the
  baseline on those; the GTZAN benchmarks use it too.
- :func:`frame_features_from_log_mel`: the same quantities from the
  pipeline's log-mel segments (mel power in place of the STFT power, the
  mel band centre frequencies in place of the FFT bins). The evaluator falls
  back to it for examples ingested without the clip vectors: the
  ``AudioExamples`` artifact holds no source audio paths, and the audio may
  have moved or gone since ingestion. It is a weaker baseline when the
  log-mel is narrow (musicnn's 16 kHz one stops at 8 kHz).

Clip statistics are exact whichever order a clip's frames come in, so the
evaluator streams segments (:class:`ClipStatistics`) instead of holding
every track in memory.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from musicrec.models.features import AudioFeatureParams, decompress, power_spectrogram

N_MFCC = 20
CONTRAST_BANDS = 6
CONTRAST_FMIN = 200.0
FRAME_FEATURES = N_MFCC + 1 + CONTRAST_BANDS + 1
CLIP_FEATURES = 2 * FRAME_FEATURES
# The textbook recipe's audio features: librosa's 22 050 Hz, 2048-sample windows, hop 512,
# fixed here so the baseline does not change (nor weaken) with the Keras model's front end.
BASELINE_FEATURE_PARAMS = AudioFeatureParams(sample_rate=22050, n_fft=2048, hop_length=512)
# The audio examples' feature holding the track's clip vector (float [56]), on every segment of
# the track; absent when ingestion was told not to compute it (docs/architecture.md).
BASELINE_FEATURE = "baseline_features"


def frame_features_from_waveform(waveform: np.ndarray, params: AudioFeatureParams) -> np.ndarray:
    """Frame features of a mono waveform: librosa's MFCC, spectral centroid and contrast.

    The values of ``librosa.feature.mfcc(y, sr, n_mfcc=20)``,
    ``spectral_centroid`` and ``spectral_contrast(n_bands=6, fmin=200)`` on
    the STFT magnitude, computed from one single-precision STFT
    (:func:`musicrec.models.features.power_spectrogram`), with centroid and
    contrast vectorised over frames: about 2× faster than librosa's calls (which
    compute the STFT in double precision), within 0.02 dB (MFCC), 1e-4
    relative (centroid) and 0.1 dB (contrast) of them per frame
    (``tests/models/test_genre_baseline.py``), so ingestion can afford it
    for every track.

    Args:
        waveform: float ``[samples]`` at ``params.sample_rate``.
        params: STFT size, hop and framing (``n_fft``, ``hop_length``, ``center``).

    Returns:
        float32 ``[frames, 28]``: MFCC 1-20, centroid in Hz, contrast in dB (7 bands).
    """
    import librosa

    power = power_spectrogram(waveform, params)                      # [frames, bins]
    magnitude = np.sqrt(power)
    frequencies = librosa.fft_frequencies(sr=params.sample_rate, n_fft=params.n_fft)
    mel_power = _mfcc_filterbank(params.sample_rate, params.n_fft) @ power.T
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel_power), n_mfcc=N_MFCC).T
    return np.concatenate([mfcc, spectral_centroid(magnitude, frequencies)[:, None],
                           spectral_contrast(magnitude, frequencies)], axis=1).astype(np.float32)


def librosa_frame_features(waveform: np.ndarray, params: AudioFeatureParams) -> np.ndarray:
    """:func:`frame_features_from_waveform` by librosa's own calls (double-precision STFT, the
    same framing): the reference its tests and the ingestion benchmark measure it against."""
    import librosa

    stft = dict(n_fft=params.n_fft, hop_length=params.hop_length, center=params.center,
                pad_mode="constant")
    magnitude = np.abs(librosa.stft(np.asarray(waveform, dtype=np.float32), **stft))
    return np.concatenate([
        librosa.feature.mfcc(y=waveform, sr=params.sample_rate, n_mfcc=N_MFCC, **stft),
        librosa.feature.spectral_centroid(S=magnitude, sr=params.sample_rate, n_fft=params.n_fft),
        librosa.feature.spectral_contrast(S=magnitude, sr=params.sample_rate, n_fft=params.n_fft,
                                          n_bands=CONTRAST_BANDS, fmin=CONTRAST_FMIN)]).T


@functools.lru_cache(maxsize=4)
def _mfcc_filterbank(sample_rate: int, n_fft: int) -> np.ndarray:
    """librosa's default mel filters for MFCC (128 Slaney bands): float32 ``[128, 1 + n_fft // 2]``."""
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft)


def spectral_centroid(magnitude: np.ndarray, frequencies: np.ndarray) -> np.ndarray:
    """librosa's ``spectral_centroid``: the magnitude-weighted mean frequency of each frame.

    Args:
        magnitude: float ``[frames, bins]``, at least 0.
        frequencies: Hz ``[bins]``.

    Returns:
        float64 ``[frames]`` in Hz; 0 for a silent frame (as librosa, which
        leaves an all-zero frame unnormalised).
    """
    total = magnitude.sum(axis=1, dtype=np.float64)
    return (magnitude @ frequencies) / np.where(total < np.finfo(magnitude.dtype).tiny, 1.0, total)


def spectral_contrast(magnitude: np.ndarray, frequencies: np.ndarray, n_bands: int = CONTRAST_BANDS,
                      fmin: float = CONTRAST_FMIN, quantile: float = 0.02) -> np.ndarray:
    """librosa's ``spectral_contrast``: per octave band, peak minus valley in dB.

    Bands as librosa cuts them: below ``fmin``, then ``n_bands`` octaves from
    ``fmin``, the last one up to Nyquist. In each band the peak (valley) is the
    mean of the ``quantile`` largest (smallest) magnitudes, at least one bin:
    librosa's arithmetic, sorted along each frame's contiguous bins (and just
    the extremes where one bin is taken) instead of across frames.

    Args:
        magnitude: float ``[frames, bins]`` STFT magnitude.
        frequencies: Hz ``[bins]``.

    Returns:
        float64 ``[frames, n_bands + 1]``: ``power_to_db(peak) - power_to_db(valley)``
        (librosa's ``power_to_db``, its 80 dB floor below the clip's maximum included).
    """
    import librosa

    edges = np.concatenate([[0.0], fmin * 2.0 ** np.arange(n_bands + 1)])
    peaks, valleys = [], []
    for band, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        members = (frequencies >= low) & (frequencies <= high)
        inside = np.flatnonzero(members)
        if band > 0:
            members[inside[0] - 1] = True   # librosa also takes the bin just below
        if band == n_bands:
            members[inside[-1] + 1:] = True
        taken = max(int(np.rint(quantile * members.sum())), 1)
        columns = np.flatnonzero(members)
        if band < n_bands:
            columns = columns[:-1]          # ... and drops the band's top bin
        band_magnitude = magnitude[:, columns[0]:columns[-1] + 1]   # contiguous bins
        if taken == 1:   # the low octaves: few bins, so the extremes themselves
            valleys.append(band_magnitude.min(axis=1).astype(np.float64))
            peaks.append(band_magnitude.max(axis=1).astype(np.float64))
            continue
        ordered = np.sort(band_magnitude, axis=1)
        valleys.append(ordered[:, :taken].mean(axis=1, dtype=np.float64))
        peaks.append(ordered[:, -taken:].mean(axis=1, dtype=np.float64))
    return librosa.power_to_db(np.stack(peaks, axis=1)) - librosa.power_to_db(np.stack(valleys, axis=1))


def track_vector(path: str, waveform: np.ndarray | None = None,
                 waveform_rate: int | None = None) -> np.ndarray:
    """The baseline's clip vector of an audio file: float32 ``[56]``, frame means then standard deviations.

    Args:
        path: the file, decoded at :data:`BASELINE_FEATURE_PARAMS`' rate
            unless ``waveform`` already is that decode.
        waveform: the file already decoded (mono, :func:`~musicrec.models.audio_files.load_audio`)
            at ``waveform_rate`` Hz, or ``None``.

    Raises:
        musicrec.models.audio_files.AudioDecodeError: the file gives no audio.
    """
    from musicrec.models import audio_files

    params = BASELINE_FEATURE_PARAMS
    if waveform is None or waveform_rate != params.sample_rate:
        waveform = audio_files.load_audio(path, params)
    return clip_vector(frame_features_from_waveform(waveform, params)).astype(np.float32)


def mel_band_centres(params: AudioFeatureParams) -> np.ndarray:
    """Centre frequency of each mel band of the log-mel front end, Hz ``[n_mels]``."""
    import librosa

    fmax = params.fmax if params.fmax is not None else params.sample_rate / 2.0
    return librosa.mel_frequencies(n_mels=params.n_mels + 2, fmin=params.fmin, fmax=fmax)[1:-1]


def _mel_to_linear(params: AudioFeatureParams) -> np.ndarray:
    """``[1 + n_fft // 2, n_mels]``: linear interpolation from mel band centres to FFT bin frequencies.

    Beyond the first and last centre the nearest band's value holds.
    """
    import librosa

    centres = mel_band_centres(params)
    bins = librosa.fft_frequencies(sr=params.sample_rate, n_fft=params.n_fft)
    return np.stack([np.interp(bins, centres, column) for column in np.eye(params.n_mels)], axis=1)


def frame_features_from_log_mel(log_mel: np.ndarray, params: AudioFeatureParams) -> np.ndarray:
    """Frame features of raw log-mel frames, without the audio.

    MFCC: librosa's DCT of the mel power in dB (as ``librosa.feature.mfcc``
    does, on ``n_mels`` bands). Centroid: of the mel magnitude (square root
    of the mel power) at the mel band centre frequencies. Contrast:
    librosa's, on the mel magnitude interpolated linearly onto the STFT bin
    frequencies, so every octave band holds bins however few mel bands
    there are.

    Args:
        log_mel: float ``[frames, n_mels]``, compressed mel power
            (``params.compression``: ``log(mel_power + log_floor)`` or
            ``log10(1 + 10000 * mel_power)``).
        params: the parameters the log-mel was computed with.

    Returns:
        float32 ``[frames, 28]``, the columns of :func:`frame_features_from_waveform`.
    """
    import librosa

    power = decompress(log_mel, params).T
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(power), n_mfcc=N_MFCC)
    # With fewer mel bands than coefficients the DCT stops at n_mels: the rest are 0.
    mfcc = np.pad(mfcc, [(0, N_MFCC - mfcc.shape[0]), (0, 0)])
    magnitude = np.sqrt(power)
    centroid = librosa.feature.spectral_centroid(S=magnitude, freq=mel_band_centres(params))
    contrast = librosa.feature.spectral_contrast(S=_mel_to_linear(params) @ magnitude,
                                                 sr=params.sample_rate, n_fft=params.n_fft,
                                                 n_bands=CONTRAST_BANDS, fmin=CONTRAST_FMIN)
    return np.concatenate([mfcc, centroid, contrast], axis=0).T.astype(np.float32)


class ClipStatistics:
    """Per-clip mean and standard deviation of frame features, accumulated chunk by chunk."""

    def __init__(self) -> None:
        self._count: dict[str, int] = {}
        self._sum: dict[str, np.ndarray] = {}
        self._squares: dict[str, np.ndarray] = {}

    def add(self, clip_id: str, frame_features: np.ndarray) -> None:
        """Adds ``[frames, n_features]`` of ``clip_id``."""
        values = np.asarray(frame_features, dtype=np.float64)
        self._count[clip_id] = self._count.get(clip_id, 0) + values.shape[0]
        self._sum[clip_id] = self._sum.get(clip_id, 0.0) + values.sum(axis=0)
        self._squares[clip_id] = self._squares.get(clip_id, 0.0) + np.square(values).sum(axis=0)

    def clip_ids(self) -> list[str]:
        return sorted(self._count)

    def vector(self, clip_id: str) -> np.ndarray:
        """float64 ``[2 * n_features]``: the means, then the standard deviations."""
        count = self._count[clip_id]
        mean = self._sum[clip_id] / count
        variance = np.maximum(self._squares[clip_id] / count - np.square(mean), 0.0)
        return np.concatenate([mean, np.sqrt(variance)])


def clip_vector(frame_features: np.ndarray) -> np.ndarray:
    """``[frames, n_features]`` to ``[2 * n_features]``: mean over frames, then std."""
    return np.concatenate([frame_features.mean(axis=0), frame_features.std(axis=0)])


class ClassicalGenreBaseline:
    """Standardised multinomial logistic regression on clip feature vectors.

    Args:
        regularization: inverse L2 strength ``C`` of the logistic regression.
        seed: solver seed.
    """

    def __init__(self, regularization: float = 1.0, seed: int = 0) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(StandardScaler(), LogisticRegression(
            C=regularization, max_iter=5000, random_state=seed))

    def fit(self, features: np.ndarray, labels: Sequence[int]) -> "ClassicalGenreBaseline":
        """``features`` ``[n_clips, n_features]``, ``labels`` ``[n_clips]`` label ids.

        Raises:
            ValueError: fewer than two distinct labels.
        """
        if len(set(int(label) for label in labels)) < 2:
            raise ValueError("the classical baseline needs training clips of at least 2 genres")
        self.model.fit(np.asarray(features), np.asarray(labels))
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Label ids ``[n_clips]``."""
        return self.model.predict(np.asarray(features))


__all__ = ["ClassicalGenreBaseline", "ClipStatistics", "clip_vector", "track_vector",
           "librosa_frame_features", "spectral_centroid", "spectral_contrast",
           "BASELINE_FEATURE_PARAMS", "BASELINE_FEATURE",
           "frame_features_from_waveform", "frame_features_from_log_mel", "mel_band_centres",
           "N_MFCC", "FRAME_FEATURES", "CLIP_FEATURES"]
