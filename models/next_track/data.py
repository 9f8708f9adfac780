"""Sessions TFRecords → (listener history + session prefix, next track) training examples.

Sessions are read by ``sessions.py`` (the ``Sessions`` contract, docs/architecture.md);
the listener's earlier plays come from ``history.ListeningHistory``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Sequence

import numpy as np
import tensorflow as tf

from musicrec.models.next_track.history import ListeningHistory
from musicrec.models.next_track.hparams import NextTrackHParams
from musicrec.models.next_track.layout import BOUNDARY_ID, NUM_RESERVED_IDS, OOV_ID, PADDING_ID
from musicrec.models.next_track.sessions import SessionRecord

VOCAB_FILENAME = "vocab.txt"
SHUFFLE_BUFFER = 100_000

def read_vocabulary(examples_dir: str) -> list[str]:
    """Track keys of ``<examples_dir>/vocab.txt``, most frequent first (blank lines ignored)."""
    path = os.path.join(examples_dir, VOCAB_FILENAME)
    with tf.io.gfile.GFile(path) as handle:
        vocabulary = [line.rstrip("\n") for line in handle]
    vocabulary = [key for key in vocabulary if key]
    if not vocabulary:
        raise ValueError(f"{path} holds no track keys")
    return vocabulary


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


def track_ids(vocabulary: Sequence[str]) -> dict[str, int]:
    """The contract's id of every vocabulary key (``2 + i`` for line ``i``); see ``layout.make_track_lookup``."""
    return {key: NUM_RESERVED_IDS + index for index, key in enumerate(vocabulary)}


def _right_aligned(ids: Sequence[int], length: int) -> list[int]:
    kept = list(ids)[-length:] if length else []
    return [PADDING_ID] * (length - len(kept)) + kept


@dataclasses.dataclass
class Examples:
    """(input, next play) examples whose long histories are slices of one play array.

    A history can hold thousands of plays, so rows are not stored whole:
    row ``n``'s input is ``plays[history_start[n]:history_end[n]]``
    right-aligned into ``history_length`` slots, then ``session[n]`` (the
    boundary and the right-aligned prefix). :meth:`inputs` and
    :meth:`dataset` assemble them.

    Attributes:
        plays: int32 ``[P]`` every listener's history plays, by listener then time.
        history_start, history_end: int64 ``[n]`` each row's slice of ``plays``.
        session: int32 ``[n, 1 + max_prefix_length]``.
        targets: int32 ``[n]``.
        history_length: history slots of a row.
    """

    plays: np.ndarray
    history_start: np.ndarray
    history_end: np.ndarray
    session: np.ndarray
    targets: np.ndarray
    history_length: int

    def __len__(self) -> int:
        return len(self.targets)

    def evenly_spaced(self, count: int) -> "Examples":
        """At most ``count`` rows, evenly spaced over these (rows are in session order, so the
        subset spans every listener and period); all of them when ``count`` is 0 or no fewer."""
        if count <= 0 or len(self) <= count:
            return self
        rows = np.linspace(0, len(self) - 1, count).round().astype(np.int64)
        return dataclasses.replace(self, history_start=self.history_start[rows],
                                   history_end=self.history_end[rows], session=self.session[rows],
                                   targets=self.targets[rows])

    def inputs(self) -> np.ndarray:
        """Every row's whole input, int32 ``[n, input_length]`` (for small sets and tests)."""
        positions = self.history_end[:, None] + np.arange(-self.history_length, 0)[None, :]
        plays = self.plays if len(self.plays) else np.zeros(1, np.int32)
        history = np.where(positions >= self.history_start[:, None], plays[np.maximum(positions, 0)], 0)
        return np.concatenate([history.astype(np.int32), self.session], axis=1)

    def dataset(self, batch_size: int, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
        """Batches of ``(inputs int32 [b, input_length], targets int32 [b])``, histories gathered per batch."""
        dataset = tf.data.Dataset.from_tensor_slices(
            (self.history_start, self.history_end, self.session, self.targets))
        if shuffle:
            dataset = dataset.shuffle(min(len(self), SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
        plays = tf.constant(self.plays if len(self.plays) else np.zeros(1, np.int32))
        slots = tf.range(-self.history_length, 0, dtype=tf.int64)

        def assemble(start, end, session, targets):
            positions = end[:, None] + slots[None, :]
            taken = tf.gather(plays, tf.maximum(positions, 0))
            history = tf.where(positions >= start[:, None], taken, tf.zeros_like(taken))
            return tf.concat([history, session], axis=1), targets

        return dataset.batch(batch_size).map(assemble).prefetch(tf.data.AUTOTUNE)


def build_examples(sessions: Sequence[SessionRecord], history: ListeningHistory,
                   vocabulary: Sequence[str], hparams: NextTrackHParams) -> Examples:
    """Every (input, next play) example of ``sessions``.

    For each session and each position ``i >= 1`` whose play is in the
    vocabulary, the input is the listener's last ``history_length`` plays of
    ``history`` strictly before the session's start, the boundary, and
    ``plays[:i]`` (its last ``max_prefix_length``); the target is ``plays[i]``.
    Out-of-vocabulary plays stay in inputs as the OOV id; out-of-vocabulary
    targets give no example (the output layer cannot predict them).
    """
    ids_of = track_ids(vocabulary)
    offsets: dict[str, int] = {}
    plays: list[int] = []
    for user in history.users():
        offsets[user] = len(plays)
        plays.extend(ids_of.get(key, OOV_ID) for key in history.plays_of(user))
    starts, ends, rows, targets = [], [], [], []
    for session in sessions:
        ids = [ids_of.get(key, OOV_ID) for key in session.track_keys]
        if len(ids) < 2:
            continue
        earlier = history.count_before(session.user_id, session.start_time)
        end = offsets.get(session.user_id, 0) + earlier
        start = max(offsets.get(session.user_id, 0), end - hparams.history_length)
        for position in range(1, len(ids)):
            if ids[position] >= NUM_RESERVED_IDS:
                starts.append(start)
                ends.append(end)
                rows.append([BOUNDARY_ID, *_right_aligned(ids[:position], hparams.max_prefix_length)])
                targets.append(ids[position])
    return Examples(np.array(plays, dtype=np.int32), np.array(starts, dtype=np.int64),
                    np.array(ends, dtype=np.int64),
                    np.array(rows, dtype=np.int32).reshape(len(rows), 1 + hparams.max_prefix_length),
                    np.array(targets, dtype=np.int32), hparams.history_length)


def session_hash(session_id: str) -> float:
    """A stable, uniform number in [0, 1) for a session id (samples and holdouts by session)."""
    # A cryptographic digest: CRC32 of short, similar ids ("s1", "s2", ...) is far from uniform.
    digest = hashlib.blake2b(session_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


def held_out(session_id: str, share: float) -> bool:
    """Whether a session belongs to the early-stopping holdout (a stable hash of its id)."""
    return session_hash(session_id) < share
