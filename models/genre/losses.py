"""The genre classifier's loss and accuracy (integer labels or mixup's soft targets) and class weights."""
from __future__ import annotations

from typing import Mapping

import keras
from keras import ops


def _targets(y_true, n_classes: int):
    """Integer labels ``[batch]`` / ``[batch, 1]`` as one-hot; soft targets ``[batch, n_classes]`` as they are."""
    if len(y_true.shape) == 2 and y_true.shape[-1] == n_classes and n_classes > 1:
        return ops.cast(y_true, "float32")
    return ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), n_classes)


class GenreCrossentropy(keras.losses.Loss):
    """Cross-entropy of probabilities against integer labels or soft targets, with label smoothing.

    ``y_true``: integer labels ``[batch]`` (or ``[batch, 1]``), or targets
    float ``[batch, n_classes]`` (mixup's blends, :func:`~musicrec.models.
    genre.augment.mixup`); ``y_pred``: probabilities ``[batch, n_classes]``,
    or an ensemble's ``[batch, members, n_classes]`` (the loss is then the
    mean over the members of each one's loss). The target becomes ``(1 - smoothing) * target + smoothing / n_classes``
    (Keras' sparse cross-entropy has no label smoothing).
    """

    def __init__(self, smoothing: float = 0.0, name: str = "genre_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, y_true, y_pred):
        n_classes = y_pred.shape[-1]
        target = _targets(y_true, n_classes) * (1.0 - self.smoothing) + self.smoothing / n_classes
        if len(y_pred.shape) == 3:
            # An ensemble's [batch, members, n_classes]: the mean of the members' own losses.
            target = ops.broadcast_to(target[:, None, :], ops.shape(y_pred))
            return ops.mean(keras.losses.categorical_crossentropy(target, y_pred), axis=1)
        return keras.losses.categorical_crossentropy(target, y_pred)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


def genre_accuracy(y_true, y_pred):
    """Per segment, 1.0 where the most probable genre is the label (or the soft target's largest)."""
    n_classes = y_pred.shape[-1]
    if len(y_pred.shape) == 3:
        y_pred = ops.mean(y_pred, axis=1)  # an ensemble's members: their mean decides
    return ops.cast(ops.equal(ops.argmax(_targets(y_true, n_classes), axis=-1),
                              ops.argmax(y_pred, axis=-1)), "float32")


def balanced_class_weights(counts: Mapping[int, int], n_classes: int) -> dict[int, float]:
    """``n / (n_classes * count_c)`` per class present (scikit-learn's ``"balanced"``).

    Args:
        counts: training segments per label id.
        n_classes: number of labels; absent labels get weight 1.

    Returns:
        ``{label_id: weight}`` for every label id in ``range(n_classes)``.
    """
    total = sum(counts.values())
    present = sum(1 for count in counts.values() if count)
    return {label: (total / (present * counts[label]) if counts.get(label) else 1.0)
            for label in range(n_classes)}

