"""The genre classifier on a pretrained front end: a clip head over musicnn's patch embeddings.

``genre_model.frontend: musicnn_msd`` (the default). The frozen front end
(:mod:`musicrec.models.genre.musicnn`) turns each 3 s patch of a clip into a
200-wide embedding; :func:`build_clip_head` classifies the clip from that
sequence of patch embeddings:

- a **statistics path**: the mean and standard deviation of the patch
  embeddings over the clip, standardised (mean and variance of the training
  clips'), the summary a linear classifier on musicnn features uses;
- a **recurrent path** (``recurrent: gru | lstm``; ``none`` leaves it out):
  a small GRU or LSTM over the standardised patch embeddings in clip order,
  its outputs pooled by mean and standard deviation over the clip;
- both joined, dropout, a dense ``embedding`` (ReLU; the served track
  embedding) and a softmax over the genres;
- a **linear probe** (``linear_share > 0``): a logistic regression on the
  standardised mean and standard deviation over the clip of the patch
  embeddings and (``probe_features: embedding_and_pooled``) of musicnn's
  1506 pooled features under them, fitted before the head trains
  (:mod:`musicrec.models.genre.linear_probe`); the served probabilities are
  ``(1 - linear_share)`` times the head's softmax plus ``linear_share`` times
  the probe's. The probe has one optimum, so it damps the head's
  seed-to-seed spread.

Patches are masked: a clip of ``n`` patches in a batch padded to ``S``
patches gives exactly what it gives alone. Training reads the front end's
output cached once per patch (the front end is frozen: recomputing it every
epoch would cost ~99 % of the training time for nothing); the exported
SavedModel holds the whole graph, log-mel to genre.

When the probe reads the pooled features, or with ``finetune_penultimate:
true`` (musicnn's last block, its 200-unit dense layer,
:class:`~musicrec.models.genre.musicnn.MusicnnPenultimate`, trainable), the
cache holds the 1506-wide pooled features and the head holds that block.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import keras
import numpy as np

from musicrec.models.genre.layers import MaskedMean, ProbabilityBlend
from musicrec.models.genre.losses import GenreCrossentropy, genre_accuracy

RECURRENT_KINDS = ("gru", "lstm", "none")
PROBE_FEATURES = ("embedding", "embedding_and_pooled")


@dataclasses.dataclass(frozen=True)
class PretrainedHParams:
    """Hyperparameters of the clip head (``genre_model.hparams`` with ``frontend: musicnn_msd``).

    Attributes:
        recurrent: the recurrent path over the patch embeddings, ``"gru"``,
            ``"lstm"`` or ``"none"`` (statistics path only).
        recurrent_units: state width of the recurrent layer (per direction).
        bidirectional: run the recurrent layer both ways.
        embedding_dim: width of the ``embedding`` layer (the served track embedding).
        dropout: dropout on the joined paths, before the embedding, in [0, 1).
        recurrent_path_dropout: extra dropout on the recurrent path's pooled
            features, in [0, 1).
        learning_rate: AdamW's step size.
        weight_decay: AdamW's decoupled weight decay (0: plain Adam).
        clipnorm: gradients rescaled to at most this global L2 norm.
        epochs: maximum training epochs (early stopping may end sooner).
        batch_size: clips per training step.
        early_stopping_patience: epochs without a lower monitored loss before
            training stops; the best epoch's weights are restored.
        class_weights: weight each clip's loss by ``n / (n_classes * n_c)``.
        label_smoothing: the target keeps ``1 - label_smoothing`` on the
            genre and spreads the rest evenly, in [0, 1).
        crop_min_patches: training input only: each epoch every training clip
            is cut to a random run of consecutive patches, at least this many
            (or all it has); 0: whole clips.
        finetune_penultimate: train musicnn's last dense layer too.
        linear_share: weight of the linear probe's probabilities in the served
            ones, in [0, 1); 0 leaves the probe out.
        probe_features: what the probe reads, ``"embedding"`` (the statistics
            of the 200-wide patch embeddings, 400 values) or
            ``"embedding_and_pooled"`` (those and the statistics of musicnn's
            1506 pooled features, 3412 values).
    """

    # Defaults: chosen on GTZAN dev's tuning clips only (benchmarks/tune_genre_head.py,
    # results genre_head_tuning_round*.json): an LSTM path and a learning rate of 3e-3 held
    # 0.86-0.87 in 2- and 4-fold CV inside the tuning clips over three seeds. The statistics
    # path alone scored as well (0.84-0.88, within one clip of noise), the GRU, a
    # bidirectional LSTM, random patch runs, recurrent-path dropout, more epochs and
    # fine-tuning the penultimate block no better. Round 5: blending the LSTM head's
    # probabilities with a linear probe's raised both the mean and the weakest seed at every
    # share tried (0.3, 0.5, 0.7: 0.875-0.883 over 2- and 4-fold, weakest seed 0.825-0.85,
    # against 0.863 and 0.825 alone); 0.5 is the middle of that flat range. Round 6: the probe
    # reading the pooled features beside the embeddings scored 0.925-0.933 (weakest seed 0.925)
    # against 0.867-0.892 (0.85) on the embeddings alone.
    # The head's shape.
    recurrent: str = "lstm"
    recurrent_units: int = 32
    bidirectional: bool = False
    embedding_dim: int = 64
    finetune_penultimate: bool = False
    linear_share: float = 0.5
    probe_features: str = "embedding_and_pooled"
    # Regularisation.
    dropout: float = 0.5
    recurrent_path_dropout: float = 0.0
    label_smoothing: float = 0.1
    weight_decay: float = 0.01
    # Optimisation and the training input.
    learning_rate: float = 3e-3
    clipnorm: float = 1.0
    epochs: int = 80
    batch_size: int = 16
    early_stopping_patience: int = 15
    class_weights: bool = True
    crop_min_patches: int = 0

    def __post_init__(self):
        if self.probe_features not in PROBE_FEATURES:
            raise ValueError(f"genre hparam probe_features must be one of {PROBE_FEATURES}, "
                             f"got {self.probe_features!r}")
        if self.recurrent not in RECURRENT_KINDS:
            raise ValueError(f"genre hparam recurrent must be one of {RECURRENT_KINDS}, "
                             f"got {self.recurrent!r}")
        for name in ("recurrent_units", "embedding_dim", "learning_rate", "clipnorm", "epochs",
                     "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"genre hparam {name} must be positive, got {getattr(self, name)}")
        for name in ("dropout", "recurrent_path_dropout", "label_smoothing", "linear_share"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"genre hparam {name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("weight_decay", "early_stopping_patience", "crop_min_patches"):
            if getattr(self, name) < 0:
                raise ValueError(f"genre hparam {name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "PretrainedHParams":
        """Builds hyperparameters from a mapping; missing names keep their defaults.

        Raises:
            ValueError: a name is not a field (a typo, or a ``log_mel``
                front end's hyperparameter), or a value is out of range.
        """
        values = dict(values or {})
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown genre hparams {unknown} for the musicnn_msd front end; "
                             f"known: {sorted(known)} (the log_mel front end has others)")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def reads_pooled(self) -> bool:
        """Whether the head reads musicnn's 1506 pooled features (and holds its penultimate block)."""
        return self.finetune_penultimate or (self.linear_share > 0
                                             and self.probe_features == "embedding_and_pooled")


def build_clip_head(input_width: int, n_classes: int, hparams: PretrainedHParams,
                    patch_normalization: keras.layers.Normalization,
                    statistics_normalization: keras.layers.Normalization,
                    penultimate: keras.layers.Layer | None = None,
                    linear_probe: tuple[np.ndarray, np.ndarray] | None = None,
                    probe_normalization: keras.layers.Normalization | None = None) -> keras.Model:
    """The clip head: patch features and their mask to genre probabilities and the embedding.

    Args:
        input_width: width of each patch's features: 200 (musicnn's
            penultimate embedding) or, with ``penultimate``, 1506 (its pooled
            features).
        n_classes: genres.
        hparams: head settings.
        patch_normalization: per-dimension standardisation of the training
            patch embeddings (200-wide, :func:`fixed_normalization`).
        statistics_normalization: the same of the training clips' embedding
            statistics (mean then std, 400-wide).
        penultimate: musicnn's penultimate block, applied first when given
            (``hparams.reads_pooled``).
        linear_probe: ``(kernel [probe inputs, n_classes], bias [n_classes])``
            of :func:`~musicrec.models.genre.linear_probe.fit_linear_probe`, a
            frozen dense layer ``linear_probe``; with ``probe_normalization``
            (the training clips' :func:`probe_statistics`, standardised),
            required when ``hparams.linear_share > 0``, unused otherwise.

    Returns:
        An uncompiled functional model ``genre_clip_head``: a dict of inputs,
        ``patch_features`` float32 ``[batch, patches, input_width]`` and
        ``patch_mask`` bool ``[batch, patches]`` (False on padding patches);
        outputs ``[probabilities [batch, n_classes], embedding [batch,
        embedding_dim]]``. The head's own softmax is the layer named
        ``probabilities`` (what :func:`compile_for_training` trains); with a
        linear probe the first output is the ``blended_probabilities`` layer.
    """
    if hparams.linear_share > 0 and (linear_probe is None or probe_normalization is None):
        raise ValueError("linear_share > 0 needs the fitted linear_probe weights and probe_normalization")
    if hparams.reads_pooled and penultimate is None:
        raise ValueError("a head that reads musicnn's pooled features needs its penultimate block")
    if n_classes < 2:
        raise ValueError(f"a genre classifier needs at least 2 classes, got {n_classes}")
    features = keras.Input(shape=(None, input_width), dtype="float32", name="patch_features")
    mask = keras.Input(shape=(None,), dtype="bool", name="patch_mask")
    embeddings = penultimate(features) if penultimate is not None else features
    raw_statistics = MaskedMean(with_std=True, name="clip_statistics")(embeddings, mask)
    paths = [statistics_normalization(raw_statistics)]
    if hparams.recurrent != "none":
        layer_class = keras.layers.GRU if hparams.recurrent == "gru" else keras.layers.LSTM
        recurrent = layer_class(hparams.recurrent_units, return_sequences=True, name="recurrent")
        if hparams.bidirectional:
            recurrent = keras.layers.Bidirectional(recurrent, name="bi_recurrent")
        sequence = recurrent(patch_normalization(embeddings), mask=mask)
        pooled = MaskedMean(with_std=True, name="recurrent_pooling")(sequence, mask)
        if hparams.recurrent_path_dropout > 0:
            pooled = keras.layers.Dropout(hparams.recurrent_path_dropout,
                                          name="recurrent_path_dropout")(pooled)
        paths.append(pooled)
    joined = paths[0] if len(paths) == 1 else keras.layers.Concatenate(name="paths")(paths)
    joined = keras.layers.Dropout(hparams.dropout, name="dropout")(joined)
    embedding = keras.layers.Dense(hparams.embedding_dim, activation="relu", name="embedding")(joined)
    probabilities = keras.layers.Dense(n_classes, activation="softmax",
                                       name="probabilities")(embedding)
    if hparams.linear_share > 0:
        probe = keras.layers.Dense(n_classes, activation="softmax", trainable=False,
                                   name="linear_probe")
        probe_input = raw_statistics
        if hparams.probe_features == "embedding_and_pooled":
            pooled_statistics = MaskedMean(with_std=True, name="pooled_statistics")(features, mask)
            probe_input = keras.layers.Concatenate(name="probe_statistics")(
                [raw_statistics, pooled_statistics])
        probe_probabilities = probe(probe_normalization(probe_input))
        probe.set_weights([np.asarray(w, dtype=np.float32) for w in linear_probe])
        probabilities = ProbabilityBlend(hparams.linear_share, name="blended_probabilities")(
            probabilities, probe_probabilities)
    return keras.Model({"patch_features": features, "patch_mask": mask}, [probabilities, embedding],
                       name="genre_clip_head")


def compile_for_training(head: keras.Model, hparams: PretrainedHParams) -> keras.Model:
    """The model ``fit`` trains: the head's own probabilities (not the linear probe's blend),
    compiled (AdamW, clipping, label-smoothed cross-entropy, accuracy)."""
    model = keras.Model(head.inputs, head.get_layer("probabilities").output,
                        name="genre_clip_training")
    common = dict(learning_rate=hparams.learning_rate, global_clipnorm=hparams.clipnorm)
    optimizer = (keras.optimizers.AdamW(weight_decay=hparams.weight_decay, **common)
                 if hparams.weight_decay > 0 else keras.optimizers.Adam(**common))
    model.compile(optimizer=optimizer, loss=GenreCrossentropy(hparams.label_smoothing),
                  metrics=[keras.metrics.MeanMetricWrapper(genre_accuracy, name="accuracy")])
    return model


# A dimension whose training variance is below this fraction of the median dimension's is
# treated as having that variance when standardised: a musicnn unit that is (nearly) constant on
# the training clips, e.g. one whose ReLU never fires on them, would otherwise be divided by
# ~0 and blow up on the first clip where it moves (seen on the synthetic demo genres).
VARIANCE_FLOOR_FRACTION = 0.01


def fixed_normalization(values: np.ndarray, name: str) -> keras.layers.Normalization:
    """A per-dimension standardisation of ``values`` ``[n, width]`` (float32), fixed at build time.

    Mean and variance are ``values``'; the variance is floored at
    :data:`VARIANCE_FLOOR_FRACTION` of its median over the dimensions.
    """
    values = np.asarray(values, dtype=np.float64)
    variance = values.var(axis=0)
    floor = max(VARIANCE_FLOOR_FRACTION * float(np.median(variance)), 1e-12)
    return keras.layers.Normalization(axis=-1, mean=values.mean(axis=0).astype(np.float32),
                                      variance=np.maximum(variance, floor).astype(np.float32),
                                      name=name)


def clip_statistics(features: list[np.ndarray]) -> np.ndarray:
    """Mean then standard deviation over patches of each clip's ``[patches, width]``: ``[clips, 2 * width]``.

    The same numbers :class:`MaskedMean` computes in the head (epsilon included).
    """
    rows = []
    for clip in features:
        mean = clip.mean(axis=0)
        rows.append(np.concatenate([mean, np.sqrt(np.mean(np.square(clip - mean), axis=0) + 1e-6)]))
    return np.stack(rows).astype(np.float32)


def probe_statistics(embeddings: list[np.ndarray], pooled: list[np.ndarray] | None,
                     hparams: PretrainedHParams) -> np.ndarray:
    """What the linear probe reads, unstandardised: ``[clips, 400]`` or ``[clips, 3412]``.

    Args:
        embeddings: each clip's ``[patches, 200]`` patch embeddings.
        pooled: each clip's ``[patches, 1506]`` pooled features (needed for
            ``probe_features: embedding_and_pooled``).
    """
    parts = [clip_statistics(embeddings)]
    if hparams.probe_features == "embedding_and_pooled":
        parts.append(clip_statistics(pooled))
    return np.concatenate(parts, axis=1)


def pad_clips(features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Clips' ``[patches_i, width]`` as ``(float32 [clips, max_patches, width], bool mask [clips, max_patches])``."""
    longest = max(clip.shape[0] for clip in features)
    width = features[0].shape[1]
    padded = np.zeros((len(features), longest, width), dtype=np.float32)
    mask = np.zeros((len(features), longest), dtype=bool)
    for row, clip in enumerate(features):
        padded[row, :clip.shape[0]] = clip
        mask[row, :clip.shape[0]] = True
    return padded, mask


__all__ = ["PretrainedHParams", "RECURRENT_KINDS", "PROBE_FEATURES", "build_clip_head",
           "compile_for_training", "clip_statistics", "probe_statistics", "fixed_normalization",
           "pad_clips", "VARIANCE_FLOOR_FRACTION"]
