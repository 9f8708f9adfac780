"""Reading ``AudioExamples`` TFRecords for the genre model.

The record format is the ``Audio examples`` contract in
``docs/architecture.md``: GZIP TFRecords of ``tf.train.Example`` with a
row-major ``log_mel`` float list of ``frames * n_mels`` values.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from musicrec.models.genre.layers import PADDING_VALUE
from musicrec.models.genre_baseline import BASELINE_FEATURE

LABELS_FILE = "labels.txt"
_SHUFFLE_BUFFER = 2048

_FEATURES = {
    "log_mel": tf.io.FixedLenSequenceFeature([], tf.float32, allow_missing=True),
    "frames": tf.io.FixedLenFeature([], tf.int64),
    "n_mels": tf.io.FixedLenFeature([], tf.int64),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "track_id": tf.io.FixedLenFeature([], tf.string),
    # Records of the contract always hold it; hand-made ones may not (then every segment is 0).
    "segment_index": tf.io.FixedLenFeature([], tf.int64, default_value=0),
}


def read_labels(examples_dir: str) -> list[str]:
    """Genre names from ``<examples_dir>/labels.txt``; line index = label id.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: it is empty or repeats a name.
    """
    path = os.path.join(examples_dir, LABELS_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no {LABELS_FILE} in {examples_dir}")
    with tf.io.gfile.GFile(path) as handle:
        labels = [line.strip() for line in handle if line.strip()]
    if not labels:
        raise ValueError(f"{path} lists no labels")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{path} repeats a label: {labels}")
    return labels


def parse_example(serialized: tf.Tensor, n_mels: int) -> dict[str, tf.Tensor]:
    """Parses one serialized audio example.

    Args:
        serialized: scalar string tensor, a ``tf.train.Example``.
        n_mels: mel bands the model expects.

    Returns:
        ``log_mel`` float32 ``[frames, n_mels]``, ``label`` int64 ``[]``,
        ``track_id`` string ``[]`` and ``segment_index`` int64 ``[]`` (the
        segment's place in its track).

    Raises:
        tf.errors.InvalidArgumentError (when the dataset is iterated): the
        record's ``n_mels`` differs from ``n_mels``, or ``log_mel`` does not
        hold ``frames * n_mels`` values.
    """
    parsed = tf.io.parse_single_example(serialized, _FEATURES)
    values = parsed["log_mel"]
    checks = [
        tf.debugging.assert_equal(
            parsed["n_mels"], tf.constant(n_mels, tf.int64),
            message=f"audio example has a different n_mels than the model's {n_mels}"),
        tf.debugging.assert_equal(
            tf.size(values, out_type=tf.int64), parsed["frames"] * n_mels,
            message="audio example log_mel does not hold frames * n_mels values"),
    ]
    # The checks must run before the reshape, whose own error would not say why.
    with tf.control_dependencies(checks):
        log_mel = tf.reshape(values, [-1, n_mels])
    return {
        "log_mel": log_mel,
        "label": parsed["label"],
        "track_id": parsed["track_id"],
        "segment_index": parsed["segment_index"],
    }


def _records(files: Sequence[str]) -> tf.data.Dataset:
    if not files:
        raise ValueError("no TFRecord files given")
    return tf.data.TFRecordDataset(list(files), compression_type="GZIP",
                                   num_parallel_reads=tf.data.AUTOTUNE)


def parsed_dataset(files: Sequence[str], n_mels: int) -> tf.data.Dataset:
    """Unbatched parsed examples (dicts as :func:`parse_example` returns), in file order."""
    return _records(files).map(lambda record: parse_example(record, n_mels),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def make_dataset(files: Sequence[str], n_mels: int, batch_size: int, shuffle: bool,
                 seed: int | None = None,
                 augment: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]] | None = None,
                 cache: bool = False) -> tf.data.Dataset:
    """Training/validation batches ``(log_mel, label)``.

    Args:
        files: GZIP TFRecord paths.
        n_mels: mel bands per frame.
        batch_size: segments per batch; the last batch may be smaller.
        shuffle: shuffle segments (buffer of 2048, reshuffled each epoch).
        seed: shuffle seed, for a repeatable order.
        augment: a map of one unbatched ``(log_mel [frames, n_mels], label)``
            applied after shuffling and before padding, each epoch anew
            (SpecAugment, :mod:`musicrec.models.genre.augment`).
        cache: keep the parsed segments in memory after the first epoch
            (decompressing and parsing GZIP records every epoch costs more
            than a small model's step).

    Returns:
        A dataset of ``log_mel`` float32 ``[batch, frames, n_mels]`` (segments
        shorter than the longest in the batch are padded at the end with
        frames of :data:`PADDING_VALUE`, which the model masks) and ``label``
        int64 ``[batch]``.
    """
    dataset = parsed_dataset(files, n_mels).map(
        lambda example: (example["log_mel"], example["label"]))
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    if augment is not None:
        dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.padded_batch(
        batch_size, padded_shapes=([None, n_mels], []),
        padding_values=(tf.constant(PADDING_VALUE, tf.float32), tf.constant(0, tf.int64)))
    return dataset.prefetch(tf.data.AUTOTUNE)


def label_counts(files: Sequence[str], n_mels: int) -> dict[int, int]:
    """Segments per label id in ``files`` (for class weights and steps per epoch)."""
    labels = parsed_dataset(files, n_mels).map(lambda example: example["label"])
    counts: dict[int, int] = {}
    for batch in labels.batch(4096).as_numpy_iterator():
        for label, count in zip(*np.unique(batch, return_counts=True)):
            counts[int(label)] = counts.get(int(label), 0) + int(count)
    return counts


def iterate_segments(files: Sequence[str], n_mels: int) -> Iterator[tuple[np.ndarray, int, str]]:
    """Yields every segment as ``(log_mel, label, track_id)`` for evaluation.

    ``log_mel`` is float32 ``[frames, n_mels]`` (raw, unpadded), ``label``
    the label id and ``track_id`` the decoded track id.
    """
    for log_mel, label, track_id, _index in iterate_indexed_segments(files, n_mels):
        yield log_mel, label, track_id


def stored_baseline_vectors(files: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, int]] | None:
    """The classical-baseline clip vectors ingestion stored with the tracks' segments.

    Returns:
        ``({track_id: float32 [56]}, {track_id: label})``, or ``None`` when
        any segment has no vector (examples ingested without them).

    Raises:
        ValueError: no segments, or a track whose segments disagree on the vector.
    """
    spec = {"track_id": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
            BASELINE_FEATURE: tf.io.VarLenFeature(tf.float32)}

    def parse(record):
        parsed = tf.io.parse_single_example(record, spec)
        return {**parsed, BASELINE_FEATURE: tf.sparse.to_dense(parsed[BASELINE_FEATURE])}

    records = _records(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    vectors: dict[str, np.ndarray] = {}
    labels: dict[str, int] = {}
    for example in records.as_numpy_iterator():
        vector = example[BASELINE_FEATURE]
        if vector.size == 0:
            return None
        track_id = example["track_id"].decode("utf-8")
        if track_id in vectors and not np.array_equal(vectors[track_id], vector):
            raise ValueError(f"track {track_id!r}: its segments hold different {BASELINE_FEATURE}")
        vectors[track_id], labels[track_id] = vector, int(example["label"])
    if not vectors:
        raise ValueError(f"no segments in {list(files)}")
    return vectors, labels


def iterate_indexed_segments(files: Sequence[str], n_mels: int
                             ) -> Iterator[tuple[np.ndarray, int, str, int]]:
    """:func:`iterate_segments` with each segment's ``segment_index`` last.

    Segments come in file order, which need not be track order: ingestion
    spreads a track's segments over the shards.
    """
    for example in parsed_dataset(files, n_mels).as_numpy_iterator():
        yield (example["log_mel"], int(example["label"]), example["track_id"].decode("utf-8"),
               int(example["segment_index"]))


__all__ = ["LABELS_FILE", "read_labels", "parse_example", "parsed_dataset", "make_dataset",
           "label_counts", "iterate_segments", "iterate_indexed_segments", "stored_baseline_vectors"]
