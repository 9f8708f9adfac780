"""Evaluates an exported genre SavedModel on the test split.

The model is loaded with ``tf.saved_model.load`` and called through its
``serving_default`` signature, so the numbers describe exactly what TF
Serving will serve, label lookup included.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from musicrec.models.genre.data import iterate_segments, read_labels
from musicrec.models.genre.model import PADDING_VALUE

SignatureFn = Callable[..., dict[str, tf.Tensor]]


def pad_segments(segments: Sequence[np.ndarray]) -> np.ndarray:
    """Stacks ``[frames_i, n_mels]`` segments into ``[n, max_frames, n_mels]``.

    Shorter segments are padded at the end with :data:`PADDING_VALUE`
    frames, which the model masks.
    """
    if not segments:
        raise ValueError("no segments to stack")
    longest = max(segment.shape[0] for segment in segments)
    n_mels = segments[0].shape[1]
    stacked = np.full((len(segments), longest, n_mels), PADDING_VALUE, dtype=np.float32)
    for row, segment in enumerate(segments):
        stacked[row, :segment.shape[0]] = segment
    return stacked


def predict_segments(signature_fn: SignatureFn, segments: np.ndarray | Sequence[np.ndarray],
                     batch_size: int = 64) -> np.ndarray:
    """Genre probabilities of each segment, through a serving signature.

    Args:
        signature_fn: the SavedModel's ``serving_default`` signature.
        segments: raw log-mel, ``[n, frames, n_mels]`` or a list of
            ``[frames_i, n_mels]`` arrays.
        batch_size: segments per signature call.
        output_dir: where plots go (PNG); ``None`` writes none.

    Returns:
        float32 ``[n, n_genres]``.
    """
    batch = segments if isinstance(segments, np.ndarray) else pad_segments(segments)
    if batch.ndim != 3 or batch.shape[0] == 0:
        raise ValueError(f"expected segments [n > 0, frames, n_mels], got shape {batch.shape}")
    parts = [signature_fn(log_mel=tf.constant(batch[start:start + batch_size], tf.float32))
             ["probabilities"].numpy() for start in range(0, batch.shape[0], batch_size)]
    return np.concatenate(parts, axis=0)


def average_segment_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Combines a track's segment probabilities ``[n, n_genres]`` into ``[n_genres]`` (mean)."""
    return probabilities.mean(axis=0)


def predict_track(signature_fn: SignatureFn, segments: np.ndarray | Sequence[np.ndarray],
                  batch_size: int = 64) -> np.ndarray:
    """Track-level genre probabilities: the mean over its segments.

    Args:
        signature_fn: the SavedModel's ``serving_default`` signature.
        segments: the track's raw log-mel segments, ``[n, frames, n_mels]``.
        batch_size: segments per signature call.

    Returns:
        float32 ``[n_genres]``, summing to 1.
    """
    return average_segment_probabilities(predict_segments(signature_fn, segments, batch_size))


def evaluate(saved_model_dir: str, test_files: Sequence[str], examples_dir: str,
             batch_size: int = 64, output_dir: str | None = None) -> dict[str, Any]:
    """Segment- and track-level accuracy of a served genre model.

    Args:
        saved_model_dir: the exported SavedModel.
        test_files: GZIP TFRecords of the test split.
        examples_dir: the examples artifact (``labels.txt``).
        batch_size: segments per signature call.

    Returns:
        ``segment_accuracy`` and ``track_accuracy`` (a track's class is the
        argmax of its mean segment probabilities), ``per_class_accuracy``
        (track level, by genre name; ``None`` for a genre absent from the
        test split), ``chance_accuracy`` (1 / n_genres),
        ``majority_class_accuracy`` (track level: always guessing the most
        common test genre) and ``segment_majority_class_accuracy``,
        ``n_segments``, ``n_tracks``, ``tracks_per_class``, ``labels``.

    Raises:
        ValueError: no test segments, a label outside ``labels.txt``, or a
            track whose segments disagree on the label.
    """
    labels = read_labels(examples_dir)
    signature_fn = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    n_mels = int(signature_fn.structured_input_signature[1]["log_mel"].shape[-1])

    segments_by_track: dict[str, list[np.ndarray]] = {}
    label_by_track: dict[str, int] = {}
    for log_mel, label, track_id in iterate_segments(test_files, n_mels):
        if not 0 <= label < len(labels):
            raise ValueError(f"track {track_id!r} has label {label}, outside the "
                             f"{len(labels)} labels of labels.txt")
        if label_by_track.setdefault(track_id, label) != label:
            raise ValueError(f"track {track_id!r} has segments labelled "
                             f"{label_by_track[track_id]} and {label}")
        segments_by_track.setdefault(track_id, []).append(log_mel)
    if not segments_by_track:
        raise ValueError(f"no test segments in {list(test_files)}")

    segment_hits = 0
    segment_labels: list[int] = []
    track_hits_by_class: Counter[int] = Counter()
    tracks_by_class: Counter[int] = Counter()
    for track_id, segments in segments_by_track.items():
        label = label_by_track[track_id]
        probabilities = predict_segments(signature_fn, segments, batch_size)
        segment_hits += int(np.sum(probabilities.argmax(axis=1) == label))
        segment_labels.extend([label] * len(segments))
        tracks_by_class[label] += 1
        track_hits_by_class[label] += int(
            average_segment_probabilities(probabilities).argmax() == label)

    n_segments, n_tracks = len(segment_labels), len(segments_by_track)
    return {
        "segment_accuracy": segment_hits / n_segments,
        "track_accuracy": sum(track_hits_by_class.values()) / n_tracks,
        "per_class_accuracy": {
            name: (track_hits_by_class[index] / tracks_by_class[index]
                   if tracks_by_class[index] else None)
            for index, name in enumerate(labels)},
        "chance_accuracy": 1.0 / len(labels),
        "majority_class_accuracy": max(tracks_by_class.values()) / n_tracks,
        "segment_majority_class_accuracy":
            max(Counter(segment_labels).values()) / n_segments,
        "n_segments": n_segments,
        "n_tracks": n_tracks,
        "tracks_per_class": {name: tracks_by_class[index] for index, name in enumerate(labels)},
        "labels": labels,
    }


__all__ = ["evaluate", "predict_track", "predict_segments", "average_segment_probabilities",
           "pad_segments"]
