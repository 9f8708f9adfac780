"""Hyperparameters of the genre classifier (``genre_model.hparams`` in the config), checked on creation.

Plain Python (no Keras), so settings can be checked without starting TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

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
            MFCC and spectral contrast (:class:`~musicrec.models.genre.layers.SpectralSummary`): their
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
            lower momentum (:func:`~musicrec.models.genre.model.averaging_momentum`), so that the average
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
            soft targets (:class:`~musicrec.models.genre.losses.GenreCrossentropy`), which takes integer
            labels too.
        ensemble_members: independently initialised copies of the
            classifier trained together in one model (a seed ensemble, see
            :func:`~musicrec.models.genre.model.build_classifier`); the served ``probabilities`` are their
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
