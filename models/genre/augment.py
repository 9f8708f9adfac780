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
labels, batch-wise, also in ``tf.data`` only; so does the random gain
(:func:`random_gain`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from musicrec.models.genre.model import PADDING_VALUE

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


__all__ = ["spec_augment", "random_gain", "chain", "mixup"]
