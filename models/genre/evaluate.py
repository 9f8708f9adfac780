"""Evaluates an exported genre SavedModel on the test split.

The model is loaded with ``tf.saved_model.load`` and called through its
``serving_default`` signature, so the numbers describe exactly what TF
Serving will serve, label lookup included. The classical baseline
(:mod:`musicrec.models.genre_baseline`) is scored here too, on the same
split and with the same track-level scores (:func:`classification_metrics`).
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from musicrec.models.features import AudioFeatureParams
from musicrec.models.genre.data import (iterate_indexed_segments, iterate_segments, read_labels,
                                       stored_baseline_vectors)
from musicrec.models.genre.layers import PADDING_VALUE
from musicrec.models.genre.signatures import LOG_MEL_INPUT

SignatureFn = Callable[..., dict[str, tf.Tensor]]


def pad_segments(segments: Sequence[np.ndarray]) -> np.ndarray:
    """Stacks ``[frames_i, n_mels]`` segments into ``[n, max_frames, n_mels]``.

    Shorter segments are padded at the end with :data:`PADDING_VALUE`
    frames, which the log-mel models mask.
    """
    if not segments:
        raise ValueError("no segments to stack")
    longest = max(segment.shape[0] for segment in segments)
    n_mels = segments[0].shape[1]
    stacked = np.full((len(segments), longest, n_mels), PADDING_VALUE, dtype=np.float32)
    for row, segment in enumerate(segments):
        stacked[row, :segment.shape[0]] = segment
    return stacked


def stack_tracks(tracks: Sequence[np.ndarray | Sequence[np.ndarray]]) -> np.ndarray:
    """Tracks' segments as one ``serving_default`` input ``[tracks, max_segments, max_frames, n_mels]``.

    Each track is ``[n_i, frames, n_mels]`` or a list of ``[frames_i,
    n_mels]``; a track with fewer segments gets whole segments of
    :data:`PADDING_VALUE`, which the model leaves out, and shorter segments
    padding frames (see :mod:`musicrec.models.genre.signatures`).
    """
    if not tracks or any(len(track) == 0 for track in tracks):
        raise ValueError("every track needs at least one segment")
    padded = [pad_segments(list(track)) for track in tracks]
    frames = max(track.shape[1] for track in padded)
    stacked = np.full((len(padded), max(len(track) for track in padded), frames,
                       padded[0].shape[2]), PADDING_VALUE, dtype=np.float32)
    for row, track in enumerate(padded):
        stacked[row, :track.shape[0], :track.shape[1]] = track
    return stacked


def predict_tracks(signature_fn: SignatureFn, tracks: Sequence[np.ndarray | Sequence[np.ndarray]],
                   batch_size: int = 8, outputs: Sequence[str] = ("probabilities",)
                   ) -> dict[str, np.ndarray]:
    """Track-level outputs of the genre ``serving_default`` signature, ``batch_size`` tracks per call.

    Args:
        signature_fn: the SavedModel's ``serving_default`` signature.
        tracks: each track's raw log-mel segments (see :func:`stack_tracks`).
        batch_size: tracks per signature call.
        outputs: the outputs to return.

    Returns:
        ``{output: array [n_tracks, ...]}``.
    """
    parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    for start in range(0, len(tracks), batch_size):
        answer = signature_fn(log_mel=tf.constant(stack_tracks(tracks[start:start + batch_size])))
        for name in outputs:
            parts[name].append(answer[name].numpy())
    return {name: np.concatenate(values, axis=0) for name, values in parts.items()}


def predict_track(signature_fn: SignatureFn, segments: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """One track's genre probabilities ``[n_genres]`` from its raw log-mel segments."""
    return predict_tracks(signature_fn, [segments])["probabilities"][0]


def predict_segments(signature_fn: SignatureFn, segments: np.ndarray | Sequence[np.ndarray],
                     batch_size: int = 64) -> np.ndarray:
    """Genre probabilities of each segment on its own (a one-segment track): ``[n, n_genres]``."""
    if len(segments) == 0:
        raise ValueError("no segments to predict")
    return predict_tracks(signature_fn, [[segment] for segment in segments],
                          batch_size)["probabilities"]


def classification_metrics(true_labels: Sequence[int], predicted: Sequence[int],
                           labels: Sequence[str]) -> dict[str, Any]:
    """Track-level scores shared by the Keras model and the classical baseline.

    Args:
        true_labels: label id per track.
        predicted: predicted label id per track, same order.
        labels: genre names, index = label id.

    Returns:
        ``accuracy``; ``macro_f1`` (mean F1 over the genres present in
        ``true_labels``: a genre with no test track has no recall to score);
        ``per_class`` ``{genre: {"precision", "recall", "f1", "support"}}``
        (``None`` scores for a genre with no track and no prediction);
        ``confusion_matrix`` ``[n_labels][n_labels]`` counts, rows true,
        columns predicted.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        true_labels, predicted, labels=ids, zero_division=0)
    predicted_counts = Counter(predicted)
    per_class = {}
    for index, name in enumerate(labels):
        scored = support[index] or predicted_counts[index]
        per_class[name] = {
            "precision": float(precision[index]) if predicted_counts[index] else None,
            "recall": float(recall[index]) if support[index] else None,
            "f1": float(f1[index]) if scored else None,
            "support": int(support[index]),
        }
    present = [index for index in ids if support[index]]
    return {
        "accuracy": float(np.mean(np.asarray(true_labels) == np.asarray(predicted))),
        "macro_f1": float(np.mean([f1[index] for index in present])),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(true_labels, predicted, labels=ids).tolist(),
    }


CONFUSION_MATRIX_FILE = "confusion_matrix.png"


def evaluate(saved_model_dir: str, test_files: Sequence[str], examples_dir: str,
             batch_size: int = 64, output_dir: str | None = None,
             with_track_predictions: bool = False) -> dict[str, Any]:
    """Segment- and track-level scores of a served genre model.

    Args:
        saved_model_dir: the exported SavedModel.
        test_files: GZIP TFRecords of the test split.
        examples_dir: the examples artifact (``labels.txt``).
        batch_size: segments per signature call (tracks per call: an eighth of it).
        output_dir: where ``confusion_matrix.png`` goes; ``None`` writes none.
        with_track_predictions: also return ``track_predictions``, the
            predicted genre name per track id (for paired comparisons of
            models on the same tracks; off by default, as it grows with the
            test split).

    Returns:
        ``segment_accuracy`` (each segment on its own, as a one-segment
        track) and ``track_accuracy`` (the model's answer for the track's
        segments together, ``serving_default``'s per-track contract),
        ``macro_f1`` and
        ``per_class`` precision/recall/F1/support (track level, see
        :func:`classification_metrics`), ``confusion_matrix`` (track level,
        rows true, columns predicted), ``per_class_accuracy`` (track-level
        recall by genre name; ``None`` for a genre absent from the test
        split), ``chance_accuracy`` (1 / n_genres),
        ``majority_class_accuracy`` (track level: always guessing the most
        common test genre) and ``segment_majority_class_accuracy``,
        ``n_segments``, ``n_tracks``, ``tracks_per_class``, ``labels``.

    Raises:
        ValueError: no test segments, a label outside ``labels.txt``, or a
            track whose segments disagree on the label.
    """
    labels = read_labels(examples_dir)
    signature_fn = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    n_mels = int(signature_fn.structured_input_signature[1][LOG_MEL_INPUT].shape[-1])
    segments_by_track, label_by_track = read_tracks(test_files, n_mels, len(labels))

    segment_hits = 0
    segment_labels: list[int] = []
    track_ids = list(segments_by_track)
    track_labels = [label_by_track[track_id] for track_id in track_ids]
    track_probabilities = predict_tracks(signature_fn, [segments_by_track[t] for t in track_ids],
                                         max(1, batch_size // 8))["probabilities"]
    track_predictions = [int(row.argmax()) for row in track_probabilities]
    for track_id, label in zip(track_ids, track_labels):
        segments = segments_by_track[track_id]
        probabilities = predict_segments(signature_fn, segments, batch_size)
        segment_hits += int(np.sum(probabilities.argmax(axis=1) == label))
        segment_labels.extend([label] * len(segments))

    scores = classification_metrics(track_labels, track_predictions, labels)
    if output_dir is not None:
        from musicrec.models.genre.plots import save_confusion_matrix

        save_confusion_matrix(scores["confusion_matrix"], labels,
                              os.path.join(output_dir, CONFUSION_MATRIX_FILE))
    tracks_by_class = Counter(track_labels)
    n_segments, n_tracks = len(segment_labels), len(track_labels)
    result = {
        "segment_accuracy": segment_hits / n_segments,
        "track_accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
        "per_class": scores["per_class"],
        "confusion_matrix": scores["confusion_matrix"],
        "per_class_accuracy": {name: scores["per_class"][name]["recall"] for name in labels},
        "chance_accuracy": 1.0 / len(labels),
        "majority_class_accuracy": max(tracks_by_class.values()) / n_tracks,
        "segment_majority_class_accuracy":
            max(Counter(segment_labels).values()) / n_segments,
        "n_segments": n_segments,
        "n_tracks": n_tracks,
        "tracks_per_class": {name: tracks_by_class[index] for index, name in enumerate(labels)},
        "labels": labels,
    }
    if with_track_predictions:
        result["track_predictions"] = {track_id: labels[prediction] for track_id, prediction
                                       in zip(segments_by_track, track_predictions)}
    return result


BASELINE_CONFUSION_MATRIX_FILE = "baseline_confusion_matrix.png"


def _clip_features(files: Sequence[str], params: AudioFeatureParams) -> tuple[np.ndarray, np.ndarray]:
    """Classical clip vectors from log-mel segments: ``(features [tracks, 56], labels [tracks])``."""
    from musicrec.models.genre_baseline import ClipStatistics, frame_features_from_log_mel

    statistics = ClipStatistics()
    label_by_track: dict[str, int] = {}
    for log_mel, label, track_id in iterate_segments(files, params.n_mels):
        label_by_track[track_id] = label
        statistics.add(track_id, frame_features_from_log_mel(log_mel, params))
    track_ids = statistics.clip_ids()
    if not track_ids:
        raise ValueError(f"no segments in {list(files)}")
    return (np.stack([statistics.vector(t) for t in track_ids]),
            np.array([label_by_track[t] for t in track_ids]))


def _stored_clip_features(files: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The clip vectors ingestion stored, as :func:`_clip_features` returns; ``None`` if absent."""
    stored = stored_baseline_vectors(files)
    if stored is None:
        return None
    vectors, label_by_track = stored
    track_ids = sorted(vectors)
    return (np.stack([vectors[t] for t in track_ids]),
            np.array([label_by_track[t] for t in track_ids]))


def _check_labels(labels: np.ndarray, n_labels: int) -> None:
    outside = sorted({int(label) for label in labels if not 0 <= label < n_labels})
    if outside:
        raise ValueError(f"tracks have labels {outside}, outside the {n_labels} labels of labels.txt")


BASELINE_FROM_AUDIO = ("MFCC(20), spectral centroid, spectral contrast (7): mean and std per track, "
                       "from the audio at 22 050 Hz (stored at ingestion)")
BASELINE_FROM_LOG_MEL = ("MFCC(20), spectral centroid, spectral contrast (7): mean and std per "
                         "track, from the examples' log-mel segments")


def evaluate_classical_baseline(train_files: Sequence[str], test_files: Sequence[str],
                                examples_dir: str, params: AudioFeatureParams,
                                output_dir: str | None = None, seed: int = 0) -> dict[str, Any]:
    """The classical baseline (:mod:`musicrec.models.genre_baseline`) fitted on train, scored on test.

    It sees exactly the tracks and split the Keras model does. Its features
    are the clip vectors ingestion computed from the audio and stored with
    the examples (``baseline_features``) or, for examples ingested without
    them, the same quantities from the log-mel segments (the artifact has no
    audio paths); ``features`` in the result says which.

    Args:
        train_files / test_files: GZIP TFRecords of those splits.
        examples_dir: the examples artifact (``labels.txt``).
        params: the feature parameters the examples were made with.
        output_dir: where ``baseline_confusion_matrix.png`` goes; ``None`` writes none.
        seed: solver seed.

    Returns:
        ``track_accuracy``, ``macro_f1``, ``per_class``, ``confusion_matrix``
        (as :func:`classification_metrics`), ``n_train_tracks``,
        ``n_tracks``, ``features`` (what it was computed from, in words),
        ``features_from`` (``"audio"`` or ``"log_mel"``) and ``model``.
    """
    from musicrec.models.genre_baseline import ClassicalGenreBaseline

    labels = read_labels(examples_dir)
    stored_train, stored_test = _stored_clip_features(train_files), _stored_clip_features(test_files)
    from_audio = stored_train is not None and stored_test is not None
    if from_audio:
        (train_x, train_y), (test_x, test_y) = stored_train, stored_test
    else:
        train_x, train_y = _clip_features(train_files, params)
        test_x, test_y = _clip_features(test_files, params)
    _check_labels(np.concatenate([train_y, test_y]), len(labels))
    predicted = ClassicalGenreBaseline(seed=seed).fit(train_x, train_y).predict(test_x)
    scores = classification_metrics(test_y.tolist(), predicted.tolist(), labels)
    if output_dir is not None:
        from musicrec.models.genre.plots import save_confusion_matrix

        save_confusion_matrix(scores["confusion_matrix"], labels,
                              os.path.join(output_dir, BASELINE_CONFUSION_MATRIX_FILE),
                              title="classical baseline, track level")
    return {
        "track_accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
        "per_class": scores["per_class"],
        "confusion_matrix": scores["confusion_matrix"],
        "n_train_tracks": int(train_x.shape[0]),
        "n_tracks": int(test_x.shape[0]),
        "features": BASELINE_FROM_AUDIO if from_audio else BASELINE_FROM_LOG_MEL,
        "features_from": "audio" if from_audio else "log_mel",
        "model": "StandardScaler + LogisticRegression",
    }


def read_tracks(files: Sequence[str], n_mels: int, n_labels: int | None = None
                ) -> tuple[dict[str, list[np.ndarray]], dict[str, int]]:
    """Segments grouped by track, in segment order:
    ``({track_id: [log_mel [frames, n_mels], ...]}, {track_id: label})``.

    Tracks come in the order their first segment does.

    Raises:
        ValueError: no segments, a label outside ``range(n_labels)`` (when
            given), or a track whose segments disagree on the label.
    """
    indexed: dict[str, list[tuple[int, np.ndarray]]] = {}
    label_by_track: dict[str, int] = {}
    for log_mel, label, track_id, index in iterate_indexed_segments(files, n_mels):
        if n_labels is not None and not 0 <= label < n_labels:
            raise ValueError(f"track {track_id!r} has label {label}, outside the "
                             f"{n_labels} labels of labels.txt")
        if label_by_track.setdefault(track_id, label) != label:
            raise ValueError(f"track {track_id!r} has segments labelled "
                             f"{label_by_track[track_id]} and {label}")
        indexed.setdefault(track_id, []).append((index, log_mel))
    if not indexed:
        raise ValueError(f"no segments in {list(files)}")
    # Shards hold a track's segments in any order; the clip head reads them in time order.
    segments_by_track = {track_id: [segment for _, segment in sorted(parts, key=lambda p: p[0])]
                         for track_id, parts in indexed.items()}
    return segments_by_track, label_by_track


__all__ = ["evaluate", "predict_track", "predict_tracks", "predict_segments", "stack_tracks",
           "pad_segments", "classification_metrics", "read_tracks", "evaluate_classical_baseline",
           "CONFUSION_MATRIX_FILE", "BASELINE_CONFUSION_MATRIX_FILE"]
