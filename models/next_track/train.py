"""Trains the next-track model and exports it for TF Serving (``run_fn``)."""
from __future__ import annotations

import dataclasses
import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf

from musicrec.atomic import write_json_atomic
from musicrec.models import warm_start
from musicrec.models.next_track import data, global_rules
from musicrec.models.next_track.callbacks import EpochLogger, RankingValidation, best_epoch
from musicrec.models.next_track.history import ListeningHistory
from musicrec.models.next_track.hparams import NextTrackHParams
from musicrec.models.next_track.layout import NUM_RESERVED_IDS
from musicrec.models.next_track.model import build_model, scoring_layer
from musicrec.models.next_track.optimizer import LazyAdam
from musicrec.models.next_track.sampled import build_candidate_trainer
from musicrec.models.next_track.sessions import read_session_records
from musicrec.models.next_track.serving import export_saved_model
from musicrec.models.train_args import TrainArgs

logger = logging.getLogger(__name__)

METRICS_FILENAME = "train_metrics.json"


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
        ``steps_per_epoch``, ``vocab_size``, ``top_k``, ``softmax``,
        ``examples``, ``hparams``, ``seed``, ``warm_started_from`` and
        ``new_tracks`` (``None`` without a warm start).
    """
    hparams = NextTrackHParams.from_dict(args.hparams)
    keras.utils.set_random_seed(args.seed)
    checkpoint = _matching_checkpoint(args.warm_start_dir, hparams)
    vocabulary = _vocabulary(args.examples_dir, checkpoint)
    top_k = min(hparams.top_k, len(vocabulary))

    examples = _read_examples(args, vocabulary, hparams)
    model = _build(vocabulary, hparams, checkpoint, examples.rules_records)
    trainer = _compile_trainer(model, examples, len(vocabulary), hparams, top_k, args.seed)
    fitted = _fit(trainer, model, examples, hparams, top_k)

    _export(model, examples.counted_records, vocabulary, hparams, args)
    metrics = _training_metrics(fitted, trainer, examples, len(vocabulary), top_k, hparams, args,
                                checkpoint)
    write_json_atomic(os.path.join(args.model_dir, METRICS_FILENAME), metrics)
    return metrics


def _matching_checkpoint(warm_start_dir: str | None, hparams: NextTrackHParams) -> warm_start.Checkpoint | None:
    """The warm-start checkpoint in ``warm_start_dir``, or ``None`` (none, or :data:`SHAPE_HPARAMS` differ)."""
    checkpoint = warm_start.load_checkpoint(warm_start_dir)
    if checkpoint and warm_start.shape_mismatch(checkpoint, hparams.to_dict(), SHAPE_HPARAMS):
        logger.warning("next_track warm start skipped: %s differ from the checkpoint's",
                       warm_start.shape_mismatch(checkpoint, hparams.to_dict(), SHAPE_HPARAMS))
        return None
    return checkpoint


def _vocabulary(examples_dir: str, checkpoint: warm_start.Checkpoint | None) -> list[str]:
    """The track keys in id order: ``vocab.txt``, after the checkpoint's keys when warm starting.

    Known tracks keep their ids (and so their embeddings); new tracks are appended.
    """
    vocabulary = data.read_vocabulary(examples_dir)
    if checkpoint:
        vocabulary = warm_start.merge_vocabulary(checkpoint.tokens, vocabulary)
    return vocabulary


@dataclasses.dataclass(frozen=True)
class _TrainingExamples:
    """The examples of one training run and the sessions behind them.

    Attributes:
        train: the training examples.
        validation: the early-stopping examples, or ``None`` (every epoch is trained).
        validation_source: ``"eval split"``, the share of training sessions
            held out, or ``None`` without validation examples.
        rules_records: the sessions that only feed the global rules table
            while training (empty without global rules).
        counted_records: the sessions the exported rules table counts (train and eval).
    """

    train: data.Examples
    validation: data.Examples | None
    validation_source: str | None
    rules_records: list
    counted_records: list


def _read_examples(args: TrainArgs, vocabulary: list[str], hparams: NextTrackHParams) -> _TrainingExamples:
    """Reads the sessions of ``args.train_files`` and ``args.eval_files`` into examples.

    The listener history comes from the training sessions only. Without eval
    examples, a stable ``validation_share`` of the training sessions is held
    out; at most ``max_validation_examples`` of them, evenly spaced, are
    kept. With global rules, the earliest ``rules_share`` of each listener's
    training sessions only feed the rules table.

    Raises:
        ValueError: the training sessions give no example.
    """
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
    elif len(eval_examples) > hparams.max_validation_examples > 0:
        logger.info("next_track: early stopping reads %d of the %d validation examples "
                    "(max_validation_examples, evenly spaced)", hparams.max_validation_examples,
                    len(eval_examples))
        eval_examples = eval_examples.evenly_spaced(hparams.max_validation_examples)
        validation_source = f"{validation_source}, {len(eval_examples)} examples evenly spaced"
    return _TrainingExamples(train_examples, eval_examples, validation_source, rules_records, counted_records)


def _build(vocabulary: list[str], hparams: NextTrackHParams, checkpoint: warm_start.Checkpoint | None,
           rules_records: list) -> keras.Model:
    """The core model over ``vocabulary``: grown from ``checkpoint`` if any, its rules table
    counted from ``rules_records``."""
    model = build_model(len(vocabulary), hparams)
    if checkpoint:
        grow_from_checkpoint(model, checkpoint, hparams)
    set_global_rules(model, rules_records, vocabulary, hparams)
    return model


@dataclasses.dataclass(frozen=True)
class _Trainer:
    """What ``fit`` runs on: the compiled model and its batches.

    Attributes:
        model: the core model (full softmax) or the candidate trainer around it (sampled).
        train_data, validation_data: batches in the form ``model`` takes; no
            validation batches without validation examples.
        full_softmax: whether the loss is the softmax over every track.
    """

    model: keras.Model
    train_data: tf.data.Dataset
    validation_data: tf.data.Dataset | None
    full_softmax: bool


def _compile_trainer(model: keras.Model, examples: _TrainingExamples, n_tracks: int,
                     hparams: NextTrackHParams, top_k: int, seed: int) -> _Trainer:
    """Compiles the full softmax, or the sampled one (``sampled.py``) for large catalogues."""
    full_softmax = hparams.uses_full_softmax(n_tracks)
    if full_softmax:
        _compile_full(model, hparams, top_k)
        trainer = model
        as_dataset = lambda examples, **kw: examples.dataset(hparams.batch_size, **kw)  # noqa: E731
    else:
        trainer = build_candidate_trainer(model, hparams, np.bincount(
            examples.train.targets, minlength=n_tracks + NUM_RESERVED_IDS))
        trainer.compile(optimizer=_optimizer(hparams), loss=lambda _, loss: loss)
        as_dataset = lambda examples, **kw: examples.dataset(  # noqa: E731
            hparams.batch_size, **kw).map(lambda x, y: ((x, y), y))
    train_data = as_dataset(examples.train, shuffle=True, seed=seed)
    eval_data = as_dataset(examples.validation) if examples.validation is not None else None
    logger.info("next_track: %d training examples, %d validation, %d tracks, %s softmax",
                len(examples.train), len(examples.validation) if examples.validation else 0,
                n_tracks, "full" if full_softmax else "sampled")
    return _Trainer(trainer, train_data, eval_data, full_softmax)


@dataclasses.dataclass(frozen=True)
class _FitResult:
    """What training left besides the weights.

    Attributes:
        history: every metric per epoch.
        monitor: the metric early stopping watched (``val_hr@k`` or
            ``val_loss``), or ``None`` without validation.
        lower_is_better: whether the monitored metric is a loss.
        epoch_seconds: wall time of each epoch.
        train_seconds: wall time of the whole fit.
    """

    history: dict[str, list[float]]
    monitor: str | None
    lower_is_better: bool
    epoch_seconds: list[float]
    train_seconds: float


def _fit(trainer: _Trainer, model: keras.Model, examples: _TrainingExamples, hparams: NextTrackHParams,
         top_k: int) -> _FitResult:
    """Trains for up to ``hparams.epochs``, early-stopping on validation HR@``top_k`` or loss.

    Early stopping restores the best epoch's weights. The sampled loss has
    no ranking metric of its own, so there :class:`RankingValidation` ranks
    the whole catalogue for ``model`` (the core model) after each epoch.
    """
    watched = f"hr@{top_k}" if hparams.early_stopping_metric == "hr" else "loss"
    epoch_logger = EpochLogger(int(trainer.train_data.cardinality()))
    callbacks: list[keras.callbacks.Callback] = [epoch_logger]
    monitor = None
    if trainer.validation_data is not None:
        monitor = f"val_{watched}"
        if not trainer.full_softmax and watched != "loss":
            callbacks.insert(0, RankingValidation(model, examples.validation, hparams.batch_size, top_k))
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode="min" if watched == "loss" else "max",
            patience=hparams.early_stopping_patience, restore_best_weights=True))
    started = time.perf_counter()
    history_log = trainer.model.fit(trainer.train_data, validation_data=trainer.validation_data,
                                    epochs=hparams.epochs, verbose=0, callbacks=callbacks)
    train_seconds = time.perf_counter() - started
    history = {name: [float(v) for v in values] for name, values in history_log.history.items()}
    return _FitResult(history, monitor, watched == "loss", epoch_logger.epoch_seconds, train_seconds)


def _export(model: keras.Model, counted_records: list, vocabulary: list[str], hparams: NextTrackHParams,
            args: TrainArgs) -> None:
    """Counts the rules table over every training session, exports the SavedModel, keeps the checkpoint."""
    set_global_rules(model, counted_records, vocabulary, hparams)
    os.makedirs(args.model_dir, exist_ok=True)
    export_saved_model(model, vocabulary, hparams, args.serving_dir)
    warm_start.save_checkpoint(model, args.model_dir, vocabulary, hparams.to_dict())


def _training_metrics(fitted: _FitResult, trainer: _Trainer, examples: _TrainingExamples, n_tracks: int,
                      top_k: int, hparams: NextTrackHParams, args: TrainArgs,
                      checkpoint: warm_start.Checkpoint | None) -> dict:
    """The ``train_metrics.json`` of the run (keys: see :func:`run_fn`)."""
    history, monitor = fitted.history, fitted.monitor
    kept = (best_epoch(history.get(monitor, []), fitted.lower_is_better) if monitor
            else len(fitted.epoch_seconds))

    def at_kept_epoch(prefix: str) -> dict[str, float]:
        # restore_best_weights kept that epoch's weights: these are the exported model's figures.
        return {name[len(prefix):]: values[kept - 1] for name, values in history.items()
                if name.startswith(prefix) and (prefix or not name.startswith("val_")) and kept}

    return {
        "train": at_kept_epoch(""),
        "validation": at_kept_epoch("val_") if monitor else None,
        "history": history,
        "epoch_seconds": fitted.epoch_seconds,
        "train_seconds": fitted.train_seconds,
        "epochs_run": len(fitted.epoch_seconds),
        "best_epoch": kept,
        "steps_per_epoch": int(trainer.train_data.cardinality()),
        "examples": {"train": len(examples.train),
                     "validation": len(examples.validation) if examples.validation else 0},
        "monitor": monitor,
        "validation_source": examples.validation_source,
        "softmax": "full" if trainer.full_softmax else "sampled",
        "vocab_size": n_tracks,
        "top_k": top_k,
        "hparams": hparams.to_dict(),
        "seed": args.seed,
        "warm_started_from": args.warm_start_dir if checkpoint else None,
        "new_tracks": n_tracks - len(checkpoint.tokens) if checkpoint else None,
    }
