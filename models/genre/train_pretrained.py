"""Trains the clip head on the pretrained front end and exports the whole model (``frontend: musicnn_msd``).

:func:`run_fn` (the genre ``run_fn`` hands over to it, see
:mod:`musicrec.models.genre.train`):

1. runs the frozen front end once over every training and validation
   segment (:func:`cache_patch_features`; progress in the log), grouping the
   patch features by track in segment order;
2. fixes the head's two standardisations on the training clips, fits the
   linear probe on them (``linear_share``) and trains the head
   (:func:`fit_head`: class weights, label smoothing, random patch runs,
   AdamW with gradient clipping, early stopping on the validation loss, or
   on the training loss without a validation split);
3. exports front end and head as one SavedModel with the ``genre``
   signatures (:mod:`musicrec.models.genre.signatures`) and its feature
   parameters, keeps the head's weights for warm starts, and writes
   ``train_metrics.json`` and the training curves.
"""
from __future__ import annotations

import logging
import time
import warnings
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from musicrec.models import warm_start
from musicrec.models.export import export_serving_model
from musicrec.models.genre import musicnn
from musicrec.models.genre.data import parsed_dataset, read_labels
from musicrec.models.genre.linear_probe import fit_linear_probe
from musicrec.models.genre.losses import balanced_class_weights
from musicrec.models.genre.pretrained import (PretrainedHParams, build_clip_head, clip_statistics,
                                              compile_for_training, fixed_normalization, pad_clips,
                                              probe_statistics)
from musicrec.models.genre.signatures import (OUTPUTS, GenreSignatures, PretrainedClipModel,
                                              check_waveform_signature)
from musicrec.models.genre.training_log import EpochLogger, tensorboard_callback, write_training_report
from musicrec.models.train_args import TrainArgs

logger = logging.getLogger(__name__)

FRONTEND = "musicnn_msd"
# Patches per front-end call while caching: large enough to keep both cores busy.
CACHE_BATCH = 32
PROGRESS_SECONDS = 30.0
# Hyperparameters that change the head's weight shapes: a checkpoint must share them.
SHAPE_HPARAMS = ("frontend", "recurrent", "recurrent_units", "bidirectional", "embedding_dim",
                 "finetune_penultimate", "linear_share", "probe_features")


def frontend_models(hparams: PretrainedHParams) -> tuple[keras.Model, keras.layers.Layer | None]:
    """``(cache model, penultimate for the head)``.

    The cache model maps patches ``[n, 187, 96]`` to what the head reads:
    musicnn's 200-wide penultimate embedding, or when the head reads the
    1506-wide pooled features (``hparams.reads_pooled``) those, the
    penultimate block (trainable with ``finetune_penultimate``) then going
    into the head.
    """
    params = musicnn.FEATURE_PARAMS
    patches = keras.Input(shape=(musicnn.PATCH_FRAMES, params.n_mels), name="patches")
    pooled = musicnn.MusicnnFrontEnd(name="musicnn_frontend")(patches)
    if hparams.reads_pooled:
        penultimate = musicnn.MusicnnPenultimate(trainable_dense=hparams.finetune_penultimate,
                                                 name="musicnn_penultimate")
        return keras.Model(patches, pooled, name="musicnn_msd_pooled"), penultimate
    features = musicnn.MusicnnPenultimate(name="musicnn_penultimate")(pooled)
    return keras.Model(patches, features, name="musicnn_msd"), None


def cache_patch_features(files: Sequence[str], cache_model: keras.Model, split: str = "train"
                         ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The cache model's output for every segment of ``files``, grouped by track.

    Returns:
        ``({track_id: float32 [segments, width] in segment order}, {track_id: label})``.

    Raises:
        ValueError: a track's segments disagree on the label.
    """
    n_mels = musicnn.FEATURE_PARAMS.n_mels
    run = tf.function(lambda x: cache_model(x, training=False), input_signature=[
        tf.TensorSpec([None, musicnn.PATCH_FRAMES, n_mels], tf.float32)])
    batches = (parsed_dataset(list(files), n_mels)
               .map(lambda e: (e["log_mel"], e["label"], e["track_id"], e["segment_index"]))
               .batch(CACHE_BATCH).prefetch(1))
    parts: dict[str, list[tuple[int, np.ndarray]]] = {}
    labels: dict[str, int] = {}
    done, started, last_log = 0, time.perf_counter(), time.perf_counter()
    for log_mel, label, track_id, index in batches.as_numpy_iterator():
        features = run(tf.constant(log_mel)).numpy()
        for row in range(features.shape[0]):
            track = track_id[row].decode("utf-8")
            if labels.setdefault(track, int(label[row])) != int(label[row]):
                raise ValueError(f"track {track!r} has segments labelled {labels[track]} and "
                                 f"{int(label[row])}")
            parts.setdefault(track, []).append((int(index[row]), features[row]))
        done += features.shape[0]
        if time.perf_counter() - last_log > PROGRESS_SECONDS:
            last_log = time.perf_counter()
            logger.info("genre front end (%s split): %d segments of %d tracks in %.0f s", split,
                        done, len(parts), last_log - started)
    logger.info("genre front end (%s split): %d segments of %d tracks in %.1f s", split, done,
                len(parts), time.perf_counter() - started)
    return ({track: np.stack([f for _, f in sorted(items, key=lambda item: item[0])])
             for track, items in parts.items()}, labels)


def _dataset(features: list[np.ndarray], labels: np.ndarray, weights: np.ndarray,
             batch_size: int, shuffle: bool, seed: int, crop_min_patches: int = 0
             ) -> tf.data.Dataset:
    """``({"patch_features", "patch_mask"}, label, weight)`` batches; optional random patch runs."""
    padded, mask = pad_clips(features)
    lengths = mask.sum(axis=1).astype(np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((padded, lengths, labels.astype(np.int64),
                                                  weights.astype(np.float32)))
    if shuffle:
        dataset = dataset.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    slots = padded.shape[1]

    def to_inputs(clip, length, label, weight):
        keep = length
        if crop_min_patches > 0:
            # A run of consecutive patches, [min(crop, length), length] long, starting anywhere.
            shortest = tf.minimum(crop_min_patches, length)
            keep = tf.random.uniform([], shortest, length + 1, dtype=tf.int32, seed=seed)
            start = tf.random.uniform([], 0, length - keep + 1, dtype=tf.int32, seed=seed + 1)
            clip = tf.roll(clip, -start, axis=0)
        patch_mask = tf.range(slots) < keep
        return {"patch_features": clip, "patch_mask": patch_mask}, label, weight

    return dataset.map(to_inputs).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def fit_head(train_features: list[np.ndarray], train_labels: Sequence[int],
             n_classes: int, hparams: PretrainedHParams, seed: int = 0,
             eval_features: list[np.ndarray] | None = None,
             eval_labels: Sequence[int] | None = None,
             penultimate: keras.layers.Layer | None = None,
             callbacks: Sequence[keras.callbacks.Callback] = (),
             warm_start_weights: str | None = None) -> tuple[keras.Model, dict[str, list[float]], str]:
    """Builds and trains the clip head on cached patch features.

    Args:
        train_features: one ``[patches, width]`` array per training clip.
        train_labels: their label ids.
        n_classes: genres.
        hparams: head settings.
        seed: weight initialisation, shuffling and patch runs.
        eval_features, eval_labels: validation clips (early stopping); none:
            early stopping watches the training loss.
        penultimate: musicnn's penultimate block, when the head reads the
            pooled features (``hparams.reads_pooled``; they are then 1506-wide).
        callbacks: more Keras callbacks (logging, TensorBoard).
        warm_start_weights: a head weights file to start from.

    Returns:
        ``(head, history, monitor)``: the trained head (:func:`build_clip_head`,
        the best epoch's weights), per-epoch metric lists and the metric
        early stopping watched (``val_loss`` or ``loss``).
    """
    keras.utils.set_random_seed(seed)
    embeddings = ([np.asarray(penultimate(clip)) for clip in train_features]
                  if penultimate is not None else train_features)
    patch_normalization = fixed_normalization(np.concatenate(embeddings, axis=0),
                                              "patch_normalization")
    statistics_normalization = fixed_normalization(clip_statistics(embeddings),
                                                   "statistics_normalization")
    labels = np.asarray(train_labels)
    probe = probe_normalization = None
    if hparams.linear_share > 0:
        probe_inputs = probe_statistics(embeddings, train_features if penultimate is not None else None,
                                        hparams)
        probe_normalization = fixed_normalization(probe_inputs, "probe_normalization")
        probe = fit_linear_probe(np.asarray(probe_normalization(probe_inputs)), labels, n_classes,
                                 hparams.class_weights)
    head = build_clip_head(int(train_features[0].shape[1]), n_classes, hparams,
                           patch_normalization, statistics_normalization, penultimate, probe,
                           probe_normalization)
    if warm_start_weights:
        head.load_weights(warm_start_weights)
        if probe is not None:   # the probe is refit on the new clips, as the standardisations are
            head.get_layer("linear_probe").set_weights(list(probe))
    model = compile_for_training(head, hparams)

    counts = {label: int(np.sum(labels == label)) for label in range(n_classes)}
    class_weights = balanced_class_weights(counts, n_classes) if hparams.class_weights else None
    weights = (np.array([class_weights[label] for label in labels]) if class_weights
               else np.ones(len(labels)))
    train_data = _dataset(train_features, labels, weights, hparams.batch_size, shuffle=True,
                          seed=seed, crop_min_patches=hparams.crop_min_patches)
    eval_data, monitor = None, "loss"
    if eval_features:
        eval_data = _dataset(eval_features, np.asarray(eval_labels), np.ones(len(eval_features)),
                             hparams.batch_size, shuffle=False, seed=seed)
        monitor = "val_loss"
    stopping = keras.callbacks.EarlyStopping(monitor=monitor,
                                             patience=hparams.early_stopping_patience,
                                             restore_best_weights=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        # Keras 3 compares the dict tf.data yields with its flattened input list and warns,
        # though it maps the inputs by name correctly.
        warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
        history = model.fit(train_data, validation_data=eval_data, epochs=hparams.epochs,
                            callbacks=[stopping, *callbacks], verbose=0)
    return head, {name: [float(v) for v in values] for name, values in history.history.items()}, monitor


def _features_of(tracks: dict[str, np.ndarray], labels: dict[str, int]
                 ) -> tuple[list[np.ndarray], list[int]]:
    ids = sorted(tracks)
    return [tracks[t] for t in ids], [labels[t] for t in ids]


def run_fn(args: TrainArgs) -> dict[str, Any]:
    """Trains, exports and checks the genre model on the pretrained front end.

    Args:
        args: as for :func:`musicrec.models.genre.train.run_fn`;
            ``hparams`` are :class:`PretrainedHParams`' and
            ``feature_params``, when given, must be the front end's own
            (:data:`musicrec.models.genre.musicnn.FEATURE_PARAMS`).

    Returns:
        The metrics written to ``<model_dir>/train_metrics.json``: those of
        the log-mel ``run_fn`` (``history``, ``monitor``, ``best_epoch``,
        ``best``, ``epochs_run``, ``epoch_seconds``, ``fit_seconds``,
        ``hparams``, ``labels``, ``class_weights``, ``train_segments``,
        ``serving_dir``, ``warm_started_from``) plus ``frontend``,
        ``train_tracks`` and ``feature_cache_seconds`` (the front end's run
        over the training and validation segments).

    Raises:
        ValueError: bad hparams, no training files, no labels, or feature
            parameters other than the front end's.
        musicnn.CheckpointMissing: the musicnn wheel is not installed.
        RuntimeError: the exported SavedModel breaks the signature contract.
    """
    hparams = PretrainedHParams.from_dict(args.hparams)
    params = musicnn.FEATURE_PARAMS
    if args.feature_params is not None and args.feature_params != params:
        raise ValueError(f"the {FRONTEND} front end reads its own features ({params}); the "
                         f"examples were made with {args.feature_params}")
    if not args.train_files:
        raise ValueError("genre run_fn: no training files")
    keras.utils.set_random_seed(args.seed)
    labels = read_labels(args.examples_dir)
    logger.info("genre training (%s front end): %d train files, %d eval files, %d labels, "
                "hparams %s", FRONTEND, len(args.train_files), len(args.eval_files), len(labels),
                hparams.to_dict())

    cache_model, penultimate = frontend_models(hparams)
    started = time.perf_counter()
    train_tracks, train_labels = _features_of(*cache_patch_features(args.train_files, cache_model))
    eval_tracks, eval_labels = (_features_of(*cache_patch_features(args.eval_files, cache_model,
                                                                   "eval"))
                                if args.eval_files else ([], []))
    cache_seconds = time.perf_counter() - started
    if not train_tracks:
        raise ValueError("genre run_fn: the training files hold no segments")

    checkpoint_hparams = {"frontend": FRONTEND, **hparams.to_dict()}
    checkpoint = warm_start.load_checkpoint(args.warm_start_dir)
    if checkpoint and (checkpoint.tokens != labels or warm_start.shape_mismatch(
            checkpoint, checkpoint_hparams, SHAPE_HPARAMS)):
        logger.warning("genre warm start skipped: the labels or %s differ from the checkpoint's",
                       SHAPE_HPARAMS)
        checkpoint = None
    epoch_logger = EpochLogger(hparams.epochs)
    fit_started = time.perf_counter()
    head, history, monitor = fit_head(
        train_tracks, train_labels, len(labels), hparams, seed=args.seed,
        eval_features=eval_tracks, eval_labels=eval_labels, penultimate=penultimate,
        callbacks=[epoch_logger, tensorboard_callback(args.model_dir)],
        warm_start_weights=checkpoint.weights_path if checkpoint else None)
    fit_seconds = time.perf_counter() - fit_started
    if checkpoint:
        logger.info("genre warm start from %s", args.warm_start_dir)

    best_index = int(np.argmin(history[monitor]))
    counts = {label: train_labels.count(label) for label in range(len(labels))}
    class_weights = balanced_class_weights(counts, len(labels)) if hparams.class_weights else None
    metrics: dict[str, Any] = {
        "frontend": FRONTEND,
        "history": history,
        "monitor": monitor,
        "best_epoch": best_index + 1,
        "best": {name: values[best_index] for name, values in history.items()},
        "final_weights": "best_epoch",
        "epochs_run": len(history[monitor]),
        "epoch_seconds": epoch_logger.epoch_seconds,
        "fit_seconds": fit_seconds,
        "feature_cache_seconds": cache_seconds,
        "hparams": hparams.to_dict(),
        "labels": labels,
        "class_weights": ({labels[k]: v for k, v in class_weights.items()}
                          if class_weights else None),
        "train_segments": int(sum(clip.shape[0] for clip in train_tracks)),
        "train_tracks": len(train_tracks),
        "serving_dir": args.serving_dir,
        "warm_started_from": args.warm_start_dir if checkpoint else None,
    }
    logger.info("genre training done (%s): best epoch %d of %d, front end %.1f s, head %.1f s, %s",
                FRONTEND, metrics["best_epoch"], metrics["epochs_run"], cache_seconds, fit_seconds,
                metrics["best"])

    track_model = PretrainedClipModel(cache_model, head, params.n_mels, musicnn.PATCH_FRAMES)
    export_serving_model(GenreSignatures(track_model, labels, params, frontend=FRONTEND),
                         args.serving_dir, inputs={"log_mel"}, outputs=OUTPUTS)
    check_waveform_signature(args.serving_dir)
    warm_start.save_checkpoint(head, args.model_dir, labels, checkpoint_hparams)
    write_training_report(history, metrics, args.model_dir)
    return metrics


__all__ = ["run_fn", "fit_head", "cache_patch_features", "frontend_models", "FRONTEND",
           "SHAPE_HPARAMS", "CACHE_BATCH"]
