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
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

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


__all__ = ["spec_augment"]
