"""Training set-up of the genre models: both architectures, masking, clipping, schedules, SpecAugment."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from musicrec.models.genre.augment import spec_augment
from musicrec.models.genre.hparams import GenreHParams
from musicrec.models.genre.layers import PADDING_VALUE, SpectralSummary
from musicrec.models.genre.losses import balanced_class_weights
from musicrec.models.genre.model import averaging_momentum, build_classifier, new_normalization
from musicrec.models.genre.train import training_callbacks

N_MELS = 16
SMALL = {"lstm_units": 8, "embedding_dim": 4, "conv_filters": (4, 4)}


def _normalization(seed: int = 0) -> keras.layers.Normalization:
    normalization = new_normalization()
    normalization.adapt(np.random.default_rng(seed).normal(-6, 2, (200, N_MELS)).astype(np.float32))
    return normalization


def _segments(count: int, frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(-6, 2, (count, frames, N_MELS)).astype(np.float32)


ARCHITECTURES = [
    {"architecture": "lstm"},
    {"architecture": "lstm", "lstm_layers": 2, "bidirectional": True, "input_statistics": True},
    {"architecture": "crnn"},
    {"architecture": "crnn", "crnn_recurrent": "lstm", "bidirectional": True, "std_pooling": True,
     "input_statistics": True},
    {"architecture": "lstm", "std_pooling": True, "spectral_summary": True},
    {"architecture": "crnn", "spectral_summary": True, "summary_band_groups": 3},
]


@pytest.mark.parametrize("choice", ARCHITECTURES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_padding_frames_do_not_change_the_prediction(choice):
    keras.utils.set_random_seed(1)
    model = build_classifier(N_MELS, 3, GenreHParams(**SMALL, **choice), _normalization())
    segments = _segments(2, 30, seed=2)
    padding = np.full((2, 11, N_MELS), PADDING_VALUE, np.float32)
    plain = model(segments, training=False).numpy()
    padded = model(np.concatenate([segments, padding], axis=1), training=False).numpy()
    np.testing.assert_allclose(padded, plain, atol=1e-5)
    # The same frames at a real value are audio, and do change it: the mask is what removes padding.
    loud = model(np.concatenate([segments, padding - 3.0], axis=1), training=False).numpy()
    assert np.abs(loud - plain).max() > 1e-4
    # A batch mixing lengths: the shorter segment, padded, scores as it does alone.
    mixed = np.concatenate([segments[:1], np.concatenate([segments[1:, :19], padding[1:, :11]], 1)])
    alone = model(segments[1:, :19], training=False).numpy()
    np.testing.assert_allclose(model(mixed, training=False).numpy()[1], alone[0], atol=1e-5)


@pytest.mark.parametrize("architecture", ["lstm", "crnn"])
def test_gradient_clipping_by_global_norm_is_configured(architecture):
    model = build_classifier(N_MELS, 3, GenreHParams(**SMALL, architecture=architecture,
                                                     clipnorm=0.25), _normalization())
    assert model.optimizer.global_clipnorm == pytest.approx(0.25)
    assert model.optimizer.clipnorm is None and model.optimizer.clipvalue is None
    assert [layer.name for layer in model.layers][-2:] == ["embedding", "probabilities"]


@pytest.mark.parametrize("weight_decay, ema_momentum", [(0.0, 0.0), (0.05, 0.9)])
def test_weight_decay_picks_adamw_and_weight_averaging_keeps_the_clipping(weight_decay,
                                                                         ema_momentum):
    hparams = GenreHParams(**SMALL, weight_decay=weight_decay, ema_momentum=ema_momentum,
                           clipnorm=0.5)
    model = build_classifier(N_MELS, 3, hparams, _normalization())
    assert type(model.optimizer).__name__ == ("AdamW" if weight_decay else "Adam")
    assert model.optimizer.global_clipnorm == pytest.approx(0.5)
    assert model.optimizer.use_ema == bool(ema_momentum)
    if weight_decay:
        assert model.optimizer.weight_decay == pytest.approx(weight_decay)
    if ema_momentum:
        # After fit the weights are the running average, not the last step's.
        keras.utils.set_random_seed(5)
        x, y = _segments(12, 10, seed=5), np.arange(12) % 3
        model.fit(x, y, epochs=2, batch_size=4, verbose=0)
        averages = [v.numpy() for v in model.optimizer._model_variables_moving_average]
        for variable, average in zip(model.trainable_variables, averages):
            np.testing.assert_array_equal(variable.numpy(), average)
    with pytest.raises(ValueError, match="ema_momentum"):
        GenreHParams(ema_momentum=1.0)


def test_weight_averaging_horizon_is_at_most_a_third_of_the_run():
    hparams = GenreHParams(ema_momentum=0.99, epochs=12)
    assert averaging_momentum(hparams, steps_per_epoch=100) == pytest.approx(0.99)
    assert averaging_momentum(hparams, steps_per_epoch=2) == pytest.approx(1 - 3 / 24)
    assert averaging_momentum(hparams, steps_per_epoch=None) == pytest.approx(0.99)
    model = build_classifier(N_MELS, 3, GenreHParams(**SMALL, ema_momentum=0.99, epochs=4),
                             _normalization(), steps_per_epoch=5)
    assert model.optimizer.ema_momentum == pytest.approx(1 - 3 / 20)


def test_spectral_summary_is_the_dct_and_the_band_group_contrast():
    import scipy.fft

    rng = np.random.default_rng(6)
    log_mel = rng.normal(-6, 2, (2, 9, N_MELS)).astype(np.float32)
    normalized = rng.normal(0, 1, (2, 9, N_MELS)).astype(np.float32)
    descriptors = SpectralSummary(N_MELS, n_coefficients=5, n_groups=3)(log_mel, normalized).numpy()
    assert descriptors.shape == (2, 9, 5 + 2 * 3)
    np.testing.assert_allclose(descriptors[..., :5],
                               scipy.fft.dct(normalized, norm="ortho", axis=-1)[..., :5], atol=1e-4)
    # Groups as np.array_split cuts 16 bands in 3: 6, 5, 5 bands.
    for group, bands in enumerate((slice(0, 6), slice(6, 11), slice(11, 16))):
        contrast, valley = descriptors[..., 5 + 2 * group], descriptors[..., 6 + 2 * group]
        np.testing.assert_allclose(valley, log_mel[..., bands].min(-1), atol=1e-6)
        np.testing.assert_allclose(contrast, np.ptp(log_mel[..., bands], axis=-1), atol=1e-5)
    with pytest.raises(ValueError, match="summary_band_groups"):
        SpectralSummary(N_MELS, n_coefficients=5, n_groups=9)
    with pytest.raises(ValueError, match="summary_coefficients"):
        SpectralSummary(N_MELS, n_coefficients=17, n_groups=2)


def test_the_optimizer_rescales_a_large_gradient_to_the_global_norm():
    hparams = GenreHParams(**SMALL, clipnorm=1e-3, learning_rate=1e-2)
    model = build_classifier(N_MELS, 3, hparams, _normalization())
    x, y = _segments(8, 12, seed=3), np.arange(8) % 3
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
    gradients = tape.gradient(loss, model.trainable_variables)
    clipped = model.optimizer._clip_gradients(gradients)
    assert float(tf.linalg.global_norm(gradients)) > 1e-3
    assert float(tf.linalg.global_norm(clipped)) == pytest.approx(1e-3, rel=1e-3)


def test_hparams_validate_choices_and_accept_yaml_lists():
    hparams = GenreHParams.from_dict({"architecture": "crnn", "conv_filters": [8, 16]})
    assert hparams.conv_filters == (8, 16) and hparams.to_dict()["conv_filters"] == [8, 16]
    for bad, match in (({"architecture": "transformer"}, "architecture"),
                       ({"lr_schedule": "step"}, "lr_schedule"),
                       ({"crnn_recurrent": "rnn"}, "crnn_recurrent"),
                       ({"conv_filters": [8, 0]}, "conv_filters"),
                       ({"time_mask_frames": -1}, "time_mask_frames"),
                       ({"lstm_layers": 0}, "lstm_layers")):
        with pytest.raises(ValueError, match=match):
            GenreHParams.from_dict(bad)
    with pytest.raises(ValueError, match="conv blocks"):
        build_classifier(4, 3, GenreHParams(architecture="crnn", conv_filters=(4, 4, 4)),
                         new_normalization())


def test_learning_rate_schedules():
    cosine = build_classifier(N_MELS, 3, GenreHParams(**SMALL, lr_schedule="cosine", epochs=4,
                                                      learning_rate=0.1), _normalization(),
                              steps_per_epoch=5)
    assert isinstance(cosine.optimizer._learning_rate, keras.optimizers.schedules.CosineDecay)
    assert float(cosine.optimizer._learning_rate(0)) == pytest.approx(0.1)
    assert float(cosine.optimizer._learning_rate(20)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        build_classifier(N_MELS, 3, GenreHParams(**SMALL, lr_schedule="cosine"), _normalization())

    epoch_logger = keras.callbacks.Callback()
    plateau = training_callbacks(GenreHParams(lr_schedule="plateau", early_stopping_patience=4,
                                              ema_momentum=0.0),
                                 "val_loss", "/tmp/unused", epoch_logger)
    kinds = {type(callback).__name__: callback for callback in plateau}
    assert kinds["ReduceLROnPlateau"].patience == 2 and kinds["ReduceLROnPlateau"].monitor == "val_loss"
    stopping = kinds["EarlyStopping"]
    assert stopping.restore_best_weights and stopping.monitor == "val_loss" and stopping.patience == 4
    assert "TensorBoard" in kinds
    constant = training_callbacks(GenreHParams(ema_momentum=0.0), "loss", "/tmp/unused",
                                  epoch_logger)
    assert not any(type(c).__name__ == "ReduceLROnPlateau" for c in constant)
    assert next(c for c in constant if type(c).__name__ == "EarlyStopping").restore_best_weights
    # With weight averaging the average is the result: no restore may replace it.
    averaged = training_callbacks(GenreHParams(ema_momentum=0.99), "loss", "/tmp/unused",
                                  epoch_logger)
    assert not next(c for c in averaged if type(c).__name__ == "EarlyStopping").restore_best_weights


def test_balanced_class_weights():
    weights = balanced_class_weights({0: 30, 1: 10, 2: 20}, 4)
    assert weights == pytest.approx({0: 60 / 90, 1: 60 / 30, 2: 60 / 60, 3: 1.0})
    # Weighted, every present class contributes the same total.
    assert 30 * weights[0] == pytest.approx(10 * weights[1]) == pytest.approx(20 * weights[2])


def test_spec_augment_masks_with_the_band_mean_and_keeps_shape_and_frames():
    assert spec_augment(0, 0, np.zeros(N_MELS)) is None
    tf.random.set_seed(4)
    band_means = np.linspace(-9, -3, N_MELS).astype(np.float32)
    augment = spec_augment(time_mask_frames=10, freq_mask_bands=6, band_means=band_means)
    segment = _segments(1, 40, seed=5)[0]
    changed_any = False
    for _ in range(20):
        masked, label = augment(tf.constant(segment), tf.constant(2, tf.int64))
        masked = masked.numpy()
        assert masked.shape == segment.shape and int(label) == 2
        changed = ~np.isclose(masked, segment)
        changed_any |= bool(changed.any())
        # Every changed cell holds its band's mean; no frame becomes padding.
        np.testing.assert_allclose(masked[changed], np.broadcast_to(band_means, masked.shape)[changed],
                                   atol=1e-5)
        assert not (masked == PADDING_VALUE).all(axis=1).any()
        # Masks are contiguous: at most 9 whole frames and 5 whole bands.
        assert changed.all(axis=1).sum() <= 9 and changed.all(axis=0).sum() <= 5
    assert changed_any
