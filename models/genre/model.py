"""Keras LSTM genre classifier over log-mel frames.

The classifier reads raw log-mel segments ``[batch, frames, n_mels]`` (as
:func:`musicrec.models.features.log_mel` returns them) and normalises them
itself, so whoever calls the served model sends features unchanged.

Padding: frames may vary within a batch. A frame whose every mel band equals
:data:`PADDING_VALUE` (``0.0``) is padding and is masked out of the LSTM, so
padding a segment never changes its prediction. The mask is taken on the raw
log-mel, before normalisation, because a real frame cannot be confused with
it there: silence is ``log(log_floor)`` (about ``-13.8``), never ``0``, and a
real frame with every band at exactly ``0.0`` (mel power exactly
``1 - log_floor`` in all bands) does not occur in practice. After the
per-band normalisation a padding frame is no longer one constant, which is
why ``Masking`` comes before ``Normalization`` here; the normalisation layer
passes the mask on.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import keras

# Value of every band of a padding frame, in raw log-mel units.
PADDING_VALUE = 0.0


@dataclasses.dataclass(frozen=True)
class GenreHParams:
    """Hyperparameters of the genre classifier.

    Attributes:
        lstm_units: width of the LSTM state.
        embedding_dim: width of the ``embedding`` layer (the track embedding
            the served model returns).
        dropout: dropout rate after the LSTM, in [0, 1).
        learning_rate: Adam step size.
        clipnorm: gradients are rescaled so their global L2 norm is at most
            this (Adam ``global_clipnorm``); keeps LSTM training stable.
        epochs: maximum training epochs (early stopping may end sooner).
        batch_size: segments per training step.
        early_stopping_patience: epochs without a lower validation loss
            before training stops; the best epoch's weights are kept.
    """

    lstm_units: int = 64
    embedding_dim: int = 32
    dropout: float = 0.3
    learning_rate: float = 1e-3
    clipnorm: float = 1.0
    epochs: int = 30
    batch_size: int = 32
    early_stopping_patience: int = 5

    def __post_init__(self):
        positive = ("lstm_units", "embedding_dim", "learning_rate", "clipnorm", "epochs",
                    "batch_size")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"genre hparam {name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"genre hparam dropout must be in [0, 1), got {self.dropout}")
        if self.early_stopping_patience < 0:
            raise ValueError("genre hparam early_stopping_patience must be >= 0")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "GenreHParams":
        """Builds hyperparameters from a mapping; missing names keep their defaults.

        Raises:
            ValueError: a name is not a field of :class:`GenreHParams` (a typo
                would otherwise silently train with the default).
        """
        values = dict(values or {})
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown genre hparams {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_classifier(n_mels: int, n_classes: int, hparams: GenreHParams,
                     normalization: keras.layers.Normalization) -> keras.Model:
    """Builds and compiles the LSTM genre classifier.

    Args:
        n_mels: mel bands per frame.
        n_classes: number of genres.
        hparams: model and optimizer settings.
        normalization: a per-band ``Normalization`` (``axis=-1``) already
            adapted on raw training log-mel frames.

    Returns:
        A compiled functional model mapping raw log-mel ``[batch, frames,
        n_mels]`` (frames variable, padding frames all :data:`PADDING_VALUE`)
        to genre probabilities ``[batch, n_classes]``. Its layer
        ``"embedding"`` gives the ``[batch, embedding_dim]`` track embedding.
    """
    if n_classes < 2:
        raise ValueError(f"a genre classifier needs at least 2 classes, got {n_classes}")
    log_mel = keras.Input(shape=(None, n_mels), dtype="float32", name="log_mel")
    x = keras.layers.Masking(mask_value=PADDING_VALUE, name="padding_mask")(log_mel)
    x = normalization(x)
    x = keras.layers.LSTM(hparams.lstm_units, name="lstm")(x)
    x = keras.layers.Dropout(hparams.dropout, name="dropout")(x)
    x = keras.layers.Dense(hparams.embedding_dim, activation="relu", name="embedding")(x)
    probabilities = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(log_mel, probabilities, name="genre_classifier")

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=hparams.learning_rate,
                                        global_clipnorm=hparams.clipnorm),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def new_normalization() -> keras.layers.Normalization:
    """An unadapted per-mel-band ``Normalization`` layer for :func:`build_classifier`."""
    return keras.layers.Normalization(axis=-1, name="normalize")


class LabelNames(keras.layers.Layer):
    """Turns class probabilities into label names, inside the graph.

    The names are a constant string tensor and the lookup is ``tf.gather``,
    so the exported graph needs core TensorFlow ops only.

    Call returns a dict: ``classes`` string ``[batch, n_classes]`` (every
    label name, the same row for each example, as TF Serving classification
    heads return them) and ``genre`` string ``[batch]`` (the most probable
    label).
    """

    def __init__(self, labels: list[str], **kwargs):
        super().__init__(**kwargs)
        if not labels:
            raise ValueError("LabelNames needs at least one label")
        self.labels = list(labels)

    def call(self, probabilities):
        import tensorflow as tf  # string tensors have no keras.ops equivalent

        names = tf.constant(self.labels, dtype=tf.string)
        batch = tf.shape(probabilities)[0]
        classes = tf.broadcast_to(names[tf.newaxis, :], [batch, len(self.labels)])
        genre = tf.gather(names, tf.argmax(probabilities, axis=-1))
        return {"classes": classes, "genre": genre}

    def compute_output_spec(self, probabilities):
        batch = probabilities.shape[0]
        return {
            "classes": keras.KerasTensor((batch, len(self.labels)), dtype="string"),
            "genre": keras.KerasTensor((batch,), dtype="string"),
        }

    def get_config(self):
        return {**super().get_config(), "labels": self.labels}


def build_serving_model(classifier: keras.Model, labels: list[str]) -> keras.Model:
    """Wraps a trained classifier in the ``genre`` serving contract.

    Args:
        classifier: a model from :func:`build_classifier` (trained).
        labels: genre names; index ``i`` names output class ``i``.

    Returns:
        A functional model with one input ``log_mel`` float32 ``[batch,
        frames, n_mels]`` (raw log-mel) and a dict of outputs:
        ``probabilities`` float32 ``[batch, n_classes]``, ``classes`` string
        ``[batch, n_classes]``, ``genre`` string ``[batch]`` and
        ``embedding`` float32 ``[batch, embedding_dim]``.
    """
    n_classes = classifier.output.shape[-1]
    if len(labels) != n_classes:
        raise ValueError(f"{len(labels)} labels for a classifier with {n_classes} classes")
    # One sub-model with both heads, so the embedding and the probabilities
    # come from the same forward pass.
    heads = keras.Model(classifier.input,
                        [classifier.output, classifier.get_layer("embedding").output],
                        name="genre_heads")
    log_mel = keras.Input(shape=classifier.input.shape[1:], dtype="float32", name="log_mel")
    probabilities, embedding = heads(log_mel)
    names = LabelNames(labels, name="label_names")(probabilities)
    outputs = {
        "probabilities": probabilities,
        "classes": names["classes"],
        "genre": names["genre"],
        "embedding": embedding,
    }
    return keras.Model(log_mel, outputs, name="genre_serving")


__all__ = ["PADDING_VALUE", "GenreHParams", "LabelNames", "build_classifier", "build_serving_model",
           "new_normalization"]
