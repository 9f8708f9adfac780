"""SpecAugment for the genre training input (tf.data only, never the serving graph).

Time and frequency masks come from tensorflow-io (``tfio.audio.time_mask``
and ``tfio.audio.freq_mask``), whose ops live in the ``IO>`` namespace in
part and are missing from TF Serving; so augmentation happens in the
``tf.data`` pipeline that feeds ``model.fit`` and nowhere in the model.

tensorflow-io's masks write ``0``. On raw log-mel, ``0`` is a loud frame
(mel power 1), and a frame of all ``0`` is :data:`PADDING_VALUE`, which the
model would mask away. So the masks are applied to the log-mel minus each
band's training mean and the mean added back: a masked cell becomes its
band's mean, which the model's normalisation maps to ``0``, SpecAugment's
intent.

Mixup (:func:`mixup`) blends whole training segments and their one-hot
labels, batch-wise, also in ``tf.data`` only; so do the random gain
(:func:`random_gain`), the pitch-shift approximation (:func:`random_band_shift`)
and the time-stretch approximation (:func:`random_tempo`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from musicrec.models.genre.layers import PADDING_VALUE

Example = tuple[tf.Tensor, tf.Tensor]


def spec_augment(time_mask_frames: int, freq_mask_bands: int,
                 band_means: np.ndarray) -> Callable[[tf.Tensor, tf.Tensor], Example] | None:
    """A ``(log_mel, label) -> (log_mel, label)`` map for one unbatched segment, or ``None``.

    Args:
        time_mask_frames: one mask of ``[0, time_mask_frames)`` consecutive
            frames per segment, at a random place (0: no time mask).
        freq_mask_bands: one mask of ``[0, freq_mask_bands)`` adjacent mel
            bands per segment (0: no frequency mask).
        band_means: float ``[n_mels]``, the raw log-mel mean of each band
            (the model's ``Normalization`` mean): the value masked cells get.

    Returns:
        The map for ``tf.data.Dataset.map`` (``log_mel`` float32 ``[frames,
        n_mels]``), or ``None`` when both sizes are 0.
    """
    if time_mask_frames <= 0 and freq_mask_bands <= 0:
        return None
    import tensorflow_io as tfio  # heavy, and needed only when training augments

    fill = tf.constant(np.asarray(band_means, dtype=np.float32).reshape(1, -1))

    def augment(log_mel: tf.Tensor, label: tf.Tensor) -> Example:
        centred = log_mel - fill
        if time_mask_frames > 0:
            centred = tfio.audio.time_mask(centred, param=time_mask_frames)
        if freq_mask_bands > 0:
            centred = tfio.audio.freq_mask(centred, param=freq_mask_bands)
        return centred + fill, label

    return augment


def random_gain(max_db: float, seed: int | None = None
                ) -> Callable[[tf.Tensor, tf.Tensor], Example] | None:
    """A ``(log_mel, label) -> (log_mel, label)`` map that changes one segment's level, or ``None``.

    The segment's power is multiplied by ``10 ** (g / 10)`` with ``g`` drawn
    uniformly from ``[-max_db, max_db]`` decibels per segment: on the raw
    (natural-log) log-mel that is the constant ``g * ln(10) / 10`` added to
    every cell. Meant for unbatched segments before padding (as
    :func:`musicrec.models.genre.data.make_dataset` applies ``augment``),
    so every frame it shifts is real; a shift never makes a real frame all
    :data:`PADDING_VALUE` in practice (every band would have to land on
    exactly ``0.0``).

    Args:
        max_db: the largest gain, in decibels of power, >= 0 (0: off).
        seed: for the draws (via the global seed if ``None``).

    Returns:
        The map for ``tf.data.Dataset.map`` (``log_mel`` float32 ``[frames,
        n_mels]``), or ``None`` when ``max_db`` is 0.
    """
    if max_db <= 0:
        return None
    max_log = float(max_db) * np.log(10.0) / 10.0

    def shift(log_mel: tf.Tensor, label: tf.Tensor) -> Example:
        gain = tf.random.uniform([], -max_log, max_log, dtype=log_mel.dtype, seed=seed)
        return log_mel + gain, label

    return shift


def shift_bands(log_mel: tf.Tensor, bands: tf.Tensor | int) -> tf.Tensor:
    """``log_mel`` with its mel axis shifted by ``bands``; vacated bands repeat the nearest edge band.

    Args:
        log_mel: float ``[frames, n_mels]``.
        bands: integer shift in mel bands; positive moves band ``b`` to
            ``b + bands`` (up in pitch), negative down. Bands shifted past
            the top or bottom are dropped (no wrap-around).

    Returns:
        float ``[frames, n_mels]``, same dtype.
    """
    n_mels = tf.shape(log_mel)[-1]
    # Output band j reads input band j - bands, clipped: the vacated side gets the edge band.
    source = tf.clip_by_value(tf.range(n_mels) - tf.cast(bands, tf.int32), 0, n_mels - 1)
    return tf.gather(log_mel, source, axis=-1)


def random_band_shift(max_bands: int, seed: int | None = None
                      ) -> Callable[[tf.Tensor, tf.Tensor], Example] | None:
    """A ``(log_mel, label) -> (log_mel, label)`` map that shifts one segment's pitch, or ``None``.

    An approximation of a pitch shift on the mel scale: the whole segment
    moves by ``k`` mel bands (:func:`shift_bands`), ``k`` an integer drawn
    uniformly from ``[-max_bands, max_bands]`` per segment. Meant for
    unbatched raw segments before padding, as :func:`random_gain`.

    Args:
        max_bands: the largest shift, in mel bands, >= 0 (0: off). Two of
            64 bands is roughly a small pitch change (a few semitones in
            the mid range).
        seed: for the draws (via the global seed if ``None``).

    Returns:
        The map for ``tf.data.Dataset.map`` (``log_mel`` float32 ``[frames,
        n_mels]``, shape kept), or ``None`` when ``max_bands`` is 0.
    """
    if max_bands <= 0:
        return None
    limit = int(max_bands)

    def shift(log_mel: tf.Tensor, label: tf.Tensor) -> Example:
        bands = tf.random.uniform([], -limit, limit + 1, dtype=tf.int32, seed=seed)
        return shift_bands(log_mel, bands), label

    return shift


def stretch_frames(log_mel: tf.Tensor, rate: tf.Tensor | float) -> tf.Tensor:
    """``log_mel`` resampled along time by ``rate``, then cut or edge-padded to its frame count.

    Args:
        log_mel: float ``[frames, n_mels]``.
        rate: the resampling factor, > 0: the content is stretched to
            ``round(frames * rate)`` frames by bilinear interpolation over
            frames (bands untouched); above 1 slows the music down, below 1
            speeds it up. The first ``frames`` frames are kept, and a shorter
            result is padded by repeating its last frame.

    Returns:
        float ``[frames, n_mels]``, same dtype; ``rate == 1`` returns the
        input's values.
    """
    frames = tf.shape(log_mel)[0]
    n_mels = tf.shape(log_mel)[1]
    stretched_frames = tf.maximum(
        1, tf.cast(tf.round(tf.cast(frames, tf.float32) * tf.cast(rate, tf.float32)), tf.int32))
    stretched = tf.image.resize(log_mel[:, :, tf.newaxis], tf.stack([stretched_frames, n_mels]),
                                method="bilinear")[:, :, 0]
    # One gather both crops and edge-pads: frames past the stretched end read its last frame.
    source = tf.minimum(tf.range(frames), stretched_frames - 1)
    return tf.cast(tf.gather(stretched, source, axis=0), log_mel.dtype)


def random_tempo(max_fraction: float, seed: int | None = None
                 ) -> Callable[[tf.Tensor, tf.Tensor], Example] | None:
    """A ``(log_mel, label) -> (log_mel, label)`` map that changes one segment's tempo, or ``None``.

    An approximation of a time stretch: the frame axis is resampled by a
    factor ``r`` drawn uniformly from ``[1 - max_fraction, 1 + max_fraction]``
    per segment, and brought back to the segment's frame count
    (:func:`stretch_frames`), so shapes do not change. Meant for unbatched
    raw segments before padding, as :func:`random_gain`.

    Args:
        max_fraction: the largest relative tempo change, in ``[0, 1)``
            (0: off; 0.1 is +-10 %).
        seed: for the draws (via the global seed if ``None``).

    Returns:
        The map for ``tf.data.Dataset.map`` (``log_mel`` float32 ``[frames,
        n_mels]``, shape kept), or ``None`` when ``max_fraction`` is 0.

    Raises:
        ValueError: ``max_fraction`` is 1 or more (the segment could vanish).
    """
    if max_fraction <= 0:
        return None
    if max_fraction >= 1:
        raise ValueError(f"random_tempo: max_fraction must be in [0, 1), got {max_fraction}")
    low, high = 1.0 - float(max_fraction), 1.0 + float(max_fraction)

    def stretch(log_mel: tf.Tensor, label: tf.Tensor) -> Example:
        rate = tf.random.uniform([], low, high, dtype=tf.float32, seed=seed)
        return stretch_frames(log_mel, rate), label

    return stretch


def chain(*maps: Callable[[tf.Tensor, tf.Tensor], Example] | None
          ) -> Callable[[tf.Tensor, tf.Tensor], Example] | None:
    """One ``(log_mel, label)`` map applying ``maps`` in order, skipping ``None``; ``None`` if all are."""
    present = [step for step in maps if step is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]

    def apply(log_mel: tf.Tensor, label: tf.Tensor) -> Example:
        for step in present:
            log_mel, label = step(log_mel, label)
        return log_mel, label

    return apply


def mixup(alpha: float, n_classes: int, seed: int | None = None
          ) -> Callable[[tf.Tensor, tf.Tensor], Example] | None:
    """A batched ``(log_mel, labels) -> (mixed log_mel, soft targets)`` map, or ``None``.

    Each segment of a (shuffled) batch is blended with the segment at the
    mirrored place of the same batch (``tf.reverse``: mostly another clip,
    often another genre), ``lam * own + (1 - lam) * partner`` for the log-mel
    and for the one-hot labels, with ``lam`` drawn per segment from
    ``Beta(alpha, alpha)`` and folded to ``max(lam, 1 - lam)`` so that every
    segment stays mostly itself. Blending the log-mel (not the power) is
    what audio mixup usually does; it only has to regularise. Padding stays
    padding: a frame is blended only where both segments have a real frame;
    where only the partner is padding the own frame is kept, and where the
    own segment is padding the frame stays :data:`PADDING_VALUE` (0), so the
    model's mask sees the own segment's length.

    Args:
        alpha: the Beta distribution's both parameters, > 0 (0: no mixup).
            Small values (0.2-0.4) blend little, 1 blends uniformly.
        n_classes: width of the one-hot targets.
        seed: for the Beta draws (via the global seed if ``None``).

    Returns:
        The map for a batched ``tf.data.Dataset`` of ``log_mel`` float32
        ``[batch, frames, n_mels]`` and integer labels ``[batch]``; it
        returns targets float32 ``[batch, n_classes]``. ``None`` when
        ``alpha`` is 0.
    """
    if alpha <= 0:
        return None

    def blend(log_mel: tf.Tensor, labels: tf.Tensor) -> Example:
        targets = tf.one_hot(tf.cast(labels, tf.int32), n_classes, dtype=tf.float32)
        batch = tf.shape(log_mel)[0]
        # Beta(a, a) as the ratio of two Gamma(a) draws.
        first = tf.random.gamma([batch], alpha, seed=seed)
        second = tf.random.gamma([batch], alpha, seed=None if seed is None else seed + 1)
        lam = first / tf.maximum(first + second, 1e-12)
        lam = tf.maximum(lam, 1.0 - lam)
        partner, partner_targets = tf.reverse(log_mel, [0]), tf.reverse(targets, [0])
        own_real = tf.reduce_any(tf.not_equal(log_mel, PADDING_VALUE), axis=-1, keepdims=True)
        partner_real = tf.reduce_any(tf.not_equal(partner, PADDING_VALUE), axis=-1, keepdims=True)
        frame_lam = lam[:, None, None]
        blended = frame_lam * log_mel + (1.0 - frame_lam) * partner
        mixed = tf.where(own_real & partner_real, blended, log_mel)
        return mixed, lam[:, None] * targets + (1.0 - lam[:, None]) * partner_targets

    return blend


__all__ = ["spec_augment", "random_gain", "shift_bands", "random_band_shift", "stretch_frames",
           "random_tempo", "chain", "mixup"]
