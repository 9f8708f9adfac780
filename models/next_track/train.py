"""Trains the next-track model and exports it for TF Serving (``run_fn``)."""
from __future__ import annotations

import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf

from musicrec.atomic import write_json_atomic
from musicrec.models import warm_start
from musicrec.models.next_track import data, global_rules
from musicrec.models.next_track.history import ListeningHistory
from musicrec.models.next_track.hparams import NextTrackHParams
from musicrec.models.next_track.layout import NUM_RESERVED_IDS
from musicrec.models.next_track.model import build_model, scoring_layer
from musicrec.models.next_track.optimizer import LazyAdam
from musicrec.models.next_track.sampled import build_candidate_trainer
from musicrec.models.next_track.sessions import read_session_records
from musicrec.models.next_track.serving import (  # noqa: F401  (re-exported for callers)
    SIGNATURE_INPUTS, SIGNATURE_OUTPUTS, export_saved_model)
from musicrec.models.train_args import TrainArgs

logger = logging.getLogger(__name__)

METRICS_FILENAME = "train_metrics.json"


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


def _optimizer(hparams: NextTrackHParams) -> keras.optimizers.Optimizer:
    # Sparse updates: the sampled softmax touches only a batch's rows of the track tables.
    return LazyAdam(hparams.learning_rate, global_clipnorm=hparams.clipnorm)


def _compile_full(model: keras.Model, hparams: NextTrackHParams, top_k: int) -> None:
    model.compile(
        optimizer=_optimizer(hparams),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="hr@1"),
                 keras.metrics.SparseTopKCategoricalAccuracy(k=top_k, name=f"hr@{top_k}")])


# Hyperparameters that change weight shapes: a checkpoint with other values cannot seed this model.
SHAPE_HPARAMS = ("embedding_dim", "lstm_units", "rnn", "tied_embeddings", "neural_scores", "repeat_scores",
                 "successor_lags", "successor_anchors", "successor_recent_slots", "predecessor_lags",
                 "scorer", "scorer_units",
                 "history_length", "max_prefix_length")


def grow_from_checkpoint(model: keras.Model, checkpoint: warm_start.Checkpoint,
                         hparams: NextTrackHParams) -> None:
    """Loads a checkpoint into ``model``, whose vocabulary extends the checkpoint's.

    Every weight with one entry per id (the embedding table's rows, the
    output kernel's columns, the output bias) keeps the checkpoint's entries
    for the checkpoint's ids (reserved ids and its tracks) and a fresh
    initialisation for new tracks; every other weight is copied whole.
    """
    known = build_model(len(checkpoint.tokens), hparams)
    known.load_weights(checkpoint.weights_path)
    old_ids = len(checkpoint.tokens) + NUM_RESERVED_IDS
    for layer in model.layers:
        old_weights = known.get_layer(layer.name).get_weights()
        if not old_weights:
            continue
        merged = []
        for old, new in zip(old_weights, layer.get_weights()):
            if old.shape == new.shape:
                merged.append(old)
                continue
            axis = next(axis for axis, size in enumerate(old.shape)
                        if size == old_ids and new.shape[axis] != size)
            merged.append(warm_start.copy_leading_rows(old, new, axis))
        layer.set_weights(merged)
    logger.info("next_track warm start: %d known tracks kept, %d new", len(checkpoint.tokens),
                model.get_layer("track_embedding").input_dim - NUM_RESERVED_IDS - len(checkpoint.tokens))


def uses_global_rules(hparams: NextTrackHParams) -> bool:
    return hparams.scorer == "mlp" and hparams.global_successors > 0


def set_global_rules(model: keras.Model, records, vocabulary, hparams: NextTrackHParams) -> None:
    """Counts ``records`` into the model's global rules table (a no-op without one)."""
    if not uses_global_rules(hparams):
        return
    ids, weights = global_rules.successor_table(
        records, data.track_ids(vocabulary), len(vocabulary) + NUM_RESERVED_IDS,
        hparams.successor_lags, hparams.global_successors)
    scoring_layer(model).set_global_rules(ids, weights)


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


def _examples(records, history, vocabulary, hparams) -> data.Examples | None:
    examples = data.build_examples(records, history, vocabulary, hparams)
    return examples if len(examples) else None


def run_fn(args: TrainArgs) -> dict:
    """Trains on ``args.train_files``, early-stops on ``args.eval_files``, exports.

    The listener history of every example comes from the training sessions
    only, strictly before the example's session starts. When the eval split
    yields no example, a stable ``validation_share`` of the training sessions
    is held out for early stopping instead; when that is empty too (or
    ``validation_share`` is 0, as in a final fit on every split), all
    ``epochs`` are trained. The figure is HR@``top_k`` or the loss
    (``early_stopping_metric``; with the sampled softmax, HR comes from
    ranking the validation examples over the whole catalogue after each epoch).

    Writes the SavedModel to ``args.serving_dir`` (every ``next_track``
    signature, see ``serving.py``), the warm-start checkpoint and
    ``<model_dir>/train_metrics.json``.

    Returns:
        the metrics written to ``train_metrics.json``: final ``train`` and
        ``validation`` metrics, per-epoch ``history``, ``epoch_seconds``,
        ``train_seconds``, ``epochs_run``, ``best_epoch`` (the epoch whose
        weights were kept), ``monitor``, ``validation_source``,
        ``vocab_size``, ``top_k``, ``softmax``, ``examples`` and ``hparams``.
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

    train_records = read_session_records(args.train_files)
    history = ListeningHistory(train_records)
    eval_records = read_session_records(args.eval_files) if args.eval_files else []
    eval_examples = _examples(eval_records, history, vocabulary, hparams) if eval_records else None
    counted_records = train_records + eval_records  # what the exported rules table counts
    validation_source = "eval split"
    if eval_examples is None and hparams.validation_share > 0:
        held = [r for r in train_records if data.held_out(r.session_id, hparams.validation_share)]
        kept = [r for r in train_records if not data.held_out(r.session_id, hparams.validation_share)]
        eval_examples = _examples(held, history, vocabulary, hparams)
        if eval_examples is not None:
            train_records = kept
            validation_source = f"{hparams.validation_share:.0%} of training sessions"
            logger.info("next_track: no eval examples; holding out %s for early stopping",
                        validation_source)
    rules_records: list = []
    if uses_global_rules(hparams):
        rules_records, train_records = global_rules.split_for_rules(train_records, hparams.rules_share)
        logger.info("next_track: %d sessions feed the global rules while training, %d give examples",
                    len(rules_records), len(train_records))
    train_examples = _examples(train_records, history, vocabulary, hparams)
    if train_examples is None:
        raise ValueError(f"no training examples (sessions of >= 2 plays with in-vocabulary "
                         f"targets) in {args.train_files}")
    if eval_examples is None:
        validation_source = None
        logger.info("next_track: no validation examples; training all %d epochs", hparams.epochs)

    model = build_model(len(vocabulary), hparams)
    if checkpoint:
        grow_from_checkpoint(model, checkpoint, hparams)
    set_global_rules(model, rules_records, vocabulary, hparams)
    full_softmax = hparams.uses_full_softmax(len(vocabulary))
    watched = f"hr@{top_k}" if hparams.early_stopping_metric == "hr" else "loss"
    if full_softmax:
        _compile_full(model, hparams, top_k)
        trainer = model
        as_dataset = lambda examples, **kw: examples.dataset(hparams.batch_size, **kw)  # noqa: E731
    else:
        trainer = build_candidate_trainer(model, hparams, np.bincount(
            train_examples.targets, minlength=len(vocabulary) + NUM_RESERVED_IDS))
        trainer.compile(optimizer=_optimizer(hparams), loss=lambda _, loss: loss)
        as_dataset = lambda examples, **kw: examples.dataset(  # noqa: E731
            hparams.batch_size, **kw).map(lambda x, y: ((x, y), y))
    train_data = as_dataset(train_examples, shuffle=True, seed=args.seed)
    eval_data = as_dataset(eval_examples) if eval_examples is not None else None
    logger.info("next_track: %d training examples, %d validation, %d tracks, %s softmax",
                len(train_examples), len(eval_examples) if eval_examples else 0,
                len(vocabulary), "full" if full_softmax else "sampled")

    epoch_logger = EpochLogger(int(train_data.cardinality()))
    callbacks: list[keras.callbacks.Callback] = [epoch_logger]
    monitor = None
    if eval_data is not None:
        monitor = f"val_{watched}"
        if not full_softmax and watched != "loss":
            # The sampled loss has no ranking metric of its own: rank the whole catalogue here.
            callbacks.insert(0, RankingValidation(model, eval_examples, hparams.batch_size, top_k))
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode="min" if watched == "loss" else "max",
            patience=hparams.early_stopping_patience, restore_best_weights=True))
    started = time.perf_counter()
    history_log = trainer.fit(train_data, validation_data=eval_data, epochs=hparams.epochs, verbose=0,
                              callbacks=callbacks)
    train_seconds = time.perf_counter() - started

    set_global_rules(model, counted_records, vocabulary, hparams)
    os.makedirs(args.model_dir, exist_ok=True)
    export_saved_model(model, vocabulary, hparams, args.serving_dir)
    warm_start.save_checkpoint(model, args.model_dir, vocabulary, hparams.to_dict())

    history = {name: [float(v) for v in values] for name, values in history_log.history.items()}
    kept = (best_epoch(history.get(monitor, []), watched == "loss") if monitor
            else len(epoch_logger.epoch_seconds))

    def at_kept_epoch(prefix: str) -> dict[str, float]:
        # restore_best_weights kept that epoch's weights: these are the exported model's figures.
        return {name[len(prefix):]: values[kept - 1] for name, values in history.items()
                if name.startswith(prefix) and (prefix or not name.startswith("val_")) and kept}

    metrics = {
        "train": at_kept_epoch(""),
        "validation": at_kept_epoch("val_") if monitor else None,
        "history": history,
        "epoch_seconds": epoch_logger.epoch_seconds,
        "train_seconds": train_seconds,
        "epochs_run": len(epoch_logger.epoch_seconds),
        "best_epoch": kept,
        "steps_per_epoch": int(train_data.cardinality()),
        "examples": {"train": len(train_examples), "validation": len(eval_examples) if eval_examples else 0},
        "monitor": monitor,
        "validation_source": validation_source,
        "softmax": "full" if full_softmax else "sampled",
        "vocab_size": len(vocabulary),
        "top_k": top_k,
        "hparams": hparams.to_dict(),
        "seed": args.seed,
        "warm_started_from": args.warm_start_dir if checkpoint else None,
        "new_tracks": len(vocabulary) - len(checkpoint.tokens) if checkpoint else None,
    }
    write_json_atomic(os.path.join(args.model_dir, METRICS_FILENAME), metrics)
    return metrics
