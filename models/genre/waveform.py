"""The log-mel front end inside the TensorFlow graph, for the ``from_waveform`` signature.

:func:`graph_log_mel` reproduces :func:`musicrec.models.features.log_mel`
(the Beam path) with core ``tf.signal`` ops: ``center`` framing, periodic
Hann window, power 2, librosa's Slaney mel filters (a constant matrix from
:func:`musicrec.models.features.mel_filterbank`) and the compression of
``params.compression``. Every number comes from
:class:`~musicrec.models.features.AudioFeatureParams`. The two agree to
within :data:`SKEW_TOLERANCE` (float32 FFTs differ in rounding only); a test
holds them to it.

``from_waveform`` takes :data:`WAVEFORM_SAMPLE_RATE` audio whatever rate the
model's features use; :func:`graph_resample` converts it in-graph (a
polyphase windowed-sinc filter, one matrix product per block of input
samples), where the Beam path resamples with soxr. That costs a small,
measured skew, almost all of it in the top mel band (see the constants below).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf

from musicrec.models.features import LOG10_1P_GAIN, AudioFeatureParams, mel_filterbank
from musicrec.models.genre.frontends import WAVEFORM_SAMPLE_RATE
from musicrec.models.genre.layers import PADDING_VALUE

# Largest absolute difference allowed between librosa's and the graph's
# log-mel, in natural-log units (1e-3 is a 0.1 % power ratio). Measured: at
# most 4e-4 on a pure tone, 2e-5 on real GTZAN clips, 1e-6 on noise; the
# largest differences sit in bins near the log floor (log-mel about -13),
# where float32 rounding of a mel power of ~1e-7 shows.
SKEW_TOLERANCE = 1e-3
# Mean absolute difference allowed over a whole clip (measured: 1e-5 at most).
SKEW_MEAN_TOLERANCE = 1e-4

# The in-graph resampler: a Kaiser-windowed sinc with this many zero crossings either side
# and this cutoff, as a fraction of the lower Nyquist frequency. Chosen to be closest to
# soxr's HQ response (what ingestion uses) on GTZAN clips resampled to 16 kHz: the musicnn
# log-mel then differs by 0.001 on average (log10 units), by at most 0.0025 below the top
# mel band and 0.18 in it (7.7 to 8 kHz, where the two filters' transition bands differ).
RESAMPLER_ZERO_CROSSINGS = 48
RESAMPLER_ROLLOFF = 0.955
RESAMPLER_KAISER_BETA = 8.6


@functools.lru_cache(maxsize=8)
def resampling_matrix(from_rate: int, to_rate: int) -> tuple[np.ndarray, int, int, int]:
    """The polyphase filter of :func:`graph_resample` as one matrix.

    With ``up / down`` the reduced ratio ``to_rate / from_rate``, output
    sample ``up * m + p`` sits at input time ``m * down + p * down / up``; it
    is the dot product of the input window starting at ``m * down - (taps -
    1)`` with column ``p`` of the matrix.

    Returns:
        ``(matrix float32 [down + 2 * taps - 1, up], up, down, taps)``, where
        ``taps`` is the filter's half-width in input samples.
    """
    divisor = math.gcd(from_rate, to_rate)
    up, down = to_rate // divisor, from_rate // divisor
    cutoff = RESAMPLER_ROLLOFF * min(1.0, up / down)     # cycles per input sample * 2
    taps = int(math.ceil(RESAMPLER_ZERO_CROSSINGS / cutoff))
    matrix = np.zeros((down + 2 * taps - 1, up), dtype=np.float64)
    for phase in range(up):
        start, fraction = divmod(phase * down, up)
        offsets = np.arange(-taps + 1, taps + 1)           # input samples around the output time
        distance = fraction / up - offsets                  # output time minus input time
        window = np.kaiser(2 * taps + 1, RESAMPLER_KAISER_BETA)
        # The Kaiser window evaluated at the (fractional) distance, by interpolation.
        weights = np.interp(distance, np.arange(-taps, taps + 1), window)
        matrix[start + offsets + taps - 1, phase] = cutoff * np.sinc(cutoff * distance) * weights
    return matrix.astype(np.float32), up, down, taps


def graph_resample(waveform: tf.Tensor, from_rate: int, to_rate: int) -> tf.Tensor:
    """Resamples ``[batch, samples]`` from ``from_rate`` to ``to_rate`` Hz, in-graph (core ops).

    Returns:
        float32 ``[batch, round(samples * to_rate / from_rate)]`` (soxr's
        length); the waveform itself when the rates are equal. Zeros are
        assumed beyond both ends.
    """
    if from_rate == to_rate:
        return waveform
    matrix, up, down, taps = resampling_matrix(from_rate, to_rate)
    samples = tf.shape(waveform)[1]
    outputs = (samples * up + down // 2) // down
    blocks = (outputs + up - 1) // up
    # Left: the window of block 0 starts taps - 1 samples before the signal. Right: enough
    # zeros for the last block's window.
    right = blocks * down + taps - samples
    padded = tf.pad(waveform, [[0, 0], [taps - 1, tf.maximum(right, 0)]])
    windows = tf.signal.frame(padded, frame_length=matrix.shape[0], frame_step=down, axis=1)
    resampled = tf.tensordot(windows[:, :blocks], tf.constant(matrix), axes=1)   # [batch, blocks, up]
    return tf.reshape(resampled, [tf.shape(waveform)[0], blocks * up])[:, :outputs]


def graph_log_mel(waveform: tf.Tensor, params: AudioFeatureParams) -> tf.Tensor:
    """Log-mel of a batch of waveforms, in-graph.

    Args:
        waveform: float32 ``[batch, samples]`` at ``params.sample_rate``.
        params: the feature parameters.

    Returns:
        float32 ``[batch, params.frame_count(samples), n_mels]``, as
        :func:`musicrec.models.features.log_mel` computes per row.
    """
    if params.center:
        half = params.n_fft // 2
        waveform = tf.pad(waveform, [[0, 0], [half, half]])
    stft = tf.signal.stft(waveform, frame_length=params.n_fft, frame_step=params.hop_length,
                          fft_length=params.n_fft, window_fn=tf.signal.hann_window, pad_end=False)
    power = tf.math.square(tf.math.real(stft)) + tf.math.square(tf.math.imag(stft))
    filters = tf.constant(mel_filterbank(params), dtype=tf.float32)
    mel_power = tf.tensordot(power, filters, axes=1)
    if params.compression == "log10_1p":
        return tf.math.log(1.0 + LOG10_1P_GAIN * mel_power) / math.log(10.0)
    return tf.math.log(mel_power + params.log_floor)


def graph_segments(log_mel: tf.Tensor, params: AudioFeatureParams) -> tf.Tensor:
    """Cuts ``[batch, frames, n_mels]`` into ``[batch, n_segments, frames_per_segment, n_mels]``.

    The same windows as :func:`musicrec.models.features.segment` (a trailing
    partial segment is dropped), except that a clip shorter than one segment
    gives one segment padded with :data:`PADDING_VALUE` frames, which the
    log-mel classifiers mask, instead of none.
    """
    length, hop = params.frames_per_segment, params.segment_hop_frames
    missing = tf.maximum(0, length - tf.shape(log_mel)[1])
    padded = tf.pad(log_mel, [[0, 0], [0, missing], [0, 0]], constant_values=PADDING_VALUE)
    return tf.signal.frame(padded, frame_length=length, frame_step=hop, pad_end=False, axis=1)


__all__ = ["graph_log_mel", "graph_segments", "graph_resample", "resampling_matrix",
           "WAVEFORM_SAMPLE_RATE", "SKEW_TOLERANCE", "SKEW_MEAN_TOLERANCE"]
