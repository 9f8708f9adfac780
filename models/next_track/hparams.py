"""Hyperparameters of the next-track model (``next_track_model.hparams`` in the config), checked on creation.

Plain Python (no Keras), so settings can be checked without starting TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

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
        repeat_scores: add the learned repeat term (see :class:`~repeat_scores.RepeatScores`).
        state_gates: the repeat and successor weights depend on the session
            state (off: one learned weight per recency bucket and evidence channel).
        scorer: how the listener's own tracks are scored: ``"gates"``
            (:class:`~repeat_scores.RepeatScores`, with ``repeat_scores``) or ``"mlp"``
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
        max_validation_examples: early stopping reads at most this many
            validation examples, evenly spaced over them (0: all). Epochs are
            compared on the same examples, so 20 000 tell them apart to
            well under 0.003 of HR@20, while ranking 150 000 examples over a
            200 000-track catalogue costs half an epoch.
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
    global_successors: int = 20
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
    max_validation_examples: int = 20_000

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
        if self.max_validation_examples < 0:
            raise ValueError("next_track hparam max_validation_examples must be >= 0")
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
