"""Keras recurrent next-track model over the listener's history and the session so far.

Ids follow the ``next_track`` contract (docs/architecture.md): 0 is the padding
token ``""``, 1 the out-of-vocabulary token and ``2 + i`` the ``i``-th line of
``vocab.txt``. Inside the model only, id -1 is the boundary that separates the
listener's earlier plays from the current session; it has its own learned
vector (:class:`TrackEmbedding`) and no row in the per-track tables, so
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
where it sits changes the output. The network:
track embedding → LSTM (or GRU) over the last ``rnn_history_length``
history slots, the boundary and the session → dropout → scores over every id, either a
dense output layer or, with ``tied_embeddings``, the dot product with the
input embedding table (after a projection to its width) plus a per-track
bias. With ``repeat_scores``, learned weights computed from the session
state are added to the scores of tracks in the input and, gated by that
state, to the sequential-rule evidence of the tracks that followed earlier
plays of the session's last few tracks anywhere in the listener's history
(:class:`RepeatScores`): repeat listening and its recency become cheap,
learned terms.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

PADDING_TOKEN = ""
PADDING_ID = 0
OOV_ID = 1
BOUNDARY_ID = -1  # model-internal; never looked up from a key, never scored
NUM_RESERVED_IDS = 2  # padding + one OOV bucket
RNN_KINDS = ("lstm", "gru")
SOFTMAX_KINDS = ("auto", "full", "sampled")
SCORERS = ("gates", "mlp")
EARLY_STOPPING_METRICS = ("hr", "loss")


@dataclasses.dataclass(frozen=True)
class NextTrackHParams:
    """Hyperparameters of the next-track model.

    Attributes:
        embedding_dim: size of a track embedding.
        lstm_units: size of the recurrent state (the session representation).
        rnn: ``"lstm"`` or ``"gru"``.
        tied_embeddings: score tracks with the input embedding table instead
            of a separate output layer.
        neural_scores: score every track by the session vector and its
            embedding (off: only the repeat and successor terms score, so the
            model ranks the listener's own tracks and nothing else).
        track_bias: with ``neural_scores`` off, still learn one bias per track
            (a popularity prior for the tracks the listener never played).
        repeat_scores: add the learned repeat term (see :class:`RepeatScores`).
        state_gates: the repeat and successor weights depend on the session
            state (off: one learned weight per recency bucket and evidence channel).
        scorer: how the listener's own tracks are scored: ``"gates"``
            (:class:`RepeatScores`, with ``repeat_scores``) or ``"mlp"``
            (:class:`~candidates.CandidateScorer`: a small ranker over repeat
            and successor facts).
        scorer_units: hidden units of the ``"mlp"`` scorer.
        global_successors: with the ``"mlp"`` scorer, each track's this many
            strongest followers across every listener (the global sequential
            rules, ``global_rules.py``) become candidates of the session's
            anchors, with their rule weight as a fact (0 turns it off).
        rules_share: with ``global_successors``, the share of each listener's
            training sessions (the earliest) that only feed the rules table
            while training, so the scorer never sees rules that count its own
            targets; the exported table counts every training session.
        scorer_context: what the ``"mlp"`` scorer knows of the row besides a
            track's facts: ``"none"``, ``"lengths"`` (of the session and the
            history) or ``"state"`` (those and the recurrent session state).
        successor_lags: with ``repeat_scores``, how many tracks after an
            earlier play of an anchor (one of the session's last plays) gain
            the learned successor evidence (0 turns it off).
        successor_anchors: how many of the session's last plays are anchors
            of the successor evidence (1: only the last play; more than
            ``max_prefix_length`` count as ``max_prefix_length``).
        successor_recent_slots: with ``successor_lags``, matches of an anchor in
            the last this many slots (recent history and the session) get
            evidence channels of their own, so recent habits can weigh
            differently from old ones (0: one set of channels).
        predecessor_lags: with ``successor_lags``, the tracks up to this many
            slots *before* each match gain evidence too, in channels of their own
            (music is also replayed in shuffled or reversed order; 0 turns it off).
        history_length: the listener's earlier plays fed before the session, in
            plays (0 turns personalisation off); the successor evidence
            reads them all (it is sparse: cheap even for tens of thousands).
        repeat_history_length: how many of those (the most recent) the
            repeat term reads (it is dense over its slots, with gradients).
        rnn_history_length: how many of those (the most recent) the recurrent
            layer reads before the boundary; recurrent cost grows with
            ``rnn_history_length + 1 + max_prefix_length`` steps.
        dropout: dropout rate on the session representation.
        learning_rate: Adam learning rate.
        clipnorm: Adam ``global_clipnorm`` (clips the norm of all gradients together).
        epochs: most training epochs (early stopping may end sooner).
        batch_size: training pairs per step.
        early_stopping_patience: epochs without a better validation figure before stopping.
        early_stopping_metric: ``"hr"`` watches validation HR@``top_k`` (the
            ranking of the whole catalogue), ``"loss"`` the validation loss.
            The loss starts rising (over-confidence) epochs before the ranking
            stops improving.
        max_prefix_length: plays of the current session the model reads (the most recent ones).
        top_k: tracks ``serving_default`` returns per prefix (``k``).
        softmax: ``"full"`` (softmax over every track), ``"sampled"`` (every
            track the repeat and successor terms score for the example, plus
            the other targets of the batch as logQ-corrected negatives; see
            ``sampled.py``) or ``"auto"`` (full up to ``full_softmax_max_tracks``).
        full_softmax_max_tracks: the catalogue size above which ``"auto"``
            switches to the sampled softmax.
        validation_share: share of training sessions held out for early
            stopping when the eval split has none.
    """

    embedding_dim: int = 64
    lstm_units: int = 64
    rnn: str = "lstm"
    tied_embeddings: bool = True
    neural_scores: bool = False
    track_bias: bool = False
    repeat_scores: bool = True
    state_gates: bool = True
    scorer: str = "mlp"
    scorer_units: int = 32
    scorer_context: str = "state"
    global_successors: int = 0
    rules_share: float = 0.7
    successor_lags: int = 10
    successor_anchors: int = 3
    successor_recent_slots: int = 100
    predecessor_lags: int = 10
    history_length: int = 5000
    repeat_history_length: int = 500
    rnn_history_length: int = 10
    dropout: float = 0.2
    learning_rate: float = 4e-3
    clipnorm: float = 1.0
    epochs: int = 2
    batch_size: int = 256
    early_stopping_patience: int = 3
    early_stopping_metric: str = "hr"
    max_prefix_length: int = 20
    top_k: int = 20
    softmax: str = "auto"
    full_softmax_max_tracks: int = 100_000
    validation_share: float = 0.05

    def __post_init__(self):
        if self.rnn not in RNN_KINDS:
            raise ValueError(f"next_track hparam rnn must be one of {RNN_KINDS}, got {self.rnn!r}")
        if self.softmax not in SOFTMAX_KINDS:
            raise ValueError(f"next_track hparam softmax must be one of {SOFTMAX_KINDS}, got {self.softmax!r}")
        if self.scorer not in SCORERS:
            raise ValueError(f"next_track hparam scorer must be one of {SCORERS}, got {self.scorer!r}")
        if self.early_stopping_metric not in EARLY_STOPPING_METRICS:
            raise ValueError(f"next_track hparam early_stopping_metric must be one of "
                             f"{EARLY_STOPPING_METRICS}, got {self.early_stopping_metric!r}")
        if self.history_length < 0 or self.max_prefix_length < 1:
            raise ValueError("next_track hparams need history_length >= 0 and max_prefix_length >= 1")
        if self.successor_lags < 0 or self.successor_anchors < 1:
            raise ValueError("next_track hparams need successor_lags >= 0 and successor_anchors >= 1")
        if self.successor_recent_slots < 0 or self.predecessor_lags < 0:
            raise ValueError("next_track hparams need successor_recent_slots >= 0 and predecessor_lags >= 0")
        if not 0 <= self.repeat_history_length:
            raise ValueError("next_track hparam repeat_history_length must be >= 0")
        if not 0 <= self.rnn_history_length <= self.history_length:
            raise ValueError("next_track hparam rnn_history_length must be in [0, history_length]")

    @property
    def input_length(self) -> int:
        """Ids the core model reads at most (and in training): history, boundary, session."""
        return self.history_length + 1 + self.max_prefix_length

    @property
    def session_slots(self) -> int:
        """Slots of the layout after the history: the boundary and the session."""
        return 1 + self.max_prefix_length

    def uses_full_softmax(self, vocab_size: int) -> bool:
        """Whether training uses the full softmax for a catalogue of ``vocab_size`` tracks."""
        if self.softmax == "auto":
            return vocab_size <= self.full_softmax_max_tracks
        return self.softmax == "full"

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "NextTrackHParams":
        """Builds hyperparameters from a mapping.

        Values are converted to each field's type, because YAML hands over
        ``2e-3`` as a string; unknown names, non-numbers for numeric fields,
        fractional integers and unknown choices raise ``ValueError``.
        """
        values = dict(values or {})
        fields = {field.name: type(field.default) for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"unknown next_track hparams {unknown}; known: {sorted(fields)}")
        converted = {}
        for name, value in values.items():
            if fields[name] is str:
                converted[name] = str(value)
                continue
            if fields[name] is bool:
                if isinstance(value, str) and value.lower() in ("true", "false"):
                    value = value.lower() == "true"
                if not isinstance(value, (bool, int)) or value not in (0, 1):
                    raise ValueError(f"next_track hparam {name}={value!r} must be true or false")
                converted[name] = bool(value)
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"next_track hparam {name}={value!r} is not a number") from None
            if fields[name] is int and not number.is_integer():
                raise ValueError(f"next_track hparam {name}={value!r} must be an integer")
            converted[name] = fields[name](number)
        return cls(**converted)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Ranks every track of the catalogue by the session vector (the neural scores)
# on top of the learned repeat and successor terms. Cold start needs it: a track
# nobody has played is in no listener's history, so the default scorer, which
# ranks the listener's own tracks and their followers, never ranks it.
CATALOGUE_RANKING = {"neural_scores": True, "scorer": "gates"}


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


@keras.saving.register_keras_serializable(package="musicrec")
class TrackEmbedding(keras.layers.Embedding):
    """An ``Embedding`` over the contract's ids plus one learned vector for the boundary id (-1).

    The table (``embeddings``, ``[n_ids, d]``) is the first weight, as in a
    plain ``Embedding``; the boundary vector ``[d]`` is the second. Id 0 is
    masked.
    """

    def build(self, input_shape=None):
        super().build(input_shape)
        self.boundary = self.add_weight(shape=(self.output_dim,), initializer="uniform", name="boundary")

    # keras.layers.Embedding saves only its table; the boundary vector is store entry "1".
    def save_own_variables(self, store):
        super().save_own_variables(store)
        store["1"] = self.boundary

    def load_own_variables(self, store):
        super().load_own_variables(store)
        self.boundary.assign(store["1"])

    def call(self, inputs):
        ids = keras.ops.cast(inputs, "int32")
        rows = super().call(keras.ops.maximum(ids, 0))
        is_boundary = keras.ops.equal(ids, BOUNDARY_ID)[..., None]
        return keras.ops.where(is_boundary, keras.ops.cast(self.boundary, rows.dtype), rows)


@keras.saving.register_keras_serializable(package="musicrec")
class TiedLogits(keras.layers.Layer):
    """Scores every id as ``state · embedding_table[id] + bias[id]`` (tied input/output embeddings).

    The table belongs to the embedding layer; this layer owns only the bias
    ``[n_ids]``. The table is reached through a closure so that Keras does not
    track (and save) it twice.
    """

    def __init__(self, embedding: keras.layers.Embedding, **kwargs):
        super().__init__(**kwargs)
        self._table = lambda: embedding.embeddings
        self.n_ids = embedding.input_dim

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(self.n_ids,), initializer="zeros", name="bias")

    def call(self, state):
        return keras.ops.matmul(state, keras.ops.transpose(self._table())) + self.bias


@keras.saving.register_keras_serializable(package="musicrec")
class BiasLogits(keras.layers.Layer):
    """Scores every id by a learned bias alone, or 0 without one (``neural_scores`` off): the
    model then ranks the listener's own tracks by its repeat and successor terms, the rest by
    the bias (how often a track is the next play at all)."""

    def __init__(self, n_ids: int, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.n_ids = n_ids
        self.use_bias = use_bias

    def build(self, input_shape):
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.n_ids,), initializer="zeros", name="bias")

    def call(self, state):
        zeros = keras.ops.zeros((keras.ops.shape(state)[0], self.n_ids), dtype=state.dtype)
        return zeros + self.bias if self.use_bias else zeros

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_ids)

    def get_config(self):
        return {**super().get_config(), "n_ids": self.n_ids, "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package="musicrec")
class LastSlots(keras.layers.Layer):
    """The last ``count`` slots of ``[batch, slots]`` (the recent history, boundary and session)."""

    def __init__(self, count: int, **kwargs):
        super().__init__(**kwargs)
        self.count = count

    def call(self, ids):
        return ids[:, -self.count:]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.count)

    def get_config(self):
        return {**super().get_config(), "count": self.count}


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


def build_model(vocab_size: int, hparams: NextTrackHParams) -> keras.Model:
    """Core model: ids ``[batch, slots]`` → next-track logits ``[batch, vocab_size + 2]``.

    ``slots`` is at most ``input_length`` (see :func:`input_layout`); training
    feeds all of them.

    Layers that hold one entry per id are named ``track_embedding`` (table
    ``[n_ids, embedding_dim]``, then the boundary vector) and ``next_track_logits`` (dense kernel
    ``[units, n_ids]`` and bias, or with tied embeddings only the bias
    ``[n_ids]``); cold start and warm start rely on those names. Logits for
    the reserved ids exist and are suppressed at serving time.
    """
    n_ids = vocab_size + NUM_RESERVED_IDS
    track_ids = keras.Input(shape=(None,), dtype="int64", name="track_ids")
    embedding = TrackEmbedding(n_ids, hparams.embedding_dim, mask_zero=True, name="track_embedding")
    rnn_steps = hparams.rnn_history_length + 1 + hparams.max_prefix_length
    embedded = embedding(LastSlots(rnn_steps, name="recurrent_slots")(track_ids))
    rnn = keras.layers.GRU if hparams.rnn == "gru" else keras.layers.LSTM
    state = rnn(hparams.lstm_units, name="session_lstm")(embedded)
    state = keras.layers.Dropout(hparams.dropout, name="session_dropout")(state)
    if not hparams.neural_scores:
        logits = BiasLogits(n_ids, hparams.track_bias, name="next_track_logits")(state)
    elif hparams.tied_embeddings:
        projected = keras.layers.Dense(hparams.embedding_dim, name="session_projection")(state)
        logits = TiedLogits(embedding, name="next_track_logits")(projected)
    else:
        logits = keras.layers.Dense(n_ids, name="next_track_logits")(state)
    if hparams.scorer == "mlp":
        from musicrec.models.next_track.candidates import CandidateScorer

        logits = CandidateScorer(hparams.history_length, hparams.session_slots, hparams.repeat_history_length,
                                 hparams.successor_lags, hparams.successor_anchors, hparams.predecessor_lags,
                                 hparams.successor_recent_slots, hparams.scorer_units, hparams.scorer_context,
                                 hparams.global_successors, name="candidate_scores")([logits, track_ids, state])
    elif hparams.repeat_scores:
        logits = RepeatScores(hparams.history_length, hparams.successor_lags, hparams.successor_anchors,
                              hparams.repeat_history_length, hparams.session_slots,
                              successor_recent_slots=hparams.successor_recent_slots,
                              predecessor_lags=hparams.predecessor_lags, state_gates=hparams.state_gates,
                              name="repeat_scores")(
            [logits, track_ids, state])
    model = keras.Model(track_ids, logits, name="next_track")
    # The serving builders read the layout from here (not saved: build_model always sets it).
    model.next_track_hparams = hparams
    return model


def scoring_layer(core_model: keras.Model):
    """The layer that scores the listener's own tracks (its ``entries`` are sparse scores), or ``None``."""
    for name in ("candidate_scores", "repeat_scores"):
        try:
            return core_model.get_layer(name)
        except ValueError:
            continue
    return None


def output_embeddings(core_model: keras.Model, hparams: NextTrackHParams):
    """The output-side embedding of every id, ``[n_ids, d]`` (a tensor).

    Tied: the embedding table (``d = embedding_dim``); untied: the output
    layer's kernel, transposed (``d = lstm_units``). A track's score is this
    row dotted with the session vector, plus its bias (and the repeat term).
    """
    if hparams.tied_embeddings:
        return core_model.get_layer("track_embedding").embeddings
    return keras.ops.transpose(core_model.get_layer("next_track_logits").kernel)


def build_serving_model(core_model: keras.Model, vocabulary: Sequence[str], top_k: int) -> keras.Model:
    """``serving_default`` only, as a functional Keras model; see ``serving.build_serving_model``."""
    from musicrec.models.next_track import serving

    return serving.build_serving_model(core_model, vocabulary, top_k)
