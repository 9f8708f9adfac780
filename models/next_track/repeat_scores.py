"""The learned repeat and successor terms (:class:`RepeatScores`, layer ``repeat_scores``) and
the recency buckets the listener's slots fall in (shared with ``candidates.py``)."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from musicrec.models.next_track.layout import PADDING_ID


RECENCY_BUCKETS = 16  # log2 distance buckets per segment (history, session)


def recency_buckets(history_length: int, slots: int) -> np.ndarray:
    """Bucket of each slot ``[slots]``: ``floor(log2(1 + distance from the end))``, capped, and
    shifted by :data:`RECENCY_BUCKETS` for history slots, so weights scale to long histories."""
    distance = np.arange(slots - 1, -1, -1)
    bucket = np.minimum(np.floor(np.log2(1 + distance)).astype(np.int32), RECENCY_BUCKETS - 1)
    return np.where(np.arange(slots) < history_length, bucket + RECENCY_BUCKETS, bucket).astype(np.int32)


SUCCESSOR_CHANNELS = 2  # evidence from the last play; evidence from the anchors before it


@keras.saving.register_keras_serializable(package="musicrec")
class RepeatScores(keras.layers.Layer):
    """Adds learned scores to tracks found in the input and to what followed them (repeat listening).

    Every slot falls in a recency bucket (:func:`recency_buckets`: log2 of
    its distance from the end, history and session apart). Both terms are
    added onto the logits with ``TensorScatterAdd`` (a core op) at
    ``O(batch × slots)`` cost beyond the one pass over the logits, with no
    catalogue-sized temporaries:

    - repeat: ``logits[b, ids[b, s]] += state[b] · kernel[:, bucket(s)] +
      bias[bucket(s)]`` for every play slot ``s``; a track in several slots
      collects all their weights.
    - successor (``successor_lags = L > 0``), a learned, personal form of
      sequential rules: wherever slot ``s`` (before the anchor itself) holds
      one of the session's last ``successor_anchors = A`` plays (anchor
      ``a``: 0 the last play, 1 the one before, ...), the track ``lag``
      slots later (``lag`` = 1..L) gathers the evidence ``1 / ((1 + a) · lag)``,
      the rule-based weighting. Two channels of evidence per track,
      ``E[b, t, c] >= 0`` (``c = 0``: the last play as anchor; ``c = 1``:
      the anchors before it), enter the logits as
      ``Σ_c gate[b, c] · E[b, t, c] + gate[b, 2 + c] · log(1 + E[b, t, c])``
      with ``gate = state · gate_kernel + gate_bias``: the session decides
      how much the listener's own habits count. The evidence has no weights
      of its own, so it costs no backpropagation over the (long) history.
      What the listener played right after these tracks before (album and
      playlist replays) is the strongest signal in music sessions.

    The input's width may vary from call to call (``session_slots`` given):
    the slots are counted from the end, and the missing oldest history slots
    would only have held padding, which weighs nothing.
    """

    def __init__(self, history_length: int, successor_lags: int = 0, successor_anchors: int = 1,
                 repeat_history_length: int | None = None, session_slots: int | None = None,
                 successor_recent_slots: int = 0, predecessor_lags: int = 0, state_gates: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.history_length = history_length
        # Off: the weights of the terms do not depend on the session (their kernels stay 0).
        self.state_gates = state_gates
        self.successor_recent_slots = successor_recent_slots
        self.predecessor_lags = predecessor_lags
        # Evidence channels: anchor group (last play, the ones before), then optionally whether
        # the match is recent, then optionally followers or predecessors.
        self.channels = (SUCCESSOR_CHANNELS * (2 if successor_recent_slots else 1)
                         * (2 if predecessor_lags else 1))
        # With a variable-width input (serving), the slots after the history are known only from here.
        self.session_slots = session_slots
        self.successor_lags = successor_lags
        self.successor_anchors = successor_anchors
        self.repeat_history_length = (history_length if repeat_history_length is None
                                      else min(repeat_history_length, history_length))

    def build(self, input_shapes):
        _, ids_shape, state_shape = input_shapes
        slots, units = ids_shape[-1], state_shape[-1]
        if self.session_slots is None and slots is None:
            raise ValueError("RepeatScores over a variable number of slots needs session_slots")
        session_slots = self.session_slots or slots - self.history_length
        # Anchors are session plays (the slot before them is the boundary); an input is never
        # narrower than its session part.
        self.anchors = min(self.successor_anchors, session_slots - 1)
        # The repeat term reads the last repeat_history_length history slots, the boundary and the session.
        self.repeat_slots = session_slots + self.repeat_history_length
        self.buckets = recency_buckets(self.repeat_history_length, self.repeat_slots)
        n_buckets = 2 * RECENCY_BUCKETS
        self.kernel = self.add_weight(shape=(units, n_buckets), initializer="zeros", name="kernel",
                                      trainable=self.state_gates)
        self.bucket_bias = self.add_weight(shape=(n_buckets,), initializer="zeros", name="bucket_bias")
        if self.successor_lags:
            self.gate_kernel = self.add_weight(shape=(units, 2 * self.channels), initializer="zeros",
                                               name="gate_kernel", trainable=self.state_gates)
            # Starts as log(1 + E) (the last play's evidence weighing most): the rule's ranking,
            # on a scale the softmax tolerates.
            start = np.tile(np.array([1.0, 0.5], np.float32), self.channels // SUCCESSOR_CHANNELS)
            self.gate_bias = self.add_weight(
                shape=(2 * self.channels,), name="gate_bias",
                initializer=keras.initializers.Constant(np.concatenate([np.zeros_like(start), start])))

    def _successor_evidence(self, ids, real, n_ids):
        """The evidence tracks gain as successors of an anchor, sparse: one entry per (row, track, channel).

        Only the slots that hold an anchor (a few among thousands of history
        slots) are gathered, and nothing of catalogue size is built, so the
        cost is one comparison per slot and anchor, plus ``O(matches × lags)``.

        Returns:
            ``(rows, tracks, channels, evidence)``: int64 ``[k]`` each and
            float ``[k]``, every ``(row, track, channel)`` once, evidence ``>= 0``
            (entries whose follower fell past the end or on padding hold 0).
        """
        slots = tf.shape(ids)[1]
        positions = tf.range(slots)[None, :]
        offsets = [(tf.range(1, self.successor_lags + 1), 0)]  # (slot offsets, direction)
        if self.predecessor_lags:
            offsets.append((-tf.range(1, self.predecessor_lags + 1), 1))
        recent_channels = 2 if self.successor_recent_slots else 1
        rows, keys, weights = [], [], []
        for anchor in range(self.anchors):
            track = ids[:, slots - 1 - anchor:slots - anchor]  # [b, 1]; padding never matches a play
            # Only earlier slots: the anchor's own slot and what follows it are the session itself.
            matches = tf.where(tf.logical_and(tf.logical_and(tf.equal(ids, track), real > 0),
                                              positions < slots - 1 - anchor))  # [m, 2] (row, slot)
            row, slot = tf.cast(matches[:, 0], tf.int32), tf.cast(matches[:, 1], tf.int32)
            channel = tf.fill(tf.shape(slot), min(anchor, SUCCESSOR_CHANNELS - 1))
            if self.successor_recent_slots:
                channel += SUCCESSOR_CHANNELS * tf.cast(slot >= slots - self.successor_recent_slots, tf.int32)
            for lags, direction in offsets:
                # Slot s + lag followed a match in slot s (s - lag preceded it); outside the
                # input it is clipped and weighs 0. All lags in one gather ([m, L]).
                lag_values = tf.cast(tf.abs(lags), real.dtype)[None, :]
                neighbour = slot[:, None] + lags[None, :]
                target = tf.clip_by_value(neighbour, 0, slots - 1)
                row_per_lag = tf.broadcast_to(row[:, None], tf.shape(target))
                near = tf.stack([row_per_lag, target], axis=-1)  # [m, L, 2]
                inside = tf.logical_and(neighbour >= 0, neighbour < slots)
                valid = tf.gather_nd(real, near) * tf.cast(inside, real.dtype)
                neighbour_track = tf.cast(tf.gather_nd(ids, near), tf.int64)
                lag_channel = channel + direction * SUCCESSOR_CHANNELS * recent_channels
                rows.append(tf.reshape(row_per_lag, [-1]))
                keys.append(tf.reshape(neighbour_track * self.channels
                                       + tf.cast(lag_channel[:, None], tf.int64), [-1]))
                weights.append(tf.reshape(valid / (float(1 + anchor) * lag_values), [-1]))
        if not rows:
            empty = tf.zeros([0], tf.int64)
            return empty, empty, empty, tf.zeros([0], real.dtype)
        # int64 keys: batch × catalogue × channels passes 2**31 for large catalogues.
        width = tf.cast(n_ids, tf.int64) * self.channels
        keys = tf.cast(tf.concat(rows, 0), tf.int64) * width + tf.concat(keys, 0)
        unique_keys, position = tf.unique(keys)
        evidence = tf.math.unsorted_segment_sum(tf.concat(weights, 0), position, tf.size(unique_keys))
        return (unique_keys // width, (unique_keys % width) // self.channels,
                unique_keys % self.channels, evidence)

    def entries(self, ids, state, n_ids):
        """What the layer adds to the logits, sparse: ``(rows, tracks, values)``, int32/int64/float ``[k]``.

        A ``(row, track)`` pair may occur several times (its values add up).
        :meth:`call` scatter-adds them onto dense logits; a loss that scores
        only some tracks (``sampled.py``) reads them as they are.
        """
        ops = keras.ops
        ids = ops.cast(ids, "int32")
        real = ops.cast(ids > PADDING_ID, state.dtype)  # [b, slots]: plays, not padding or boundary
        ids = ops.maximum(ids, 0)  # the boundary's weight is 0; keep its index in range
        recent = ids[:, -self.repeat_slots:]  # [b, R]: R < repeat_slots when the input is narrower
        buckets = tf.constant(self.buckets)[self.repeat_slots - tf.shape(recent)[1]:]  # the last R
        per_bucket = ops.matmul(state, self.kernel) + self.bucket_bias  # [b, buckets]
        repeat = ops.take(per_bucket, buckets, axis=1) * real[:, -self.repeat_slots:]  # [b, R]
        rows = tf.broadcast_to(tf.range(tf.shape(recent)[0])[:, None], tf.shape(recent))
        rows, tracks, values = tf.reshape(rows, [-1]), tf.reshape(recent, [-1]), tf.reshape(repeat, [-1])
        if not self.successor_lags:
            return rows, tf.cast(tracks, tf.int64), values
        successor_rows, successor_tracks, channels, evidence = self._successor_evidence(ids, real, n_ids)
        gate = ops.matmul(state, self.gate_kernel) + self.gate_bias  # [b, 2 × channels]
        successor_rows = tf.cast(successor_rows, tf.int32)
        linear = tf.gather_nd(gate, tf.stack([successor_rows, tf.cast(channels, tf.int32)], -1))
        logarithmic = tf.gather_nd(
            gate, tf.stack([successor_rows, tf.cast(channels, tf.int32) + self.channels], -1))
        return (tf.concat([rows, successor_rows], 0),
                tf.concat([tf.cast(tracks, tf.int64), successor_tracks], 0),
                tf.concat([values, linear * evidence + logarithmic * tf.math.log1p(evidence)], 0))

    def call(self, inputs):
        logits, ids, state = inputs
        # Scatter-adds into the logits (duplicates add up): one pass over [b, n_ids], not a
        # catalogue-sized temporary per term, which is what batching many requests pays for.
        rows, tracks, values = self.entries(ids, state, keras.ops.shape(logits)[1])
        return tf.tensor_scatter_nd_add(
            logits, tf.stack([tf.cast(rows, tf.int64), tracks], -1), tf.cast(values, logits.dtype))

    def get_config(self):
        return {**super().get_config(), "history_length": self.history_length,
                "successor_lags": self.successor_lags, "successor_anchors": self.successor_anchors,
                "repeat_history_length": self.repeat_history_length, "session_slots": self.session_slots,
                "successor_recent_slots": self.successor_recent_slots, "predecessor_lags": self.predecessor_lags,
                "state_gates": self.state_gates}
