"""Keras genre classifiers over log-mel frames: a stacked LSTM and a CRNN.

Both read raw log-mel segments ``[batch, frames, n_mels]`` (as
:func:`musicrec.models.features.log_mel` returns them) and normalise them
themselves, so whoever calls the served model sends features unchanged.

- ``architecture: lstm``: stacked (``lstm_layers``), optionally
  bidirectional LSTMs over the frames; the last one's final state (or, with
  ``std_pooling``, its outputs' mean and std over time) feeds the embedding.
- ``architecture: crnn``: a small 2-D convolutional front end (3x3 kernels,
  batch norm, ReLU, pooling over mel bands only), then a GRU or LSTM over
  the frames, then the masked mean over time.
- Either may add skip paths of segment statistics before the embedding
  (``spectral_summary``, on by default: :class:`SpectralSummary`;
  ``input_statistics``).

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

import keras

from musicrec.models.genre.hparams import GenreHParams
from musicrec.models.genre.layers import (PADDING_VALUE, LabelNames, MaskedMean, MemberStack, PaddingMask,
                                          SpectralSummary, ZeroPadding)
from musicrec.models.genre.losses import GenreCrossentropy, genre_accuracy


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
        sequences = not last or hparams.std_pooling
        x = _recurrent("lstm", hparams.lstm_units, sequences, name, hparams.bidirectional)(x)
        if not last:
            x = keras.layers.Dropout(hparams.dropout, name=f"dropout_{index + 1}")(x)
    if hparams.std_pooling:
        frame_mask = PaddingMask(name="pooling_mask")(log_mel)
        x = MaskedMean(with_std=True, name="statistics_pooling")(x, frame_mask)
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


def _spectral_summary(log_mel, normalization, hparams: GenreHParams, n_mels: int):
    """Masked mean and std over time of :class:`SpectralSummary`, batch-normalised."""
    frame_mask = PaddingMask(name="summary_mask")(log_mel)
    descriptors = SpectralSummary(n_mels, min(hparams.summary_coefficients, n_mels),
                                  min(hparams.summary_band_groups, n_mels // 2),
                                  name="spectral_summary")(
        log_mel, normalization(log_mel))
    statistics = MaskedMean(with_std=True, name="summary_statistics")(descriptors, frame_mask)
    # The descriptors' scales differ by orders of magnitude (contrast, valley, DCT
    # orders); standardising them is what lets one learning rate and dropout suit all.
    return keras.layers.BatchNormalization(name="summary_norm")(statistics)


def learning_rate(hparams: GenreHParams, steps_per_epoch: int | None = None):
    """Adam's learning rate: a float, or a cosine decay over ``epochs * steps_per_epoch`` steps."""
    if hparams.lr_schedule == "cosine":
        if not steps_per_epoch:
            raise ValueError("the cosine learning-rate schedule needs steps_per_epoch")
        return keras.optimizers.schedules.CosineDecay(
            hparams.learning_rate, decay_steps=hparams.epochs * steps_per_epoch)
    return hparams.learning_rate


def averaging_momentum(hparams: GenreHParams, steps_per_epoch: int | None) -> float:
    """The weight-averaging momentum: ``ema_momentum``, lowered for short runs.

    The average's horizon (``1 / (1 - momentum)`` steps) is held to a third
    of the planned steps (``epochs * steps_per_epoch``): Keras starts the
    average at the initial weights, which a momentum of 0.99 over 40 steps
    would still weigh at 0.99^40 = 67 %. Unknown ``steps_per_epoch`` keeps
    ``ema_momentum``.
    """
    if not steps_per_epoch:
        return hparams.ema_momentum
    return max(0.0, min(hparams.ema_momentum, 1.0 - 3.0 / (hparams.epochs * steps_per_epoch)))


def _classifier_heads(log_mel, normalization, hparams: GenreHParams, n_mels: int,
                      n_classes: int):
    """One classifier's graph on ``log_mel``: its ``(embedding, probabilities)`` tensors."""
    if hparams.architecture == "crnn":
        x = _crnn_body(log_mel, normalization, hparams, n_mels)
    else:
        x = _lstm_body(log_mel, normalization, hparams)
    if hparams.recurrent_path_dropout > 0:
        x = keras.layers.Dropout(hparams.recurrent_path_dropout, name="recurrent_path_dropout")(x)
    if hparams.input_statistics:
        frame_mask = PaddingMask(name="statistics_mask")(log_mel)
        statistics = MaskedMean(with_std=True, name="input_statistics")(
            normalization(log_mel), frame_mask)
        x = keras.layers.Concatenate(name="with_input_statistics")([x, statistics])
    if hparams.spectral_summary:
        x = keras.layers.Concatenate(name="with_spectral_summary")(
            [x, _spectral_summary(log_mel, normalization, hparams, n_mels)])
    x = keras.layers.Dropout(hparams.dropout, name="dropout")(x)
    head_l2 = keras.regularizers.L2(hparams.head_l2) if hparams.head_l2 > 0 else None
    x = keras.layers.Dense(hparams.embedding_dim, activation="relu", kernel_regularizer=head_l2,
                           name="embedding")(x)
    probabilities = keras.layers.Dense(n_classes, activation="softmax", kernel_regularizer=head_l2,
                                       name="probabilities")(x)
    return x, probabilities



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
        steps_per_epoch: training batches per epoch; needed by the
            ``cosine`` learning-rate schedule, and weight averaging uses it
            (:func:`averaging_momentum`).

    Returns:
        A compiled functional model mapping raw log-mel ``[batch, frames,
        n_mels]`` (frames variable, padding frames all :data:`PADDING_VALUE`)
        to genre probabilities ``[batch, n_classes]``. Its layer
        ``"embedding"`` gives the ``[batch, embedding_dim]`` track embedding.
        Adam clips gradients by global norm (``hparams.clipnorm``).

        With ``hparams.ensemble_members`` K above 1: K independently
        initialised copies of that classifier, sub-models ``member_1`` ...
        ``member_K`` sharing the input (and the fixed ``normalization``);
        with ``hparams.ensemble``, one such sub-model per member, each with
        its own overrides (:meth:`GenreHParams.members`),
        and the output is every member's probabilities, ``[batch, K,
        n_classes]``. The loss is the mean of the members' own losses (each
        learns as it would alone, rather than all fitting their average);
        the accuracy metric and :func:`build_serving_model` use the mean of
        the members' probabilities.
    """
    if n_classes < 2:
        raise ValueError(f"a genre classifier needs at least 2 classes, got {n_classes}")
    log_mel = keras.Input(shape=(None, n_mels), dtype="float32", name="log_mel")
    member_hparams = hparams.members()
    if len(member_hparams) == 1:
        _, probabilities = _classifier_heads(log_mel, normalization, hparams, n_mels, n_classes)
    else:
        members = []
        for index, member in enumerate(member_hparams, start=1):
            member_input = keras.Input(shape=(None, n_mels), dtype="float32", name="log_mel")
            heads = _classifier_heads(member_input, normalization, member, n_mels, n_classes)
            members.append(keras.Model(member_input, heads, name=f"member_{index}"))
        # Each member's own probabilities, so that each learns on its own loss.
        probabilities = MemberStack(name="ensemble_probabilities")(
            [member(log_mel)[1] for member in members])
    architectures = "_".join(dict.fromkeys(member.architecture for member in member_hparams))
    model = keras.Model(log_mel, probabilities, name=f"genre_{architectures}")

    common = dict(learning_rate=learning_rate(hparams, steps_per_epoch),
                  global_clipnorm=hparams.clipnorm, use_ema=hparams.ema_momentum > 0,
                  ema_momentum=averaging_momentum(hparams, steps_per_epoch) or 0.99)
    if hparams.weight_decay > 0:
        optimizer = keras.optimizers.AdamW(weight_decay=hparams.weight_decay, **common)
    else:
        optimizer = keras.optimizers.Adam(**common)
    # GenreCrossentropy also averages an ensemble's members' losses, which the sparse loss cannot.
    soft = hparams.label_smoothing > 0 or hparams.mixup_alpha > 0 or len(member_hparams) > 1
    model.compile(
        optimizer=optimizer,
        # Mixup trains on soft targets; the plain sparse loss and metric cannot read them.
        loss=(GenreCrossentropy(hparams.label_smoothing) if soft
              else keras.losses.SparseCategoricalCrossentropy()),
        metrics=[keras.metrics.MeanMetricWrapper(genre_accuracy, name="accuracy") if soft
                 else keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model



def new_normalization() -> keras.layers.Normalization:
    """An unadapted per-mel-band ``Normalization`` layer for :func:`build_classifier`."""
    return keras.layers.Normalization(axis=-1, name="normalize")



def _serving_heads(classifier: keras.Model) -> keras.Model:
    """``log_mel`` to ``[probabilities, embedding]`` in one forward pass, a single model or an ensemble."""
    members = [layer for layer in classifier.layers
               if isinstance(layer, keras.Model) and layer.name.startswith("member_")]
    if not members:
        return keras.Model(classifier.input,
                           [classifier.output, classifier.get_layer("embedding").output],
                           name="genre_heads")
    log_mel = keras.Input(shape=classifier.input.shape[1:], dtype="float32", name="log_mel")
    embeddings, probabilities = zip(*(member(log_mel) for member in members))
    mean = keras.layers.Average(name="mean_probabilities")(list(probabilities))
    embedding = keras.layers.Concatenate(name="member_embeddings")(list(embeddings))
    return keras.Model(log_mel, [mean, embedding], name="genre_heads")


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
        ``embedding`` float32 ``[batch, embedding_dim]``; for an ensemble
        (``ensemble_members`` K > 1), ``probabilities`` is the mean of the
        members' and ``embedding`` the concatenation of theirs, ``[batch, K
        * embedding_dim]`` (with ``ensemble``, the sum of the members'
        ``embedding_dim``).
    """
    n_classes = classifier.output.shape[-1]
    if len(labels) != n_classes:
        raise ValueError(f"{len(labels)} labels for a classifier with {n_classes} classes")
    heads = _serving_heads(classifier)
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

