"""Keras genre classifiers over log-mel frames: a stacked LSTM and a CRNN.

Both read raw log-mel segments ``[batch, frames, n_mels]`` (as
:func:`musicrec.models.features.log_mel` returns them) and normalise them
themselves, so whoever calls the served model sends features unchanged.

- ``architecture: lstm``: stacked (``lstm_layers``), optionally
  bidirectional LSTMs over the frames; the last one's final state feeds the
  embedding.
- ``architecture: crnn``: a small 2-D convolutional front end (3x3 kernels,
  batch norm, ReLU, pooling over mel bands only), then a GRU or LSTM over
  the frames, then the masked mean over time.

Padding: frames may vary within a batch. A frame whose every mel band equals
:data:`PADDING_VALUE` (``0.0``) is padding and is masked out, so padding a
segment never changes its prediction. The mask is taken on the raw log-mel,
before normalisation, because a real frame cannot be confused with it there:
silence is ``log(log_floor)`` (about ``-13.8``), never ``0``, and a real
frame with every band at exactly ``0.0`` (mel power exactly ``1 - log_floor``
in all bands) does not occur in practice. The LSTM model lets Keras carry the
mask (``Masking`` before ``Normalization``, which passes it on). The CRNN
zeroes padding frames after normalisation and after every conv block: the
convolutions pad with zeros at a sequence's end anyway (``"same"``), and
they never pool over time, so the real frames see exactly what they would
see without padding; the recurrent layer and the mean over time take the
mask explicitly.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import keras
from keras import ops

# Value of every band of a padding frame, in raw log-mel units.
PADDING_VALUE = 0.0

ARCHITECTURES = ("lstm", "crnn")
RECURRENT_LAYERS = ("lstm", "gru")
LR_SCHEDULES = ("constant", "cosine", "plateau")


@dataclasses.dataclass(frozen=True)
class GenreHParams:
    """Hyperparameters of the genre classifier (``genre_model.hparams`` in the config).

    Attributes:
        architecture: ``"lstm"`` (stacked LSTM) or ``"crnn"`` (conv + RNN).
        lstm_units: width of each recurrent layer's state (per direction).
        lstm_layers: number of stacked recurrent layers.
        bidirectional: run each recurrent layer both ways (doubles its output).
        crnn_recurrent: the CRNN's recurrent layer, ``"gru"`` or ``"lstm"``.
        conv_filters: the CRNN's conv blocks, output channels of each; every
            block halves the mel bands (so at most ``log2(n_mels)`` blocks).
        embedding_dim: width of the ``embedding`` layer (the track embedding
            the served model returns).
        dropout: dropout rate before the embedding (and between stacked
            recurrent layers), in [0, 1).
        learning_rate: Adam's initial step size.
        lr_schedule: ``"constant"``; ``"cosine"`` (cosine decay to 0 over
            ``epochs``); ``"plateau"`` (halve it after
            ``max(1, early_stopping_patience // 2)`` epochs without a lower
            monitored loss).
        clipnorm: gradients are rescaled so their global L2 norm is at most
            this (Adam ``global_clipnorm``); keeps recurrent training stable.
        epochs: maximum training epochs (early stopping may end sooner).
        batch_size: segments per training step.
        early_stopping_patience: epochs without a lower validation loss
            before training stops; the best epoch's weights are restored.
        class_weights: weight each training segment's loss by
            ``n_segments / (n_classes * segments_of_its_class)``, so rare
            genres count as much as common ones.
        time_mask_frames: SpecAugment, training input only: one mask of up
            to this many consecutive frames per segment (0: none).
        freq_mask_bands: SpecAugment: one mask of up to this many adjacent
            mel bands per segment (0: none).
        std_pooling: the CRNN pools its recurrent outputs over time with
            the mean and the standard deviation (statistics pooling), not
            the mean alone.
        input_statistics: a skip path: the per-band mean and standard
            deviation over time of the normalised log-mel join the pooled
            features before the embedding (the summary the classical
            baseline classifies, which a small data set cannot teach the
            recurrent path to compute).
    """

    architecture: str = "lstm"
    lstm_units: int = 64
    lstm_layers: int = 1
    bidirectional: bool = False
    crnn_recurrent: str = "gru"
    conv_filters: tuple[int, ...] = (16, 32, 32)
    embedding_dim: int = 32
    dropout: float = 0.3
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    clipnorm: float = 1.0
    epochs: int = 30
    batch_size: int = 32
    early_stopping_patience: int = 5
    class_weights: bool = True
    time_mask_frames: int = 0
    freq_mask_bands: int = 0
    std_pooling: bool = False
    input_statistics: bool = False

    def __post_init__(self):
        # YAML gives lists; a frozen dataclass keeps a tuple.
        object.__setattr__(self, "conv_filters", tuple(self.conv_filters))
        positive = ("lstm_units", "lstm_layers", "embedding_dim", "learning_rate", "clipnorm",
                    "epochs", "batch_size")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"genre hparam {name} must be positive, got {getattr(self, name)}")
        choices = {"architecture": ARCHITECTURES, "crnn_recurrent": RECURRENT_LAYERS,
                   "lr_schedule": LR_SCHEDULES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"genre hparam {name} must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")
        if not self.conv_filters or any(int(f) <= 0 for f in self.conv_filters):
            raise ValueError(f"genre hparam conv_filters must be positive channel counts, "
                             f"got {list(self.conv_filters)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"genre hparam dropout must be in [0, 1), got {self.dropout}")
        for name in ("early_stopping_patience", "time_mask_frames", "freq_mask_bands"):
            if getattr(self, name) < 0:
                raise ValueError(f"genre hparam {name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "GenreHParams":
        """Builds hyperparameters from a mapping; missing names keep their defaults.

        Raises:
            ValueError: a name is not a field of :class:`GenreHParams` (a typo
                would otherwise silently train with the default), or a value
                is out of range.
        """
        values = dict(values or {})
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown genre hparams {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["conv_filters"] = list(self.conv_filters)
        return values


class PaddingMask(keras.layers.Layer):
    """``[batch, frames, n_mels]`` raw log-mel to bool ``[batch, frames]``: False on padding frames."""

    def call(self, log_mel):
        return ops.any(ops.not_equal(log_mel, PADDING_VALUE), axis=-1)

    def compute_output_spec(self, log_mel):
        return keras.KerasTensor(log_mel.shape[:2], dtype="bool")


class ZeroPadding(keras.layers.Layer):
    """Sets the padding frames of ``x`` ``[batch, frames, ...]`` to 0, given the frame mask."""

    def call(self, x, frame_mask):
        keep = ops.cast(frame_mask, x.dtype)
        for _ in range(len(x.shape) - 2):
            keep = ops.expand_dims(keep, -1)
        return x * keep

    def compute_output_spec(self, x, frame_mask):
        return keras.KerasTensor(x.shape, dtype=x.dtype)


class MaskedMean(keras.layers.Layer):
    """Mean of ``x`` ``[batch, frames, units]`` over the unmasked frames: ``[batch, units]``.

    With ``with_std=True``, the standard deviation follows: ``[batch, 2 * units]``.
    A segment with no real frame gives zeros rather than NaN.
    """

    def __init__(self, with_std: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.with_std = with_std

    def call(self, x, frame_mask):
        keep = ops.cast(frame_mask, x.dtype)[..., None]
        count = ops.maximum(ops.sum(keep, axis=1), 1.0)
        mean = ops.sum(x * keep, axis=1) / count
        if not self.with_std:
            return mean
        variance = ops.sum(ops.square(x - mean[:, None, :]) * keep, axis=1) / count
        # The epsilon keeps the gradient of sqrt finite where a band is constant.
        return ops.concatenate([mean, ops.sqrt(variance + 1e-6)], axis=-1)

    def compute_output_spec(self, x, frame_mask):
        width = x.shape[2] * (2 if self.with_std else 1) if x.shape[2] is not None else None
        return keras.KerasTensor((x.shape[0], width), dtype=x.dtype)

    def get_config(self):
        return {**super().get_config(), "with_std": self.with_std}


def _recurrent(kind: str, units: int, return_sequences: bool, name: str, bidirectional: bool):
    layer_class = keras.layers.GRU if kind == "gru" else keras.layers.LSTM
    layer = layer_class(units, return_sequences=return_sequences, name=name)
    return keras.layers.Bidirectional(layer, name=f"bi_{name}") if bidirectional else layer


def _lstm_body(log_mel, normalization, hparams: GenreHParams):
    x = keras.layers.Masking(mask_value=PADDING_VALUE, name="padding_mask")(log_mel)
    x = normalization(x)
    for index in range(hparams.lstm_layers):
        last = index == hparams.lstm_layers - 1
        name = "lstm" if hparams.lstm_layers == 1 else f"lstm_{index + 1}"
        x = _recurrent("lstm", hparams.lstm_units, not last, name, hparams.bidirectional)(x)
        if not last:
            x = keras.layers.Dropout(hparams.dropout, name=f"dropout_{index + 1}")(x)
    return x


def _crnn_body(log_mel, normalization, hparams: GenreHParams, n_mels: int):
    if n_mels < 2 ** len(hparams.conv_filters):
        raise ValueError(f"{len(hparams.conv_filters)} conv blocks halve {n_mels} mel bands "
                         f"below one; use fewer conv_filters")
    frame_mask = PaddingMask(name="padding_mask")(log_mel)
    x = ZeroPadding(name="zero_padding_input")(normalization(log_mel), frame_mask)
    x = keras.layers.Reshape((-1, n_mels, 1), name="as_image")(x)
    bands = n_mels
    for index, filters in enumerate(hparams.conv_filters, start=1):
        x = keras.layers.Conv2D(int(filters), 3, padding="same", use_bias=False,
                                name=f"conv_{index}")(x)
        x = keras.layers.BatchNormalization(name=f"conv_{index}_norm")(x)
        x = keras.layers.Activation("relu", name=f"conv_{index}_relu")(x)
        # Pooling over mel bands only: pooling over time would mix padding
        # into real frames and make the mask inexact.
        x = keras.layers.MaxPooling2D(pool_size=(1, 2), name=f"conv_{index}_pool")(x)
        x = ZeroPadding(name=f"zero_padding_{index}")(x, frame_mask)
        bands //= 2
    x = keras.layers.Reshape((-1, bands * int(hparams.conv_filters[-1])), name="as_sequence")(x)
    for index in range(hparams.lstm_layers):
        name = "rnn" if hparams.lstm_layers == 1 else f"rnn_{index + 1}"
        x = _recurrent(hparams.crnn_recurrent, hparams.lstm_units, True, name,
                       hparams.bidirectional)(x, mask=frame_mask)
    return MaskedMean(with_std=hparams.std_pooling, name="mean_over_time")(x, frame_mask)


def learning_rate(hparams: GenreHParams, steps_per_epoch: int | None = None):
    """Adam's learning rate: a float, or a cosine decay over ``epochs * steps_per_epoch`` steps."""
    if hparams.lr_schedule == "cosine":
        if not steps_per_epoch:
            raise ValueError("the cosine learning-rate schedule needs steps_per_epoch")
        return keras.optimizers.schedules.CosineDecay(
            hparams.learning_rate, decay_steps=hparams.epochs * steps_per_epoch)
    return hparams.learning_rate


def build_classifier(n_mels: int, n_classes: int, hparams: GenreHParams,
                     normalization: keras.layers.Normalization,
                     steps_per_epoch: int | None = None) -> keras.Model:
    """Builds and compiles the genre classifier ``hparams.architecture`` names.

    Args:
        n_mels: mel bands per frame.
        n_classes: number of genres.
        hparams: model and optimizer settings.
        normalization: a per-band ``Normalization`` (``axis=-1``) already
            adapted on raw training log-mel frames.
        steps_per_epoch: training batches per epoch; needed only by the
            ``cosine`` learning-rate schedule.

    Returns:
        A compiled functional model mapping raw log-mel ``[batch, frames,
        n_mels]`` (frames variable, padding frames all :data:`PADDING_VALUE`)
        to genre probabilities ``[batch, n_classes]``. Its layer
        ``"embedding"`` gives the ``[batch, embedding_dim]`` track embedding.
        Adam clips gradients by global norm (``hparams.clipnorm``).
    """
    if n_classes < 2:
        raise ValueError(f"a genre classifier needs at least 2 classes, got {n_classes}")
    log_mel = keras.Input(shape=(None, n_mels), dtype="float32", name="log_mel")
    if hparams.architecture == "crnn":
        x = _crnn_body(log_mel, normalization, hparams, n_mels)
    else:
        x = _lstm_body(log_mel, normalization, hparams)
    if hparams.input_statistics:
        frame_mask = PaddingMask(name="statistics_mask")(log_mel)
        statistics = MaskedMean(with_std=True, name="input_statistics")(
            normalization(log_mel), frame_mask)
        x = keras.layers.Concatenate(name="with_input_statistics")([x, statistics])
    x = keras.layers.Dropout(hparams.dropout, name="dropout")(x)
    x = keras.layers.Dense(hparams.embedding_dim, activation="relu", name="embedding")(x)
    probabilities = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(log_mel, probabilities, name=f"genre_{hparams.architecture}")

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate(hparams, steps_per_epoch),
                                        global_clipnorm=hparams.clipnorm),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def balanced_class_weights(counts: Mapping[int, int], n_classes: int) -> dict[int, float]:
    """``n / (n_classes * count_c)`` per class present (scikit-learn's ``"balanced"``).

    Args:
        counts: training segments per label id.
        n_classes: number of labels; absent labels get weight 1.

    Returns:
        ``{label_id: weight}`` for every label id in ``range(n_classes)``.
    """
    total = sum(counts.values())
    present = sum(1 for count in counts.values() if count)
    return {label: (total / (present * counts[label]) if counts.get(label) else 1.0)
            for label in range(n_classes)}


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


__all__ = ["PADDING_VALUE", "ARCHITECTURES", "GenreHParams", "LabelNames", "build_classifier",
           "build_serving_model", "new_normalization", "balanced_class_weights", "learning_rate"]
