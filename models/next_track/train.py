"""Trains the next-track LSTM and exports it for TF Serving (``run_fn``)."""
from __future__ import annotations

import logging
import os
import time

import keras
import tensorflow as tf

from musicrec.atomic import write_json_atomic
from musicrec.models import warm_start
from musicrec.models.export import export_serving_model
from musicrec.models.next_track import data
from musicrec.models.next_track.model import (
    NextTrackHParams, build_model, build_serving_model)
from musicrec.models.train_args import TrainArgs

logger = logging.getLogger(__name__)

METRICS_FILENAME = "train_metrics.json"
SIGNATURE_INPUTS = {"track_keys"}
SIGNATURE_OUTPUTS = {"track_keys", "scores"}


class EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics and records its wall time (seconds) in ``epoch_seconds``."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch_seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._started
        self.epoch_seconds.append(seconds)
        shown = ", ".join(f"{name}={value:.4f}" for name, value in sorted((logs or {}).items()))
        logger.info("next_track epoch %d: %s (%.1f s)", epoch + 1, shown, seconds)


def _has_batches(dataset: tf.data.Dataset) -> bool:
    return int(dataset.cardinality()) > 0


def _compile(model: keras.Model, hparams: NextTrackHParams, top_k: int) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(hparams.learning_rate, global_clipnorm=hparams.clipnorm),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="hr@1"),
                 keras.metrics.SparseTopKCategoricalAccuracy(k=top_k, name=f"hr@{top_k}")])


# Hyperparameters that change weight shapes: a checkpoint with other values cannot seed this model.
SHAPE_HPARAMS = ("embedding_dim", "lstm_units")


def grow_from_checkpoint(model: keras.Model, checkpoint: warm_start.Checkpoint,
                         hparams: NextTrackHParams) -> None:
    """Loads a checkpoint into ``model``, whose vocabulary extends the checkpoint's.

    The embedding rows and output-layer columns of the checkpoint's ids
    (padding, OOV and its tracks) are copied; rows for new tracks keep their
    fresh initialisation. The LSTM's weights are copied whole.
    """
    known = build_model(len(checkpoint.tokens), hparams)
    known.load_weights(checkpoint.weights_path)
    for layer in model.layers:
        old_weights = known.get_layer(layer.name).get_weights()
        if layer.name == "track_embedding":
            layer.set_weights([warm_start.copy_leading_rows(old_weights[0], layer.get_weights()[0], 0)])
        elif layer.name == "next_track_logits":
            kernel, bias = layer.get_weights()
            layer.set_weights([warm_start.copy_leading_rows(old_weights[0], kernel, 1),
                               warm_start.copy_leading_rows(old_weights[1], bias, 0)])
        else:
            layer.set_weights(old_weights)
    logger.info("next_track warm start: %d known tracks kept, %d new",
                len(checkpoint.tokens), model.get_layer("track_embedding").input_dim - 2
                - len(checkpoint.tokens))


def run_fn(args: TrainArgs) -> dict:
    """Trains on ``args.train_files``, early-stops on ``args.eval_files``, exports.

    Writes the SavedModel to ``args.serving_dir`` (``next_track`` signature)
    and ``<model_dir>/train_metrics.json``. When the eval split yields no pair,
    early stopping watches the training loss instead.

    Returns:
        the metrics written to ``train_metrics.json``: final ``train`` and
        ``validation`` metrics, per-epoch ``history``, ``epoch_seconds``,
        ``epochs_run``, ``monitor``, ``vocab_size``, ``top_k`` and ``hparams``.
    """
    hparams = NextTrackHParams.from_dict(args.hparams)
    keras.utils.set_random_seed(args.seed)
    checkpoint = warm_start.load_checkpoint(args.warm_start_dir)
    if checkpoint and warm_start.shape_mismatch(checkpoint, hparams.to_dict(), SHAPE_HPARAMS):
        logger.warning("next_track warm start skipped: %s differ from the checkpoint's",
                       warm_start.shape_mismatch(checkpoint, hparams.to_dict(), SHAPE_HPARAMS))
        checkpoint = None
    vocabulary = data.read_vocabulary(args.examples_dir)
    if checkpoint:
        # Known tracks keep their ids (and so their embeddings); new tracks are appended.
        vocabulary = warm_start.merge_vocabulary(checkpoint.tokens, vocabulary)
    top_k = min(hparams.top_k, len(vocabulary))

    train_pairs = data.pairs_dataset(args.train_files, vocabulary, hparams.max_prefix_length,
                                     hparams.batch_size, shuffle=True, seed=args.seed)
    if not _has_batches(train_pairs):
        raise ValueError(f"no training pairs (sessions of >= 2 in-vocabulary plays) in {args.train_files}")
    eval_pairs = data.pairs_dataset(args.eval_files, vocabulary, hparams.max_prefix_length,
                                    hparams.batch_size) if args.eval_files else None
    if eval_pairs is not None and not _has_batches(eval_pairs):
        eval_pairs = None
    monitor = "val_loss" if eval_pairs is not None else "loss"
    if eval_pairs is None:
        logger.warning("next_track: the eval split has no pairs; early stopping on the training loss")

    model = build_model(len(vocabulary), hparams)
    if checkpoint:
        grow_from_checkpoint(model, checkpoint, hparams)
    _compile(model, hparams, top_k)
    epoch_logger = EpochLogger()
    history = model.fit(
        train_pairs, validation_data=eval_pairs, epochs=hparams.epochs, verbose=0,
        callbacks=[keras.callbacks.EarlyStopping(
            monitor=monitor, patience=hparams.early_stopping_patience,
            restore_best_weights=True),
                   epoch_logger])

    os.makedirs(args.model_dir, exist_ok=True)
    export_serving_model(build_serving_model(model, vocabulary, top_k), args.serving_dir,
                         inputs=SIGNATURE_INPUTS, outputs=SIGNATURE_OUTPUTS)
    warm_start.save_checkpoint(model, args.model_dir, vocabulary, hparams.to_dict())

    # Evaluated after restore_best_weights, so these are the exported weights' metrics.
    metrics = {
        "train": model.evaluate(train_pairs, verbose=0, return_dict=True),
        "validation": (model.evaluate(eval_pairs, verbose=0, return_dict=True)
                       if eval_pairs is not None else None),
        "history": {name: [float(v) for v in values] for name, values in history.history.items()},
        "epoch_seconds": epoch_logger.epoch_seconds,
        "epochs_run": len(epoch_logger.epoch_seconds),
        "steps_per_epoch": int(train_pairs.cardinality()),
        "monitor": monitor,
        "vocab_size": len(vocabulary),
        "top_k": top_k,
        "hparams": hparams.to_dict(),
        "seed": args.seed,
        "warm_started_from": args.warm_start_dir if checkpoint else None,
        "new_tracks": len(vocabulary) - len(checkpoint.tokens) if checkpoint else None,
    }
    metrics["train"] = {name: float(v) for name, v in metrics["train"].items()}
    if metrics["validation"] is not None:
        metrics["validation"] = {name: float(v) for name, v in metrics["validation"].items()}
    write_json_atomic(os.path.join(args.model_dir, METRICS_FILENAME), metrics)
    return metrics
