"""The classical genre baseline: MFCC, spectral centroid and contrast statistics, logistic regression.

Per frame: 20 MFCCs, the spectral centroid (Hz) and the 7 spectral-contrast
values (6 octave bands from 200 Hz and the rest), 28 values. Per clip: their
mean and standard deviation over the clip's frames, 56 values. A
scikit-learn pipeline standardises them (``StandardScaler``) and fits a
multinomial ``LogisticRegression``.

Two front ends give the frame features:

- :func:`frame_features_from_waveform`: librosa on the audio, the textbook
  recipe (STFT magnitude for centroid and contrast, 128-band mel for MFCC);
  the GTZAN benchmark uses it.
- :func:`frame_features_from_log_mel`: the same quantities from the
  pipeline's log-mel segments (mel power in place of the STFT power, the
  mel band centre frequencies in place of the FFT bins). The evaluator uses it: the
  ``AudioExamples`` artifact holds log-mel segments and track ids but not the
  source audio paths, and the audio may have moved or gone since ingestion,
  while the segments are exactly the split the Keras model is scored on.

Clip statistics are exact whichever order a clip's frames come in, so the
evaluator streams segments (:class:`ClipStatistics`) instead of holding
every track in memory.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from musicrec.models.features import AudioFeatureParams, decompress

N_MFCC = 20
CONTRAST_BANDS = 6
CONTRAST_FMIN = 200.0
FRAME_FEATURES = N_MFCC + 1 + CONTRAST_BANDS + 1
CLIP_FEATURES = 2 * FRAME_FEATURES


def frame_features_from_waveform(waveform: np.ndarray, params: AudioFeatureParams) -> np.ndarray:
    """Frame features of a mono waveform with librosa.

    Args:
        waveform: float ``[samples]`` at ``params.sample_rate``.
        params: STFT size and hop (``n_fft``, ``hop_length``, ``center=False`` as for the log-mel).

    Returns:
        float32 ``[frames, 28]``: MFCC 1-20, centroid in Hz, contrast in dB (7 bands).
    """
    import librosa

    y = np.asarray(waveform, dtype=np.float32)
    stft = dict(n_fft=params.n_fft, hop_length=params.hop_length, center=False)
    magnitude = np.abs(librosa.stft(y, **stft))
    mfcc = librosa.feature.mfcc(y=y, sr=params.sample_rate, n_mfcc=N_MFCC, **stft)
    centroid = librosa.feature.spectral_centroid(S=magnitude, sr=params.sample_rate,
                                                 n_fft=params.n_fft)
    contrast = librosa.feature.spectral_contrast(S=magnitude, sr=params.sample_rate,
                                                 n_fft=params.n_fft, n_bands=CONTRAST_BANDS,
                                                 fmin=CONTRAST_FMIN)
    return np.concatenate([mfcc, centroid, contrast], axis=0).T.astype(np.float32)


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


__all__ = ["ClassicalGenreBaseline", "ClipStatistics", "clip_vector",
           "frame_features_from_waveform", "frame_features_from_log_mel", "mel_band_centres",
           "N_MFCC", "FRAME_FEATURES", "CLIP_FEATURES"]
