"""The record of a genre training run, the same for both trainers (log-mel and pretrained front end).

Under ``model_dir``: TensorBoard logs in ``logs/``, ``train_metrics.json``
and ``training_curves.png``; each epoch's metrics and wall time also go to
the Python log.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Mapping, Sequence

import keras

from musicrec.atomic import write_json_atomic
from musicrec.models.genre.plots import save_training_curves

logger = logging.getLogger(__name__)

METRICS_FILE = "train_metrics.json"
CURVES_FILE = "training_curves.png"
TENSORBOARD_DIR = "logs"


class EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics and wall time, and keeps the times (seconds) in ``epoch_seconds``."""

    def __init__(self, total_epochs: int):
        super().__init__()
        self.total_epochs = total_epochs
        self.epoch_seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._started)
        shown = " ".join(f"{name}={value:.4f}" for name, value in sorted((logs or {}).items()))
        logger.info("genre epoch %d/%d (%.1f s): %s", epoch + 1, self.total_epochs,
                    self.epoch_seconds[-1], shown)


def tensorboard_callback(model_dir: str) -> keras.callbacks.TensorBoard:
    """Per-epoch TensorBoard scalars under ``<model_dir>/logs`` (no graph)."""
    return keras.callbacks.TensorBoard(log_dir=os.path.join(model_dir, TENSORBOARD_DIR),
                                       write_graph=False, update_freq="epoch")


def write_training_report(history: Mapping[str, Sequence[float]], metrics: Mapping[str, Any],
                          model_dir: str) -> None:
    """Draws ``training_curves.png`` (``metrics["best_epoch"]`` marked) and writes ``train_metrics.json``."""
    save_training_curves(history, os.path.join(model_dir, CURVES_FILE), best_epoch=metrics["best_epoch"])
    write_json_atomic(os.path.join(model_dir, METRICS_FILE), metrics)
