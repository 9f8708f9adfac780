"""Keras LSTM next-track model over session prefixes, and its serving wrapper.

Ids follow the ``next_track`` contract (docs/architecture.md): 0 is the padding
token ``""``, 1 the out-of-vocabulary token, and ``2 + i`` the ``i``-th line of
``vocab.txt``. :func:`make_track_lookup` is the one place that builds that
mapping; training (``data.py``) and the exported graph both use it, so the ids
the model learned are the ids it serves.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import keras

PADDING_TOKEN = ""
PADDING_ID = 0
OOV_ID = 1
NUM_RESERVED_IDS = 2  # padding + one OOV bucket


@dataclasses.dataclass(frozen=True)
class NextTrackHParams:
    """Hyperparameters of the next-track model.

    Attributes:
        embedding_dim: size of a track embedding.
        lstm_units: size of the LSTM state (the session representation).
        dropout: dropout rate on the session representation.
        learning_rate: Adam learning rate.
        clipnorm: Adam ``global_clipnorm`` (clips the norm of all gradients together).
        epochs: most training epochs (early stopping may end sooner).
        batch_size: training pairs per step.
        early_stopping_patience: epochs without a better validation loss before stopping.
        max_prefix_length: plays a prefix keeps (the most recent ones), in plays.
        top_k: tracks the exported signature returns per prefix (``k``).
    """

    embedding_dim: int = 64
    lstm_units: int = 128
    dropout: float = 0.2
    learning_rate: float = 2e-3
    clipnorm: float = 1.0
    epochs: int = 20
    batch_size: int = 256
    early_stopping_patience: int = 3
    max_prefix_length: int = 20
    top_k: int = 20

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "NextTrackHParams":
        """Builds hyperparameters from a mapping.

        Values are converted to each field's type, because YAML hands over
        ``2e-3`` as a string; unknown names, non-numbers and fractional
        integers raise ``ValueError``.
        """
        values = dict(values or {})
        fields = {field.name: type(field.default) for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"unknown next_track hparams {unknown}; known: {sorted(fields)}")
        converted = {}
        for name, value in values.items():
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


def build_model(vocab_size: int, hparams: NextTrackHParams) -> keras.Model:
    """Core model: track ids ``[batch, T]`` int → next-track logits ``[batch, vocab_size + 2]``.

    Id 0 is padding and is masked, so right-padding does not change the output.
    Logits for the reserved ids 0 and 1 exist (the layer spans every id) and are
    suppressed at serving time by :func:`build_serving_model`.
    """
    track_ids = keras.Input(shape=(None,), dtype="int64", name="track_ids")
    embedded = keras.layers.Embedding(
        vocab_size + NUM_RESERVED_IDS, hparams.embedding_dim, mask_zero=True,
        name="track_embedding")(track_ids)
    session_state = keras.layers.LSTM(hparams.lstm_units, name="session_lstm")(embedded)
    session_state = keras.layers.Dropout(hparams.dropout, name="session_dropout")(session_state)
    logits = keras.layers.Dense(vocab_size + NUM_RESERVED_IDS, name="next_track_logits")(session_state)
    return keras.Model(track_ids, logits, name="next_track")


@keras.saving.register_keras_serializable(package="musicrec")
class SuppressReservedIds(keras.layers.Layer):
    """Sets the logits of padding and OOV ids to a large negative value.

    After softmax their probability is 0, so top-k never picks them (as long
    as ``k`` does not exceed the vocabulary size).
    """

    def call(self, logits):
        num_ids = keras.ops.shape(logits)[-1]
        reserved = keras.ops.arange(num_ids) < NUM_RESERVED_IDS
        return keras.ops.where(reserved[None, :], keras.ops.cast(-1e9, logits.dtype), logits)


@keras.saving.register_keras_serializable(package="musicrec")
class TopK(keras.layers.Layer):
    """Best ``k`` values and their indices along the last axis, best first."""

    def __init__(self, k: int, **kwargs):
        super().__init__(**kwargs)
        self.k = k

    def call(self, values):
        return keras.ops.top_k(values, k=self.k, sorted=True)

    def get_config(self):
        return {**super().get_config(), "k": self.k}


def build_serving_model(core_model: keras.Model, vocabulary: Sequence[str],
                        top_k: int) -> keras.Model:
    """Wraps the core model for the ``next_track`` serving signature.

    Input ``track_keys`` string ``[batch, length]`` padded with ``""``; outputs
    ``{"track_keys": string [batch, k], "scores": float32 [batch, k]}``, the
    softmax probabilities best first, ``k = min(top_k, len(vocabulary))`` so
    that padding and OOV can never fill a slot.
    """
    k = min(top_k, len(vocabulary))
    track_keys = keras.Input(shape=(None,), dtype="string", name="track_keys")
    track_ids = make_track_lookup(vocabulary, name="track_key_to_id")(track_keys)
    logits = core_model(track_ids)
    logits = SuppressReservedIds(name="suppress_padding_and_oov")(logits)
    probabilities = keras.layers.Softmax(name="next_track_probabilities")(logits)
    scores, best_ids = TopK(k, name="top_k")(probabilities)
    best_keys = make_track_lookup(vocabulary, invert=True, name="track_id_to_key")(best_ids)
    return keras.Model(track_keys, {"track_keys": best_keys, "scores": scores},
                       name="next_track_serving")
