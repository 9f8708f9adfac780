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

import dataclasses
from typing import Any, Mapping

import keras
import numpy as np
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
        std_pooling: statistics pooling: the CRNN pools its recurrent
            outputs over time with the mean and the standard deviation, not
            the mean alone; the LSTM pools its last layer's outputs with
            both, instead of taking its final state.
        input_statistics: a skip path: the per-band mean and standard
            deviation over time of the normalised log-mel join the pooled
            features before the embedding (the summary the classical
            baseline classifies, which a small data set cannot teach the
            recurrent path to compute).
        spectral_summary: a skip path of frame descriptors in the spirit of
            MFCC and spectral contrast (:class:`SpectralSummary`): their
            mean and standard deviation over time, batch-normalised, join
            the pooled features before the embedding.
        summary_coefficients: DCT coefficients of the spectral summary
            (more than ``n_mels`` means ``n_mels``).
        summary_band_groups: groups of adjacent mel bands whose peak-to-
            valley contrast and valley the spectral summary adds (more than
            ``n_mels // 2`` means ``n_mels // 2``, so every group spans two
            bands or more).
        weight_decay: decoupled weight decay (AdamW) per step, relative to
            the learning rate; 0 uses plain Adam.
        ema_momentum: when above 0, the optimizer keeps an exponential
            moving average of the weights with this momentum per step, and
            the trained model ends with the averaged weights (segment-level
            training on few tracks swings the track accuracy from epoch to
            epoch; the average is steadier). A short training run gets a
            lower momentum (:func:`averaging_momentum`), so that the average
            forgets the untrained start. 0: off.
        recurrent_path_dropout: dropout on the recurrent (or CRNN) path's
            pooled features alone, before they join the skip paths, in
            [0, 1); on top of ``dropout``. A high rate keeps a few training
            tracks from being memorised through the recurrent path while the
            summary statistics carry the decision.
        label_smoothing: the training target puts ``1 - label_smoothing``
            on the true genre and spreads the rest evenly, in [0, 1).
        head_l2: L2 penalty (per weight, added to the loss) on the kernels
            of the ``embedding`` and ``probabilities`` layers; 0: none.
        mixup_alpha: mixup in the training input (tf.data only,
            :func:`musicrec.models.genre.augment.mixup`): every training
            segment is blended with another segment of its batch, and its
            label with that one's, by a weight from ``Beta(alpha, alpha)``
            folded to at least 0.5; 0: off. The model is then compiled for
            soft targets (:class:`GenreCrossentropy`), which takes integer
            labels too.
        ensemble_members: independently initialised copies of the
            classifier trained together in one model (a seed ensemble, see
            :func:`build_classifier`); the served ``probabilities`` are their
            mean and the served ``embedding`` the concatenation of theirs
            (``ensemble_members * embedding_dim`` wide). 1: a single model.
        ensemble: a heterogeneous ensemble: one mapping per member, each
            overriding :data:`MEMBER_HPARAMS` (architecture and model-shape
            keys) of these hyperparameters, e.g. ``({}, {"architecture":
            "crnn", "std_pooling": True})`` for an LSTM and a CRNN; trained
            and served as the seed ensemble is, the embedding being the
            concatenation of the members' (the sum of their
            ``embedding_dim``). Two members or more; ``ensemble_members``
            must then be 1 or the number of members. Empty: no such
            ensemble.
        random_gain_db: training input only (tf.data,
            :func:`musicrec.models.genre.augment.random_gain`): every
            training segment's power is scaled by a random gain, uniform in
            ``[-random_gain_db, +random_gain_db]`` decibels (a constant added
            to its raw log-mel), so that the recording level of a few
            training clips is not learned as a genre cue; 0: off.
        band_shift_max: training input only (tf.data,
            :func:`musicrec.models.genre.augment.random_band_shift`): every
            training segment's mel axis is shifted by a random whole number
            of bands in ``[-band_shift_max, +band_shift_max]`` (a pitch-shift
            approximation; vacated bands repeat the edge band); 0: off.
        tempo_max_fraction: training input only (tf.data,
            :func:`musicrec.models.genre.augment.random_tempo`): every
            training segment's frame axis is resampled by a random factor in
            ``[1 - tempo_max_fraction, 1 + tempo_max_fraction]`` and cut or
            edge-padded back to its length (a time-stretch approximation),
            in [0, 1); 0: off.
    """

    # Defaults: the best configuration found on GTZAN dev (docs/genre.md,
    # benchmarks/bench_genre_gtzan.py). The earlier ones were tuned on the benchmark's own
    # folds; mixup_alpha and label_smoothing were then chosen on fold 0 alone (two seeds).
    architecture: str = "lstm"
    lstm_units: int = 32
    lstm_layers: int = 1
    bidirectional: bool = False
    crnn_recurrent: str = "gru"
    conv_filters: tuple[int, ...] = (8, 16, 16)
    embedding_dim: int = 32
    dropout: float = 0.5
    learning_rate: float = 3e-3
    lr_schedule: str = "constant"
    clipnorm: float = 1.0
    epochs: int = 12
    batch_size: int = 32
    early_stopping_patience: int = 5
    class_weights: bool = True
    time_mask_frames: int = 0
    freq_mask_bands: int = 0
    std_pooling: bool = False
    input_statistics: bool = False
    spectral_summary: bool = True
    summary_coefficients: int = 20
    summary_band_groups: int = 8
    weight_decay: float = 0.05
    ema_momentum: float = 0.99
    recurrent_path_dropout: float = 0.0
    label_smoothing: float = 0.1
    head_l2: float = 0.0
    mixup_alpha: float = 0.4
    ensemble_members: int = 1
    ensemble: tuple[Mapping[str, Any], ...] = ()
    random_gain_db: float = 0.0
    band_shift_max: int = 0
    tempo_max_fraction: float = 0.0

    def __post_init__(self):
        # YAML gives lists; a frozen dataclass keeps a tuple.
        object.__setattr__(self, "conv_filters", tuple(self.conv_filters))
        object.__setattr__(self, "ensemble", tuple(_member_overrides(self.ensemble)))
        positive = ("lstm_units", "lstm_layers", "embedding_dim", "learning_rate", "clipnorm",
                    "epochs", "batch_size", "summary_coefficients", "summary_band_groups",
                    "ensemble_members")
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
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ValueError(f"genre hparam ema_momentum must be in [0, 1), got {self.ema_momentum}")
        for name in ("dropout", "recurrent_path_dropout", "label_smoothing", "tempo_max_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"genre hparam {name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("early_stopping_patience", "time_mask_frames", "freq_mask_bands",
                     "weight_decay", "head_l2", "mixup_alpha", "random_gain_db",
                     "band_shift_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"genre hparam {name} must be >= 0, got {getattr(self, name)}")
        if self.band_shift_max != int(self.band_shift_max):
            raise ValueError(f"genre hparam band_shift_max must be a whole number of mel bands, "
                             f"got {self.band_shift_max}")
        if self.ensemble:
            if len(self.ensemble) < 2:
                raise ValueError("genre hparam ensemble needs two members or more (one member's "
                                 "overrides can be set directly)")
            if self.ensemble_members not in (1, len(self.ensemble)):
                raise ValueError(f"genre hparam ensemble_members ({self.ensemble_members}) "
                                 f"contradicts the {len(self.ensemble)} members of ensemble")
            self.members()  # each member's values checked by its own __post_init__

    def members(self) -> list["GenreHParams"]:
        """The hyperparameters of each classifier in the model: one, or an ensemble's members."""
        if self.ensemble:
            return [dataclasses.replace(self, ensemble=(), ensemble_members=1, **overrides)
                    for overrides in self.ensemble]
        return [dataclasses.replace(self, ensemble_members=1)] * self.ensemble_members

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
        values["ensemble"] = [dict(overrides) for overrides in self.ensemble]
        return values


# What a heterogeneous ensemble's member may set for itself: its architecture, shape and
# regularisation. The optimizer, schedule, epochs, batches and training input are the model's.
MEMBER_HPARAMS = ("architecture", "lstm_units", "lstm_layers", "bidirectional", "crnn_recurrent",
                  "conv_filters", "embedding_dim", "dropout", "std_pooling", "input_statistics",
                  "spectral_summary", "summary_coefficients", "summary_band_groups",
                  "recurrent_path_dropout", "head_l2")


def _member_overrides(ensemble) -> list[dict[str, Any]]:
    """``ensemble`` (a sequence of mappings, from YAML or code) as plain dicts, keys checked."""
    if isinstance(ensemble, (str, bytes, Mapping)):
        raise ValueError(f"genre hparam ensemble must be a list of mappings, got {ensemble!r}")
    members = []
    for index, overrides in enumerate(ensemble, start=1):
        if not isinstance(overrides, Mapping):
            raise ValueError(f"genre hparam ensemble member {index} must be a mapping, "
                             f"got {overrides!r}")
        unknown = sorted(set(overrides) - set(MEMBER_HPARAMS))
        if unknown:
            raise ValueError(f"genre hparam ensemble member {index}: {unknown} cannot be set per "
                             f"member; allowed: {list(MEMBER_HPARAMS)}")
        member = dict(overrides)
        if "conv_filters" in member:
            member["conv_filters"] = [int(f) for f in member["conv_filters"]]
        members.append(member)
    return members


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
        # The frame mask comes as an argument; a Keras mask on x (after an
        # LSTM over Masking) says the same, and nothing after pooling needs one.
        self.supports_masking = True

    def compute_mask(self, *args, **kwargs):
        return None

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


def dct_matrix(n_bands: int, n_coefficients: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix: ``x @ dct_matrix(n, k)`` gives ``x``'s first ``k`` coefficients.

    Returns:
        float32 ``[n_bands, n_coefficients]`` (scipy's ``dct(x, norm="ortho")``
        over the last axis, truncated).
    """
    bands = np.arange(n_bands)[:, None]
    orders = np.arange(n_coefficients)[None, :]
    matrix = np.sqrt(2.0 / n_bands) * np.cos(np.pi * (2 * bands + 1) * orders / (2 * n_bands))
    matrix[:, 0] /= np.sqrt(2.0)
    return matrix.astype(np.float32)


class SpectralSummary(keras.layers.Layer):
    """Frame descriptors in the spirit of MFCC and spectral contrast, from the log-mel.

    For each frame: the first ``n_coefficients`` DCT-II coefficients over the
    mel bands of the *normalised* log-mel (cepstral shape, as MFCC), then,
    for each of ``n_groups`` groups of adjacent mel bands of the *raw*
    log-mel, the peak minus the valley (max minus min over the group's
    bands: contrast, in natural-log units) and the valley. A fixed matrix
    product and max/min reductions: core ops only, nothing to learn.

    Call: ``(log_mel, normalized)``, both ``[batch, frames, n_mels]``;
    returns ``[batch, frames, n_coefficients + 2 * n_groups]``. Padding
    frames give meaningless values: pool with the frame mask.

    Args:
        n_mels: mel bands per frame.
        n_coefficients: DCT coefficients kept; at most ``n_mels``.
        n_groups: band groups (contiguous, sizes differing by at most one,
            as ``np.array_split``); at most ``n_mels // 2``; 0 for none.
    """

    def __init__(self, n_mels: int, n_coefficients: int, n_groups: int, **kwargs):
        super().__init__(**kwargs)
        if not 1 <= n_coefficients <= n_mels:
            raise ValueError(f"summary_coefficients must be in [1, {n_mels}] for {n_mels} mel "
                             f"bands, got {n_coefficients}")
        if not 0 <= n_groups <= n_mels // 2:
            raise ValueError(f"summary_band_groups must be in [1, {n_mels // 2}] for {n_mels} "
                             f"mel bands (two bands or more per group), got {n_groups}")
        self.n_mels, self.n_coefficients, self.n_groups = n_mels, n_coefficients, n_groups
        self._dct = dct_matrix(n_mels, n_coefficients)
        self._edges = ([int(part[0]) for part in np.array_split(np.arange(n_mels), n_groups)]
                       + [n_mels]) if n_groups else [0]

    def call(self, log_mel, normalized):
        descriptors = [ops.matmul(normalized, ops.convert_to_tensor(self._dct))]
        for start, stop in zip(self._edges[:-1], self._edges[1:]):
            group = log_mel[..., start:stop]
            valley = ops.min(group, axis=-1, keepdims=True)
            descriptors += [ops.max(group, axis=-1, keepdims=True) - valley, valley]
        return ops.concatenate(descriptors, axis=-1)

    def compute_output_spec(self, log_mel, normalized):
        return keras.KerasTensor((*log_mel.shape[:2], self.n_coefficients + 2 * self.n_groups),
                                 dtype=log_mel.dtype)

    def get_config(self):
        return {**super().get_config(), "n_mels": self.n_mels,
                "n_coefficients": self.n_coefficients, "n_groups": self.n_groups}


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


class MemberStack(keras.layers.Layer):
    """Stacks the members' probabilities, each ``[batch, n_classes]``: ``[batch, members, n_classes]``."""

    def call(self, member_probabilities):
        return ops.stack(member_probabilities, axis=1)

    def compute_output_spec(self, member_probabilities):
        first = member_probabilities[0]
        return keras.KerasTensor((first.shape[0], len(member_probabilities), first.shape[1]),
                                 dtype=first.dtype)


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


def _targets(y_true, n_classes: int):
    """Integer labels ``[batch]`` / ``[batch, 1]`` as one-hot; soft targets ``[batch, n_classes]`` as they are."""
    if len(y_true.shape) == 2 and y_true.shape[-1] == n_classes and n_classes > 1:
        return ops.cast(y_true, "float32")
    return ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), n_classes)


class GenreCrossentropy(keras.losses.Loss):
    """Cross-entropy of probabilities against integer labels or soft targets, with label smoothing.

    ``y_true``: integer labels ``[batch]`` (or ``[batch, 1]``), or targets
    float ``[batch, n_classes]`` (mixup's blends, :func:`~musicrec.models.
    genre.augment.mixup`); ``y_pred``: probabilities ``[batch, n_classes]``,
    or an ensemble's ``[batch, members, n_classes]`` (the loss is then the
    mean over the members of each one's loss). The target becomes ``(1 - smoothing) * target + smoothing / n_classes``
    (Keras' sparse cross-entropy has no label smoothing).
    """

    def __init__(self, smoothing: float = 0.0, name: str = "genre_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, y_true, y_pred):
        n_classes = y_pred.shape[-1]
        target = _targets(y_true, n_classes) * (1.0 - self.smoothing) + self.smoothing / n_classes
        if len(y_pred.shape) == 3:
            # An ensemble's [batch, members, n_classes]: the mean of the members' own losses.
            target = ops.broadcast_to(target[:, None, :], ops.shape(y_pred))
            return ops.mean(keras.losses.categorical_crossentropy(target, y_pred), axis=1)
        return keras.losses.categorical_crossentropy(target, y_pred)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


def genre_accuracy(y_true, y_pred):
    """Per segment, 1.0 where the most probable genre is the label (or the soft target's largest)."""
    n_classes = y_pred.shape[-1]
    if len(y_pred.shape) == 3:
        y_pred = ops.mean(y_pred, axis=1)  # an ensemble's members: their mean decides
    return ops.cast(ops.equal(ops.argmax(_targets(y_true, n_classes), axis=-1),
                              ops.argmax(y_pred, axis=-1)), "float32")


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


__all__ = ["PADDING_VALUE", "ARCHITECTURES", "MEMBER_HPARAMS", "GenreHParams", "LabelNames", "SpectralSummary",
           "dct_matrix", "build_classifier", "MemberStack",
           "build_serving_model", "new_normalization", "balanced_class_weights", "learning_rate",
           "averaging_momentum", "GenreCrossentropy", "genre_accuracy"]
