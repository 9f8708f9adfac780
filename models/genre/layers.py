"""The genre classifiers' own Keras layers: padding masks, masked pooling, the spectral summary,
the ensemble's member stack, the clip head's probability blend and the in-graph label names.

A frame whose every mel band equals :data:`PADDING_VALUE` is padding (see
``model.py`` for why the mask is taken on the raw log-mel).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

# Value of every band of a padding frame, in raw log-mel units.
PADDING_VALUE = 0.0


class PaddingMask(keras.layers.Layer):
    """``[batch, frames, n_mels]`` raw log-mel to bool ``[batch, frames]``: False on padding frames."""

    def call(self, log_mel):
        return ops.any(ops.not_equal(log_mel, PADDING_VALUE), axis=-1)

    def compute_output_spec(self, log_mel):
        return keras.KerasTensor(log_mel.shape[:2], dtype="bool")


class ZeroPadding(keras.layers.Layer):
    """Sets the padding frames of ``x`` ``[batch, frames, ...]`` to 0, given the frame mask."""

    def call(self, x, frame_mask):
        keep = ops.cast(frame_mask, x.dtype)
        for _ in range(len(x.shape) - 2):
            keep = ops.expand_dims(keep, -1)
        return x * keep

    def compute_output_spec(self, x, frame_mask):
        return keras.KerasTensor(x.shape, dtype=x.dtype)


class MaskedMean(keras.layers.Layer):
    """Mean of ``x`` ``[batch, frames, units]`` over the unmasked frames: ``[batch, units]``.

    With ``with_std=True``, the standard deviation follows: ``[batch, 2 * units]``.
    A segment with no real frame gives zeros rather than NaN.
    """

    def __init__(self, with_std: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.with_std = with_std
        # The frame mask comes as an argument; a Keras mask on x (after an
        # LSTM over Masking) says the same, and nothing after pooling needs one.
        self.supports_masking = True

    def compute_mask(self, *args, **kwargs):
        return None

    def call(self, x, frame_mask):
        keep = ops.cast(frame_mask, x.dtype)[..., None]
        count = ops.maximum(ops.sum(keep, axis=1), 1.0)
        mean = ops.sum(x * keep, axis=1) / count
        if not self.with_std:
            return mean
        variance = ops.sum(ops.square(x - mean[:, None, :]) * keep, axis=1) / count
        # The epsilon keeps the gradient of sqrt finite where a band is constant.
        return ops.concatenate([mean, ops.sqrt(variance + 1e-6)], axis=-1)

    def compute_output_spec(self, x, frame_mask):
        width = x.shape[2] * (2 if self.with_std else 1) if x.shape[2] is not None else None
        return keras.KerasTensor((x.shape[0], width), dtype=x.dtype)

    def get_config(self):
        return {**super().get_config(), "with_std": self.with_std}


class ProbabilityBlend(keras.layers.Layer):
    """``(1 - share) * first + share * second``: two heads' probabilities ``[batch, classes]`` mixed."""

    def __init__(self, share: float, **kwargs):
        super().__init__(**kwargs)
        self.share = float(share)

    def call(self, first, second):
        return first * (1.0 - self.share) + second * self.share

    def compute_output_spec(self, first, second):
        return keras.KerasTensor(first.shape, dtype=first.dtype)

    def get_config(self):
        return {**super().get_config(), "share": self.share}


def dct_matrix(n_bands: int, n_coefficients: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix: ``x @ dct_matrix(n, k)`` gives ``x``'s first ``k`` coefficients.

    Returns:
        float32 ``[n_bands, n_coefficients]`` (scipy's ``dct(x, norm="ortho")``
        over the last axis, truncated).
    """
    bands = np.arange(n_bands)[:, None]
    orders = np.arange(n_coefficients)[None, :]
    matrix = np.sqrt(2.0 / n_bands) * np.cos(np.pi * (2 * bands + 1) * orders / (2 * n_bands))
    matrix[:, 0] /= np.sqrt(2.0)
    return matrix.astype(np.float32)


class SpectralSummary(keras.layers.Layer):
    """Frame descriptors in the spirit of MFCC and spectral contrast, from the log-mel.

    For each frame: the first ``n_coefficients`` DCT-II coefficients over the
    mel bands of the *normalised* log-mel (cepstral shape, as MFCC), then,
    for each of ``n_groups`` groups of adjacent mel bands of the *raw*
    log-mel, the peak minus the valley (max minus min over the group's
    bands: contrast, in natural-log units) and the valley. A fixed matrix
    product and max/min reductions: core ops only, nothing to learn.

    Call: ``(log_mel, normalized)``, both ``[batch, frames, n_mels]``;
    returns ``[batch, frames, n_coefficients + 2 * n_groups]``. Padding
    frames give meaningless values: pool with the frame mask.

    Args:
        n_mels: mel bands per frame.
        n_coefficients: DCT coefficients kept; at most ``n_mels``.
        n_groups: band groups (contiguous, sizes differing by at most one,
            as ``np.array_split``); at most ``n_mels // 2``; 0 for none.
    """

    def __init__(self, n_mels: int, n_coefficients: int, n_groups: int, **kwargs):
        super().__init__(**kwargs)
        if not 1 <= n_coefficients <= n_mels:
            raise ValueError(f"summary_coefficients must be in [1, {n_mels}] for {n_mels} mel "
                             f"bands, got {n_coefficients}")
        if not 0 <= n_groups <= n_mels // 2:
            raise ValueError(f"summary_band_groups must be in [1, {n_mels // 2}] for {n_mels} "
                             f"mel bands (two bands or more per group), got {n_groups}")
        self.n_mels, self.n_coefficients, self.n_groups = n_mels, n_coefficients, n_groups
        self._dct = dct_matrix(n_mels, n_coefficients)
        self._edges = ([int(part[0]) for part in np.array_split(np.arange(n_mels), n_groups)]
                       + [n_mels]) if n_groups else [0]

    def call(self, log_mel, normalized):
        descriptors = [ops.matmul(normalized, ops.convert_to_tensor(self._dct))]
        for start, stop in zip(self._edges[:-1], self._edges[1:]):
            group = log_mel[..., start:stop]
            valley = ops.min(group, axis=-1, keepdims=True)
            descriptors += [ops.max(group, axis=-1, keepdims=True) - valley, valley]
        return ops.concatenate(descriptors, axis=-1)

    def compute_output_spec(self, log_mel, normalized):
        return keras.KerasTensor((*log_mel.shape[:2], self.n_coefficients + 2 * self.n_groups),
                                 dtype=log_mel.dtype)

    def get_config(self):
        return {**super().get_config(), "n_mels": self.n_mels,
                "n_coefficients": self.n_coefficients, "n_groups": self.n_groups}



class MemberStack(keras.layers.Layer):
    """Stacks the members' probabilities, each ``[batch, n_classes]``: ``[batch, members, n_classes]``."""

    def call(self, member_probabilities):
        return ops.stack(member_probabilities, axis=1)

    def compute_output_spec(self, member_probabilities):
        first = member_probabilities[0]
        return keras.KerasTensor((first.shape[0], len(member_probabilities), first.shape[1]),
                                 dtype=first.dtype)



class LabelNames(keras.layers.Layer):
    """Turns class probabilities into label names, inside the graph.

    The names are a constant string tensor and the lookup is ``tf.gather``,
    so the exported graph needs core TensorFlow ops only.

    Call returns a dict: ``classes`` string ``[batch, n_classes]`` (every
    label name, the same row for each example, as TF Serving classification
    heads return them) and ``genre`` string ``[batch]`` (the most probable
    label).
    """

    def __init__(self, labels: list[str], **kwargs):
        super().__init__(**kwargs)
        if not labels:
            raise ValueError("LabelNames needs at least one label")
        self.labels = list(labels)

    def call(self, probabilities):
        import tensorflow as tf  # string tensors have no keras.ops equivalent

        names = tf.constant(self.labels, dtype=tf.string)
        batch = tf.shape(probabilities)[0]
        classes = tf.broadcast_to(names[tf.newaxis, :], [batch, len(self.labels)])
        genre = tf.gather(names, tf.argmax(probabilities, axis=-1))
        return {"classes": classes, "genre": genre}

    def compute_output_spec(self, probabilities):
        batch = probabilities.shape[0]
        return {
            "classes": keras.KerasTensor((batch, len(self.labels)), dtype="string"),
            "genre": keras.KerasTensor((batch,), dtype="string"),
        }

    def get_config(self):
        return {**super().get_config(), "labels": self.labels}

