"""Track ids and the layout of the model's input: shared by training (``data.py``) and serving.

Ids follow the ``next_track`` contract (docs/architecture.md): 0 is the padding
token ``""``, 1 the out-of-vocabulary token and ``2 + i`` the ``i``-th line of
``vocab.txt``. Inside the model only, id -1 is the boundary that separates the
listener's earlier plays from the current session; it has its own learned
vector (``layers.TrackEmbedding``) and no row in the per-track tables, so
growing the vocabulary never moves it. :func:`make_track_lookup` is the
one place that builds that mapping; training (``data.py``) and the exported
graph (``serving.py``) both use it, so the ids the model learned are the ids
it serves.

The model reads one layout of ids (see :func:`input_layout`)::

    [ earlier plays, left-padded | BOUNDARY | session plays, left-padded ]

with ``1 + max_prefix_length`` slots for the boundary and the session and
up to ``history_length`` history slots. Training feeds all of them
(``input_length``); serving feeds only as many history slots as the longest
history of the batch, so a request without history does not pay for 30 000
empty slots. Padding is masked (or weighs 0), so neither its width nor
where it sits changes the output.
"""
from __future__ import annotations

from typing import Sequence

import keras

from musicrec.models.next_track.hparams import NextTrackHParams

PADDING_TOKEN = ""
PADDING_ID = 0
OOV_ID = 1
BOUNDARY_ID = -1  # model-internal; never looked up from a key, never scored
NUM_RESERVED_IDS = 2  # padding + one OOV bucket


def make_track_lookup(vocabulary: Sequence[str], invert: bool = False,
                      name: str | None = None) -> keras.layers.StringLookup:
    """The contract's key ↔ id mapping (``""`` → 0, unknown → 1, vocabulary → 2..).

    Args:
        vocabulary: track keys, most frequent first (``vocab.txt``); must not
            contain ``""``.
        invert: map ids back to keys instead (1 becomes ``"[UNK]"``).
        name: layer name.
    """
    if PADDING_TOKEN in vocabulary:
        raise ValueError("the vocabulary must not contain the padding token ''")
    return keras.layers.StringLookup(
        vocabulary=list(vocabulary), mask_token=PADDING_TOKEN, num_oov_indices=1,
        invert=invert, name=name)


def right_aligned(ids, length: int):
    """The last ``length`` non-padding ids of each row, left-padded with 0.

    Args:
        ids: int ``[batch, width]``, each row's plays first and its padding
            (0) after them (clients pad on the right).
        length: slots of the result.

    Returns:
        int ``[batch, length]``: slot ``length - 1`` holds the row's last play.
    """
    ops = keras.ops
    plays = ops.sum(ops.cast(ops.not_equal(ids, PADDING_ID), "int32"), axis=1, keepdims=True)  # [b, 1]
    width = ops.shape(ids)[1]
    source = plays - length + ops.arange(length, dtype="int32")[None, :]  # [b, length]
    valid = ops.logical_and(source >= 0, source < width)
    # Pad one column so an empty input (width 0) still has something to gather from.
    padded = ops.pad(ids, [[0, 0], [0, 1]])
    gathered = ops.take_along_axis(padded, ops.where(valid, source, width), axis=1)
    return ops.where(valid, gathered, ops.zeros_like(gathered))


def input_layout(history_ids, session_ids, hparams: NextTrackHParams):
    """The core model's input from right-padded history and session ids.

    Args:
        history_ids: int ``[batch, h]``, each row's earlier plays, oldest first, right-padded with 0.
        session_ids: int ``[batch, s]``, each row's session so far, right-padded with 0.
        hparams: the layout's sizes.

    Returns:
        int ``[batch, w + 1 + max_prefix_length]`` with ``w`` history slots: the
        most plays any row of the batch has, at least ``rnn_history_length``
        (what the recurrent layer reads) and at most ``history_length``. Each
        row scores as it would with all ``history_length`` slots: the extra
        slots would only hold padding.
    """
    ops = keras.ops
    session = right_aligned(session_ids, hparams.max_prefix_length)
    boundary = ops.full((ops.shape(session)[0], 1), BOUNDARY_ID, dtype=session.dtype)
    if hparams.history_length == 0:
        return ops.concatenate([boundary, session], axis=1)
    history_ids = ops.cast(history_ids, session.dtype)
    most_plays = ops.max(ops.sum(ops.cast(ops.not_equal(history_ids, PADDING_ID), "int32"), axis=1),
                         initial=0)
    width = ops.clip(most_plays, hparams.rnn_history_length, hparams.history_length)
    history = right_aligned(history_ids, width)
    return ops.concatenate([history, boundary, session], axis=1)
