"""Trains the genre classifier and exports it for TF Serving.

``run_fn`` is what the Trainer component calls (TFX style): it reads the
``AudioExamples`` splits, trains with early stopping on the validation loss,
writes ``<model_dir>/train_metrics.json`` and exports the ``genre`` serving
signature to ``<model_dir>/serving`` with ``model.export()``.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from musicrec.atomic import write_json_atomic
from musicrec.models import warm_start
from musicrec.models.export import export_serving_model
from musicrec.models.features import AudioFeatureParams
from musicrec.models.genre.data import make_dataset, parsed_dataset, read_labels
from musicrec.models.genre.model import (GenreHParams, build_classifier, build_serving_model,
                                         new_normalization)
from musicrec.models.train_args import TrainArgs

logger = logging.getLogger(__name__)

# Segments used to estimate the per-band mean and variance; a few thousand
# segments of ~126 frames pin both down far better than training needs.
NORMALIZATION_SAMPLE_SEGMENTS = 2000
SERVING_INPUT = "log_mel"
SERVING_OUTPUTS = frozenset({"probabilities", "classes", "genre", "embedding"})
METRICS_FILE = "train_metrics.json"


class _EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics and wall time, and keeps the times."""

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


def adapt_normalization(train_files: list[str], n_mels: int,
                        max_segments: int = NORMALIZATION_SAMPLE_SEGMENTS
                        ) -> keras.layers.Normalization:
    """A per-band ``Normalization`` adapted on raw training frames.

    Uses the first ``max_segments`` segments, unpadded, so padding frames
    never bias the statistics.
    """
    normalization = new_normalization()
    # Each element [frames, n_mels] counts as a batch of frames for adapt.
    frames = (parsed_dataset(train_files, n_mels)
              .map(lambda example: example["log_mel"])
              .take(max_segments))
    normalization.adapt(frames)
    return normalization


def validation_setup(eval_files: list[str], n_mels: int, batch_size: int
                     ) -> tuple[tf.data.Dataset | None, str]:
    """The validation batches and the metric early stopping watches.

    Returns:
        ``(eval_dataset, "val_loss")``, or ``(None, "loss")`` with a logged
        warning when there are no eval files: holding out part of train
        instead would put one artist's tracks on both sides (the ExampleGen
        splits by artist), so training stops on the training loss.
    """
    if eval_files:
        return make_dataset(eval_files, n_mels, batch_size, shuffle=False), "val_loss"
    logger.warning("genre training: no eval files; early stopping monitors the training "
                   "loss and no validation metrics are reported")
    return None, "loss"


# Hyperparameters that change weight shapes: a checkpoint with other values cannot seed this model.
SHAPE_HPARAMS = ("lstm_units", "embedding_dim")


def run_fn(args: TrainArgs) -> dict[str, Any]:
    """Trains, exports and checks the genre model.

    Args:
        args: ``train_files`` / ``eval_files`` (GZIP TFRecords of audio
            examples), ``examples_dir`` (holds ``labels.txt``),
            ``model_dir``, ``hparams`` (see :class:`GenreHParams`; unknown
            names raise ``ValueError``), ``feature_params`` (defaults to
            :class:`AudioFeatureParams`) and ``seed``.

    Returns:
        The metrics also written to ``<model_dir>/train_metrics.json``:
        ``history`` (per-epoch lists), ``monitor`` (``val_loss``, or
        ``loss`` without an eval split), ``best_epoch`` (1-based),
        ``best`` (every metric at the best epoch), ``epochs_run``,
        ``epoch_seconds``, ``hparams``, ``labels`` and ``serving_dir``.

    Raises:
        ValueError: bad hparams, no training files or no labels.
        RuntimeError: the exported SavedModel breaks the signature contract.
    """
    hparams = GenreHParams.from_dict(args.hparams)
    feature_params = args.feature_params or AudioFeatureParams()
    n_mels = feature_params.n_mels
    if not args.train_files:
        raise ValueError("genre run_fn: no training files")
    keras.utils.set_random_seed(args.seed)
    labels = read_labels(args.examples_dir)
    logger.info("genre training: %d train files, %d eval files, %d labels, hparams %s",
                len(args.train_files), len(args.eval_files), len(labels), hparams.to_dict())

    normalization = adapt_normalization(args.train_files, n_mels)
    model = build_classifier(n_mels, len(labels), hparams, normalization)
    checkpoint = warm_start.load_checkpoint(args.warm_start_dir)
    if checkpoint and (checkpoint.tokens != labels or warm_start.shape_mismatch(
            checkpoint, hparams.to_dict(), SHAPE_HPARAMS)):
        logger.warning("genre warm start skipped: the labels or %s differ from the checkpoint's",
                       SHAPE_HPARAMS)
        checkpoint = None
    if checkpoint:
        # The checkpoint's Normalization statistics come too: its LSTM learned on them.
        model.load_weights(checkpoint.weights_path)
        logger.info("genre warm start from %s", args.warm_start_dir)
    train_data = make_dataset(args.train_files, n_mels, hparams.batch_size, shuffle=True,
                              seed=args.seed)
    eval_data, monitor = validation_setup(args.eval_files, n_mels, hparams.batch_size)

    epoch_logger = _EpochLogger(hparams.epochs)
    early_stopping = keras.callbacks.EarlyStopping(
        monitor=monitor, patience=hparams.early_stopping_patience, restore_best_weights=True)
    with warnings.catch_warnings():
        # TFRecord datasets have unknown length, so Keras learns an epoch's
        # end from the first OutOfRange and warns about it; that is expected.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        history = model.fit(train_data, validation_data=eval_data, epochs=hparams.epochs,
                            callbacks=[early_stopping, epoch_logger], verbose=0)

    history_lists = {name: [float(v) for v in values] for name, values in history.history.items()}
    best_index = int(np.argmin(history_lists[monitor]))
    metrics: dict[str, Any] = {
        "history": history_lists,
        "monitor": monitor,
        "best_epoch": best_index + 1,
        "best": {name: values[best_index] for name, values in history_lists.items()},
        "epochs_run": len(history_lists[monitor]),
        "epoch_seconds": epoch_logger.epoch_seconds,
        "hparams": hparams.to_dict(),
        "labels": labels,
        "serving_dir": args.serving_dir,
        "warm_started_from": args.warm_start_dir if checkpoint else None,
    }
    logger.info("genre training done: best epoch %d of %d, %s", metrics["best_epoch"],
                metrics["epochs_run"], metrics["best"])

    export_serving_model(build_serving_model(model, labels), args.serving_dir,
                         inputs={SERVING_INPUT}, outputs=SERVING_OUTPUTS)
    warm_start.save_checkpoint(model, args.model_dir, labels, hparams.to_dict())
    write_json_atomic(os.path.join(args.model_dir, METRICS_FILE), metrics)
    return metrics


__all__ = ["run_fn", "adapt_normalization", "validation_setup", "NORMALIZATION_SAMPLE_SEGMENTS"]
