"""A linear probe on the clip statistics: the seed-free half of the pretrained clip head's answer.

A multinomial logistic regression (L2, L-BFGS, :data:`LINEAR_PROBE_C`) on the
standardised mean and standard deviation of a clip's musicnn patch
embeddings: the classic transfer-learning probe. Its optimum is unique, so it
answers the same whatever the seed; the recurrent head trained by SGD on a few
dozen clips does not (its accuracy moved by two clips in twenty between seeds on
GTZAN's tuning folds). :func:`musicrec.models.genre.pretrained.build_clip_head`
averages the two heads' probabilities (``linear_share``).
"""
from __future__ import annotations

import numpy as np

# Inverse L2 strength: scikit-learn's default, the recipe (not tuned).
LINEAR_PROBE_C = 1.0
MAX_ITERATIONS = 5000
# A genre with no training clip gets this far below the lowest logit: probability ~0.
ABSENT_CLASS_MARGIN = 30.0


def fit_linear_probe(statistics: np.ndarray, labels: np.ndarray, n_classes: int,
                     class_weighted: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Fits the probe and returns it as a dense layer's weights.

    Args:
        statistics: float ``[clips, width]``, the clips' standardised statistics
            (what the head's ``statistics_normalization`` outputs).
        labels: int ``[clips]``, genre ids in ``[0, n_classes)``.
        n_classes: genres the head answers (some may have no training clip).
        class_weighted: weight clips by ``n / (present_classes * n_c)``, as the
            head's ``class_weights`` does.

    Returns:
        ``(kernel float32 [width, n_classes], bias float32 [n_classes])``: the
        logits are ``statistics @ kernel + bias``, whose softmax is the probe's
        probabilities.
    """
    from sklearn.linear_model import LogisticRegression

    statistics = np.asarray(statistics, dtype=np.float64)
    labels = np.asarray(labels)
    present = np.unique(labels)
    kernel = np.zeros((statistics.shape[1], n_classes))
    bias = np.zeros(n_classes)
    if len(present) > 1:
        model = LogisticRegression(C=LINEAR_PROBE_C, max_iter=MAX_ITERATIONS,
                                   class_weight="balanced" if class_weighted else None)
        model.fit(statistics, labels)
        if len(present) == 2:
            # scikit-learn keeps one logit for two classes: the second's, against 0 for the first.
            kernel[:, present[1]], bias[present[1]] = model.coef_[0], model.intercept_[0]
        else:
            kernel[:, present], bias[present] = model.coef_.T, model.intercept_
    absent = np.setdiff1d(np.arange(n_classes), present)
    bias[absent] = bias[present].min() - ABSENT_CLASS_MARGIN
    return kernel.astype(np.float32), bias.astype(np.float32)


__all__ = ["fit_linear_probe", "LINEAR_PROBE_C"]
