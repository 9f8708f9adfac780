"""Reading the ``Sessions`` contract: GZIP TFRecords of listening sessions (docs/architecture.md).

Each record is a ``tf.train.SequenceExample`` with context ``user_id``,
``session_id``, ``start_time`` and feature lists ``track_key`` and
``timestamp``. Training (``data.py``), the listening history (``history.py``)
and evaluation all read sessions through this module.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import tensorflow as tf

_CONTEXT_FEATURES = {
    "user_id": tf.io.FixedLenFeature([], tf.string),
    "session_id": tf.io.FixedLenFeature([], tf.string),
    "start_time": tf.io.FixedLenFeature([], tf.int64),
}
_SEQUENCE_FEATURES = {
    "track_key": tf.io.FixedLenSequenceFeature([], tf.string),
    "timestamp": tf.io.FixedLenSequenceFeature([], tf.int64),
}


def parse_session(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """One serialized SequenceExample → ``{user_id, session_id, start_time, track_key [plays], timestamp [plays]}``."""
    context, sequence = tf.io.parse_single_sequence_example(
        serialized, context_features=_CONTEXT_FEATURES, sequence_features=_SEQUENCE_FEATURES)
    return {**context, **sequence}


def session_dataset(files: Sequence[str]) -> tf.data.Dataset:
    """Parsed sessions of GZIP TFRecord ``files``, in file order."""
    return (tf.data.TFRecordDataset(list(files), compression_type="GZIP")
            .map(parse_session, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


@dataclasses.dataclass(frozen=True)
class SessionRecord:
    """One ``Sessions`` record (docs/architecture.md).

    Attributes:
        user_id: the listener.
        session_id: stable id of the session.
        start_time: Unix seconds of the first play.
        track_keys: ``[plays]`` track keys in play order.
        timestamps: ``[plays]`` Unix seconds.
    """

    user_id: str
    session_id: str
    start_time: int
    track_keys: tuple[str, ...]
    timestamps: tuple[int, ...]


def read_session_records(files: Sequence[str]) -> list[SessionRecord]:
    """Every session of GZIP TFRecord ``files`` (``Sessions`` contract), in file order."""
    records = []
    for session in session_dataset(files):
        records.append(SessionRecord(
            user_id=session["user_id"].numpy().decode("utf-8"),
            session_id=session["session_id"].numpy().decode("utf-8"),
            start_time=int(session["start_time"].numpy()),
            track_keys=tuple(key.decode("utf-8") for key in session["track_key"].numpy()),
            timestamps=tuple(int(t) for t in session["timestamp"].numpy())))
    return records
