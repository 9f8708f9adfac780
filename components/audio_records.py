"""The audio examples' record format: one ``tf.train.Example`` per log-mel segment.

Written by :mod:`~musicrec.components.example_wire` (no TensorFlow in Beam
workers); the features are the contract's (docs/architecture.md, "Audio
examples"), and :func:`feature_spec` parses them back.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from musicrec.components import example_wire
from musicrec.components.audio_sources import AudioSource
from musicrec.models.genre_baseline import BASELINE_FEATURE


def segment_example_bytes(segment: np.ndarray, label_id: int, source: AudioSource, segment_index: int) -> bytes:
    """The serialised ``tf.train.Example`` of one ``[frames, n_mels]`` float32 log-mel segment.

    Written by :mod:`example_wire` (no TensorFlow in Beam workers); the
    features are the contract's (docs/architecture.md, "Audio examples").
    """
    return encode_segment(segment, segment_index, track_features(label_id, source))


def encode_segment(segment: np.ndarray, segment_index: int,
                    shared: Mapping[str, example_wire.EncodedFeature]) -> bytes:
    """:func:`segment_example_bytes` with the track's features already encoded (once per track)."""
    frames, n_mels = segment.shape
    return example_wire.encode_example({
        **shared,
        "log_mel": example_wire.floats(segment),
        "frames": example_wire.int64s([frames]),
        "n_mels": example_wire.int64s([n_mels]),
        "segment_index": example_wire.int64s([segment_index]),
    })


def track_features(label_id: int, source: AudioSource,
                   baseline_vector: np.ndarray | None = None) -> dict[str, example_wire.EncodedFeature]:
    """The encoded features every segment of a track shares (with ``baseline_vector``, float
    ``[56]``, as :data:`BASELINE_FEATURE`)."""
    shared = {
        "label": example_wire.int64s([label_id]),
        "genre": example_wire.byte_strings([source.genre]),
        "track_id": example_wire.byte_strings([source.track_id]),
        "artist": example_wire.byte_strings([source.artist]),
    }
    if baseline_vector is not None:
        shared[BASELINE_FEATURE] = example_wire.floats(np.asarray(baseline_vector, dtype=np.float32))
    return shared


def segment_example(segment: np.ndarray, label_id: int, source: AudioSource, segment_index: int):
    """One ``tf.train.Example`` for a ``[frames, n_mels]`` float32 log-mel segment
    (:func:`segment_example_bytes`, parsed; imports TensorFlow)."""
    import tensorflow as tf

    return tf.train.Example.FromString(segment_example_bytes(segment, label_id, source, segment_index))


def feature_spec(frames: int, n_mels: int) -> dict[str, Any]:
    """``tf.io.parse_example`` spec of the records; ``log_mel`` parses to ``[frames * n_mels]``."""
    import tensorflow as tf

    return {
        "log_mel": tf.io.FixedLenFeature([frames * n_mels], tf.float32),
        "frames": tf.io.FixedLenFeature([], tf.int64),
        "n_mels": tf.io.FixedLenFeature([], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "genre": tf.io.FixedLenFeature([], tf.string),
        "track_id": tf.io.FixedLenFeature([], tf.string),
        "artist": tf.io.FixedLenFeature([], tf.string),
        "segment_index": tf.io.FixedLenFeature([], tf.int64),
    }


__all__ = ["segment_example_bytes", "encode_segment", "track_features", "segment_example", "feature_spec"]
