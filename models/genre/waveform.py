"""The log-mel front end inside the TensorFlow graph, for the ``from_waveform`` signature.

:func:`graph_log_mel` reproduces :func:`musicrec.models.features.log_mel`
(librosa, the Beam path) with core ``tf.signal`` ops: ``center=False``
framing, periodic Hann window, power 2, librosa's Slaney mel filters (a
constant matrix from :func:`musicrec.models.features.mel_filterbank`) and
``log(mel_power + log_floor)``. Every number comes from
:class:`~musicrec.models.features.AudioFeatureParams`. The two agree to
within :data:`SKEW_TOLERANCE` (float32 FFTs differ in rounding only); a test
holds them to it.
"""
from __future__ import annotations

import tensorflow as tf

from musicrec.models.features import AudioFeatureParams, mel_filterbank
from musicrec.models.genre.model import PADDING_VALUE

# Largest absolute difference allowed between librosa's and the graph's
# log-mel, in natural-log units (1e-3 is a 0.1 % power ratio). Measured: at
# most 4e-4 on a pure tone, 2e-5 on real GTZAN clips, 1e-6 on noise; the
# largest differences sit in bins near the log floor (log-mel about -13),
# where float32 rounding of a mel power of ~1e-7 shows.
SKEW_TOLERANCE = 1e-3
# Mean absolute difference allowed over a whole clip (measured: 1e-5 at most).
SKEW_MEAN_TOLERANCE = 1e-4


def graph_log_mel(waveform: tf.Tensor, params: AudioFeatureParams) -> tf.Tensor:
    """Log-mel of a batch of waveforms, in-graph.

    Args:
        waveform: float32 ``[batch, samples]`` at ``params.sample_rate``.
        params: the feature parameters.

    Returns:
        float32 ``[batch, frames, n_mels]`` with ``frames = 1 + (samples -
        n_fft) // hop_length`` (0 when shorter than one window), as
        :func:`musicrec.models.features.log_mel` computes per row.
    """
    stft = tf.signal.stft(waveform, frame_length=params.n_fft, frame_step=params.hop_length,
                          fft_length=params.n_fft, window_fn=tf.signal.hann_window, pad_end=False)
    power = tf.math.square(tf.math.real(stft)) + tf.math.square(tf.math.imag(stft))
    filters = tf.constant(mel_filterbank(params), dtype=tf.float32)
    mel_power = tf.tensordot(power, filters, axes=1)
    return tf.math.log(mel_power + params.log_floor)


def graph_segments(log_mel: tf.Tensor, params: AudioFeatureParams) -> tf.Tensor:
    """Cuts ``[batch, frames, n_mels]`` into ``[batch, n_segments, frames_per_segment, n_mels]``.

    The same windows as :func:`musicrec.models.features.segment` (a trailing
    partial segment is dropped), except that a clip shorter than one segment
    gives one segment padded with :data:`PADDING_VALUE` frames, which the
    classifier masks, instead of none.
    """
    length, hop = params.frames_per_segment, params.segment_hop_frames
    missing = tf.maximum(0, length - tf.shape(log_mel)[1])
    padded = tf.pad(log_mel, [[0, 0], [0, missing], [0, 0]], constant_values=PADDING_VALUE)
    return tf.signal.frame(padded, frame_length=length, frame_step=hop, pad_end=False, axis=1)


__all__ = ["graph_log_mel", "graph_segments", "SKEW_TOLERANCE", "SKEW_MEAN_TOLERANCE"]
