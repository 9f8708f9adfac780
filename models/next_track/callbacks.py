"""Keras callbacks of next-track training: the epoch log and the whole-catalogue validation ranking."""
from __future__ import annotations

import logging
import time

import keras
import numpy as np
import tensorflow as tf

from musicrec.models.next_track import data

logger = logging.getLogger(__name__)

PROGRESS_SECONDS = 30.0


class EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics and records its wall time (seconds) in ``epoch_seconds``.

    Within an epoch it logs the step and the running loss every ``progress_seconds``,
    so a long epoch shows it is moving.
    """

    def __init__(self, steps_per_epoch: int = 0, progress_seconds: float = PROGRESS_SECONDS) -> None:
        super().__init__()
        self.epoch_seconds: list[float] = []
        self._started = 0.0
        self._steps = steps_per_epoch
        self._progress_seconds = progress_seconds
        self._next_report = 0.0
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()
        self._next_report = self._started + self._progress_seconds
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if now >= self._next_report:
            self._next_report = now + self._progress_seconds
            loss = (logs or {}).get("loss")
            logger.info("next_track epoch %d: step %d of %d, loss %s (%.0f s)", self._epoch + 1, batch + 1,
                        self._steps, "?" if loss is None else f"{float(loss):.4f}", now - self._started)

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._started
        self.epoch_seconds.append(seconds)
        shown = ", ".join(f"{name}={value:.4f}" for name, value in sorted((logs or {}).items()))
        logger.info("next_track epoch %d: %s (%.1f s)", epoch + 1, shown, seconds)


class RankingValidation(keras.callbacks.Callback):
    """Adds ``val_hr@k`` to each epoch's logs: the share of validation examples whose
    target the core model ranks in its top ``k`` over the whole catalogue."""

    def __init__(self, core_model: keras.Model, examples: data.Examples, batch_size: int, k: int):
        super().__init__()
        self._core, self._examples, self._batch_size, self._k = core_model, examples, batch_size, k

    def on_epoch_end(self, epoch, logs=None):
        hits = 0
        for inputs, targets in self._examples.dataset(self._batch_size):
            logits = self._core(inputs, training=False)
            target_logits = tf.gather(logits, targets, axis=1, batch_dims=1)[:, None]
            # Ties count against the target, as in the evaluation harness.
            rank = tf.reduce_sum(tf.cast(logits >= target_logits, tf.int32), axis=1)
            hits += int(tf.reduce_sum(tf.cast(rank <= self._k, tf.int32)))
        if logs is not None:
            logs[f"val_hr@{self._k}"] = hits / max(len(self._examples), 1)


def best_epoch(values, lower_is_better: bool) -> int:
    """The 1-based epoch early stopping restored (the best of ``values``; the first on ties)."""
    if not values:
        return 0
    return int(np.argmin(values) if lower_is_better else np.argmax(values)) + 1
