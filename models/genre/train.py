"""Trains the genre classifier and exports it for TF Serving.

``run_fn`` is what the Trainer component calls (TFX style): it reads the
``AudioExamples`` splits, trains (class weights; random tempo, band shift and gain,
SpecAugment and mixup on the training input; gradient clipping, a learning-rate
schedule, early stopping on the validation loss with the best weights restored), writes
``<model_dir>/train_metrics.json``, the training curves and TensorBoard logs,
and exports the ``genre`` signatures to ``<model_dir>/serving`` with a Keras
``ExportArchive`` (:mod:`musicrec.models.genre.signatures`).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from musicrec.models import warm_start
from musicrec.models.export import export_serving_model
from musicrec.models.features import AudioFeatureParams
from musicrec.models.genre.augment import (chain, mixup, random_band_shift, random_gain,
                                           random_tempo, spec_augment)
from musicrec.models.genre.data import label_counts, make_dataset, parsed_dataset, read_labels
from musicrec.models.genre.hparams import GenreHParams
from musicrec.models.genre.losses import balanced_class_weights
from musicrec.models.genre.model import build_classifier, build_serving_model, new_normalization
from musicrec.models.genre.signatures import OUTPUTS, GenreSignatures, check_waveform_signature
from musicrec.models.genre.training_log import EpochLogger, tensorboard_callback, write_training_report
from musicrec.models.train_args import TrainArgs

logger = logging.getLogger(__name__)

# Segments used to estimate the per-band mean and variance; a few thousand
# segments of ~126 frames pin both down far better than training needs.
NORMALIZATION_SAMPLE_SEGMENTS = 2000
SERVING_INPUT = "log_mel"
SERVING_OUTPUTS = OUTPUTS


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
        return make_dataset(eval_files, n_mels, batch_size, shuffle=False, cache=True), "val_loss"
    logger.warning("genre training: no eval files; early stopping monitors the training "
                   "loss and no validation metrics are reported")
    return None, "loss"


# Hyperparameters that change weight shapes: a checkpoint with other values cannot seed this model.
SHAPE_HPARAMS = ("architecture", "lstm_units", "lstm_layers", "bidirectional", "crnn_recurrent",
                 "conv_filters", "embedding_dim", "std_pooling", "input_statistics",
                 "spectral_summary", "summary_coefficients", "summary_band_groups",
                 "ensemble_members", "ensemble")


def warm_start_keys(hparams: GenreHParams, checkpoint_hparams: dict[str, Any]) -> tuple[str, ...]:
    """The :data:`SHAPE_HPARAMS` a checkpoint must share with ``hparams`` to seed the model.

    ``ensemble`` counts only where either side has the key set: a checkpoint
    written before heterogeneous ensembles existed lacks it and had none, so
    it still seeds a model without one.
    """
    if hparams.ensemble or "ensemble" in checkpoint_hparams:
        return SHAPE_HPARAMS
    return tuple(key for key in SHAPE_HPARAMS if key != "ensemble")


def training_callbacks(hparams: GenreHParams, monitor: str, model_dir: str,
                       epoch_logger: keras.callbacks.Callback) -> list[keras.callbacks.Callback]:
    """Early stopping, the plateau schedule, TensorBoard logs, the epoch log.

    Early stopping restores the best epoch's weights, except with weight
    averaging (``ema_momentum > 0``): the model then ends with the average,
    which Keras writes when training ends and which a restore (it runs
    later, in ``on_train_end``) would silently replace with one epoch's raw
    weights; early stopping then only ends training.
    """
    callbacks = [
        keras.callbacks.EarlyStopping(monitor=monitor, patience=hparams.early_stopping_patience,
                                      restore_best_weights=hparams.ema_momentum == 0),
        tensorboard_callback(model_dir),
        epoch_logger,
    ]
    if hparams.lr_schedule == "plateau":
        callbacks.insert(1, keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=0.5, patience=max(1, hparams.early_stopping_patience // 2)))
    return callbacks


def run_fn(args: TrainArgs) -> dict[str, Any]:
    """Trains, exports and checks the genre model.

    Args:
        args: ``train_files`` / ``eval_files`` (GZIP TFRecords of audio
            examples), ``examples_dir`` (holds ``labels.txt``),
            ``model_dir``, ``hparams`` (see :class:`GenreHParams`; unknown
            names raise ``ValueError``), ``feature_params`` (defaults to
            :class:`AudioFeatureParams`), ``frontend`` and ``seed``. With
            ``frontend: musicnn_msd``
            :func:`musicrec.models.genre.train_pretrained.run_fn` trains instead.

    Writes, under ``model_dir``: ``serving/`` (the SavedModel with the
    ``serving_default`` and ``from_waveform`` signatures,
    :mod:`musicrec.models.genre.signatures`), ``checkpoint/`` (warm start),
    ``logs/`` (TensorBoard), ``training_curves.png`` and
    ``train_metrics.json``.

    Returns:
        The metrics also written to ``<model_dir>/train_metrics.json``:
        ``history`` (per-epoch lists), ``monitor`` (``val_loss``, or
        ``loss`` without an eval split), ``best_epoch`` (1-based),
        ``best`` (every metric at the best epoch), ``final_weights``
        (``"best_epoch"``, or ``"moving_average"`` with ``ema_momentum``),
        ``epochs_run``,
        ``epoch_seconds``, ``fit_seconds``, ``hparams``, ``labels``,
        ``class_weights`` (``None`` when off), ``train_segments``,
        ``serving_dir`` and ``warm_started_from`` (``None`` without a warm start).

    Raises:
        ValueError: bad hparams, no training files or no labels.
        RuntimeError: the exported SavedModel breaks the signature contract.
    """
    if args.frontend != "log_mel":
        from musicrec.models.genre import frontends, train_pretrained

        frontends.check_frontend(args.frontend)
        return train_pretrained.run_fn(args)
    hparams = GenreHParams.from_dict(args.hparams)
    feature_params = args.feature_params or AudioFeatureParams()
    n_mels = feature_params.n_mels
    if not args.train_files:
        raise ValueError("genre run_fn: no training files")
    keras.utils.set_random_seed(args.seed)
    labels = read_labels(args.examples_dir)
    logger.info("genre training: %d train files, %d eval files, %d labels, hparams %s",
                len(args.train_files), len(args.eval_files), len(labels), hparams.to_dict())

    class_weights, train_segments = _class_balance(args.train_files, n_mels, len(labels), hparams)
    model, normalization = _build_model(args.train_files, n_mels, len(labels), hparams, train_segments)
    checkpoint = _warm_start_model(model, args.warm_start_dir, labels, hparams)
    # Read after the warm start: the checkpoint brings its own Normalization statistics.
    train_data = _training_dataset(args.train_files, n_mels, len(labels), hparams, args.seed,
                                   band_means=np.asarray(normalization.mean).reshape(-1))
    eval_data, monitor = validation_setup(args.eval_files, n_mels, hparams.batch_size)
    fitted = _fit(model, train_data, eval_data, monitor, class_weights, hparams, args.model_dir)

    metrics = _training_metrics(fitted, hparams, labels, class_weights, train_segments, args,
                                warm_started=checkpoint is not None)
    _export_model(model, labels, feature_params, args.serving_dir)
    warm_start.save_checkpoint(model, args.model_dir, labels, hparams.to_dict())
    write_training_report(fitted.history, metrics, args.model_dir)
    return metrics


def _class_balance(train_files: list[str], n_mels: int, n_labels: int, hparams: GenreHParams
                   ) -> tuple[dict[int, float] | None, int]:
    """``(class weights or None when hparams.class_weights is off, training segments)`` of the training split."""
    counts = label_counts(train_files, n_mels)
    class_weights = balanced_class_weights(counts, n_labels) if hparams.class_weights else None
    return class_weights, sum(counts.values())


def _build_model(train_files: list[str], n_mels: int, n_labels: int, hparams: GenreHParams,
                 train_segments: int) -> tuple[keras.Model, keras.layers.Normalization]:
    """The compiled classifier and its ``Normalization``, adapted on the training frames.

    ``train_segments`` sets the steps per epoch (``ceil(segments / batch_size)``)
    the cosine schedule and weight averaging plan for.
    """
    normalization = adapt_normalization(train_files, n_mels)
    model = build_classifier(n_mels, n_labels, hparams, normalization,
                             steps_per_epoch=max(1, math.ceil(train_segments / hparams.batch_size)))
    return model, normalization


def _warm_start_model(model: keras.Model, warm_start_dir: str | None, labels: list[str],
                      hparams: GenreHParams) -> warm_start.Checkpoint | None:
    """Loads the checkpoint in ``warm_start_dir`` into ``model`` when its labels and shapes match.

    Returns:
        The checkpoint loaded, or ``None`` (none given, or a mismatch, logged as a warning).
    """
    checkpoint = warm_start.load_checkpoint(warm_start_dir)
    if checkpoint and (checkpoint.tokens != labels or warm_start.shape_mismatch(
            checkpoint, hparams.to_dict(), warm_start_keys(hparams, checkpoint.hparams))):
        logger.warning("genre warm start skipped: the labels or %s differ from the checkpoint's",
                       SHAPE_HPARAMS)
        return None
    if checkpoint:
        # The checkpoint's Normalization statistics come too: its layers learned on them.
        model.load_weights(checkpoint.weights_path)
        logger.info("genre warm start from %s", warm_start_dir)
    return checkpoint


def _training_dataset(train_files: list[str], n_mels: int, n_labels: int, hparams: GenreHParams,
                      seed: int, band_means: np.ndarray) -> tf.data.Dataset:
    """Shuffled, padded training batches with the augmentations ``hparams`` turn on.

    Per segment: random tempo, band shift, gain and SpecAugment (masked
    bands take ``band_means``, float ``[n_mels]`` in raw log-mel units);
    per batch, mixup. Batches are ``(log_mel [b, frames, n_mels], labels)``,
    the labels soft ``[b, n_labels]`` with mixup, else integer ``[b]``.
    """
    train_data = make_dataset(
        train_files, n_mels, hparams.batch_size, shuffle=True, seed=seed, cache=True,
        # Distinct op seeds: draws of ops sharing one seed would move together (mixup uses
        # seed and seed + 1).
        augment=chain(random_tempo(hparams.tempo_max_fraction, seed=seed + 2),
                      random_band_shift(hparams.band_shift_max, seed=seed + 3),
                      random_gain(hparams.random_gain_db, seed=seed),
                      spec_augment(hparams.time_mask_frames, hparams.freq_mask_bands, band_means)))
    blend = mixup(hparams.mixup_alpha, n_labels, seed=seed)
    if blend is not None:
        # Mixup blends whole batches (a segment with another of its shuffled batch), after padding.
        train_data = train_data.map(blend, num_parallel_calls=tf.data.AUTOTUNE)
    return train_data


@dataclasses.dataclass(frozen=True)
class _FitResult:
    """What training left besides the weights.

    Attributes:
        history: every metric per epoch (``loss``, ``accuracy``, ``val_...``).
        monitor: the metric early stopping watched.
        epoch_seconds: wall time of each epoch.
        fit_seconds: wall time of the whole fit.
    """

    history: dict[str, list[float]]
    monitor: str
    epoch_seconds: list[float]
    fit_seconds: float

    @property
    def best_index(self) -> int:
        """0-based epoch with the lowest monitored value (the first on ties)."""
        return int(np.argmin(self.history[self.monitor]))


def _fit(model: keras.Model, train_data: tf.data.Dataset, eval_data: tf.data.Dataset | None, monitor: str,
         class_weights: dict[int, float] | None, hparams: GenreHParams, model_dir: str) -> _FitResult:
    """Trains ``model`` for up to ``hparams.epochs`` with :func:`training_callbacks`."""
    epoch_logger = EpochLogger(hparams.epochs)
    started = time.perf_counter()
    with warnings.catch_warnings():
        # TFRecord datasets have unknown length, so Keras learns an epoch's
        # end from the first OutOfRange and warns about it; that is expected.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        history = model.fit(train_data, validation_data=eval_data, epochs=hparams.epochs,
                            class_weight=class_weights,
                            callbacks=training_callbacks(hparams, monitor, model_dir, epoch_logger),
                            verbose=0)
    fit_seconds = time.perf_counter() - started
    return _FitResult({name: [float(v) for v in values] for name, values in history.history.items()},
                      monitor, epoch_logger.epoch_seconds, fit_seconds)


def _training_metrics(fitted: _FitResult, hparams: GenreHParams, labels: list[str],
                      class_weights: dict[int, float] | None, train_segments: int, args: TrainArgs,
                      warm_started: bool) -> dict[str, Any]:
    """The ``train_metrics.json`` of a log-mel run (keys: see :func:`run_fn`), logged in short."""
    best_index = fitted.best_index
    metrics: dict[str, Any] = {
        "history": fitted.history,
        "monitor": fitted.monitor,
        "best_epoch": best_index + 1,
        "best": {name: values[best_index] for name, values in fitted.history.items()},
        # Which weights the exported model has (see training_callbacks).
        "final_weights": "moving_average" if hparams.ema_momentum else "best_epoch",
        "epochs_run": len(fitted.history[fitted.monitor]),
        "epoch_seconds": fitted.epoch_seconds,
        "fit_seconds": fitted.fit_seconds,
        "hparams": hparams.to_dict(),
        "labels": labels,
        "class_weights": ({labels[k]: v for k, v in class_weights.items()}
                          if class_weights else None),
        "train_segments": train_segments,
        "serving_dir": args.serving_dir,
        "warm_started_from": args.warm_start_dir if warm_started else None,
    }
    logger.info("genre training done (%s): best epoch %d of %d in %.1f s, %s",
                hparams.architecture, metrics["best_epoch"], metrics["epochs_run"], fitted.fit_seconds,
                metrics["best"])
    return metrics


def _export_model(model: keras.Model, labels: list[str], feature_params: AudioFeatureParams,
                  serving_dir: str) -> None:
    """Exports the ``genre`` signatures of ``model`` to ``serving_dir`` and checks ``from_waveform``.

    Raises:
        RuntimeError: the SavedModel breaks the signature contract.
    """
    export_serving_model(GenreSignatures(build_serving_model(model, labels), labels, feature_params,
                                         frontend="log_mel"),
                         serving_dir, inputs={SERVING_INPUT}, outputs=SERVING_OUTPUTS)
    check_waveform_signature(serving_dir)


__all__ = ["run_fn", "adapt_normalization", "validation_setup", "training_callbacks",
           "warm_start_keys",
           "NORMALIZATION_SAMPLE_SEGMENTS", "SHAPE_HPARAMS"]
