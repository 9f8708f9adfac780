"""Sessions TFRecords → (prefix, next track) training pairs.

Records follow the ``Sessions`` contract (docs/architecture.md): GZIP TFRecords
of ``tf.train.SequenceExample`` with context ``user_id``, ``session_id``,
``start_time`` and feature lists ``track_key`` and ``timestamp``.
"""
from __future__ import annotations

import os
from typing import Iterator, Sequence

import tensorflow as tf

from musicrec.models.next_track.model import NUM_RESERVED_IDS, PADDING_ID, make_track_lookup

VOCAB_FILENAME = "vocab.txt"
SHUFFLE_BUFFER = 100_000

_CONTEXT_FEATURES = {
    "user_id": tf.io.FixedLenFeature([], tf.string),
    "session_id": tf.io.FixedLenFeature([], tf.string),
    "start_time": tf.io.FixedLenFeature([], tf.int64),
}
_SEQUENCE_FEATURES = {
    "track_key": tf.io.FixedLenSequenceFeature([], tf.string),
    "timestamp": tf.io.FixedLenSequenceFeature([], tf.int64),
}


def read_vocabulary(examples_dir: str) -> list[str]:
    """Track keys of ``<examples_dir>/vocab.txt``, most frequent first (blank lines ignored)."""
    path = os.path.join(examples_dir, VOCAB_FILENAME)
    with tf.io.gfile.GFile(path) as handle:
        vocabulary = [line.rstrip("\n") for line in handle]
    vocabulary = [key for key in vocabulary if key]
    if not vocabulary:
        raise ValueError(f"{path} holds no track keys")
    return vocabulary


def parse_session(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """One serialized SequenceExample → ``{user_id, session_id, start_time, track_key [plays], timestamp [plays]}``."""
    context, sequence = tf.io.parse_single_sequence_example(
        serialized, context_features=_CONTEXT_FEATURES, sequence_features=_SEQUENCE_FEATURES)
    return {**context, **sequence}


def session_dataset(files: Sequence[str]) -> tf.data.Dataset:
    """Parsed sessions of GZIP TFRecord ``files``, in file order."""
    return (tf.data.TFRecordDataset(list(files), compression_type="GZIP")
            .map(parse_session, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def read_sessions(files: Sequence[str]) -> Iterator[list[str]]:
    """Yields each session's track keys (``str``, play order) from GZIP TFRecord ``files``."""
    for session in session_dataset(files):
        yield [key.decode("utf-8") for key in session["track_key"].numpy()]


def training_pairs(plays: tf.Tensor, max_prefix_length: int,
                   padding: int | str = PADDING_ID) -> tuple[tf.Tensor, tf.Tensor]:
    """Every (prefix, next play) pair of one session.

    For a session of ``L`` plays and each position ``i`` in ``1 .. L-1``: the
    prefix is ``plays[max(0, i - max_prefix_length):i]`` (the most recent plays),
    right-padded with ``padding`` to ``max_prefix_length``; the target is
    ``plays[i]``. Works on ids (pad 0) and on keys (pad ``""``).

    Args:
        plays: ``[L]`` ids or keys of one session.
        max_prefix_length: ``T``, plays a prefix keeps.
        padding: the padding value, of ``plays``' dtype.

    Returns:
        prefixes ``[L-1, T]`` and targets ``[L-1]`` (empty when ``L < 2``).
    """
    plays = tf.convert_to_tensor(plays)
    num_plays = tf.shape(plays, out_type=tf.int64)[0]
    positions = tf.range(1, tf.maximum(num_plays, 1), dtype=tf.int64)  # [L-1]
    starts = tf.maximum(positions - max_prefix_length, 0)
    lengths = positions - starts
    slots = tf.range(max_prefix_length, dtype=tf.int64)  # [T]
    valid = slots[None, :] < lengths[:, None]  # [L-1, T]
    # Clamped so the gather stays in range; invalid slots are replaced by padding.
    indices = tf.minimum(starts[:, None] + slots[None, :], tf.maximum(num_plays - 1, 0))
    prefixes = tf.where(valid, tf.gather(plays, indices),
                        tf.constant(padding, dtype=plays.dtype))
    return prefixes, tf.gather(plays, positions)


def pairs_dataset(files: Sequence[str], vocabulary: Sequence[str], max_prefix_length: int,
                  batch_size: int, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Batches of ``(prefix ids int64 [b, T], target id int64 [b])`` from Sessions files.

    Keys map to ids with :func:`make_track_lookup`, the lookup the serving
    graph uses. Pairs whose target is out of the vocabulary are dropped: the
    model's output layer spans only the vocabulary, so it cannot learn to
    predict such a track (an OOV play inside a prefix is kept as id 1).
    Pairs are cached in memory; one counting pass fills the cache and gives
    the dataset a known cardinality, so Keras knows the steps per epoch.
    """
    lookup = make_track_lookup(vocabulary)

    def session_pairs(session):
        ids = lookup(session["track_key"])
        return tf.data.Dataset.from_tensor_slices(training_pairs(ids, max_prefix_length))

    # Out-of-vocabulary targets (id 1, or 0 for an empty key) are dropped: the
    # model cannot predict tracks outside the vocabulary, so they teach it nothing.
    pairs = (session_dataset(files)
             .flat_map(session_pairs)
             .filter(lambda prefix, target: target >= NUM_RESERVED_IDS)
             .cache())
    num_pairs = pairs.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1)
    pairs = pairs.apply(tf.data.experimental.assert_cardinality(num_pairs))
    if shuffle:
        pairs = pairs.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    return pairs.batch(batch_size).prefetch(tf.data.AUTOTUNE)
