"""Mixup and label smoothing for the genre models: the blend, padding, the soft-target loss."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from musicrec.models.genre.augment import mixup
from musicrec.models.genre.hparams import GenreHParams
from musicrec.models.genre.layers import PADDING_VALUE
from musicrec.models.genre.losses import GenreCrossentropy, genre_accuracy
from musicrec.models.genre.model import build_classifier, new_normalization

N_MELS = 16
SMALL = {"lstm_units": 8, "embedding_dim": 4, "conv_filters": (4, 4)}


def _normalization() -> keras.layers.Normalization:
    normalization = new_normalization()
    normalization.adapt(np.random.default_rng(0).normal(-6, 2, (200, N_MELS)).astype(np.float32))
    return normalization


def test_mixup_blends_each_segment_with_its_mirror_and_keeps_most_of_itself():
    rng = np.random.default_rng(1)
    log_mel = rng.normal(-6, 2, (6, 10, N_MELS)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2], np.int64)
    mixed, targets = mixup(0.4, 3, seed=7)(tf.constant(log_mel), tf.constant(labels))
    mixed, targets = mixed.numpy(), targets.numpy()
    assert mixed.shape == log_mel.shape and targets.shape == (6, 3)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)
    # The weight of the own label is lam >= 0.5; the rest goes to the mirrored segment's label.
    lam = targets[np.arange(6), labels]
    partner_labels = labels[::-1]
    for row in range(6):
        if partner_labels[row] == labels[row]:
            assert lam[row] == pytest.approx(1.0)
            continue
        assert 0.5 <= lam[row] <= 1.0
        assert targets[row, partner_labels[row]] == pytest.approx(1.0 - lam[row], abs=1e-6)
        np.testing.assert_allclose(mixed[row], lam[row] * log_mel[row]
                                   + (1 - lam[row]) * log_mel[::-1][row], atol=1e-4)
    assert not np.allclose(mixed, log_mel)
    assert mixup(0.0, 3) is None


def test_mixup_leaves_padding_as_padding_and_real_frames_real():
    rng = np.random.default_rng(2)
    log_mel = rng.normal(-6, 2, (2, 8, N_MELS)).astype(np.float32)
    log_mel[0, 5:] = PADDING_VALUE  # the first segment is 5 frames long
    mixed = mixup(1.0, 2, seed=3)(tf.constant(log_mel), tf.constant([0, 1], tf.int64))[0].numpy()
    # Own padding stays padding; where only the partner is padding the own frames stay as they were.
    np.testing.assert_array_equal(mixed[0, 5:], PADDING_VALUE)
    np.testing.assert_array_equal(mixed[1, 5:], log_mel[1, 5:])
    assert np.all(np.any(mixed[:, :5] != PADDING_VALUE, axis=-1))


def test_genre_crossentropy_reads_integer_labels_and_soft_targets_with_smoothing():
    probabilities = tf.constant([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    labels = tf.constant([0, 2])
    plain = keras.losses.SparseCategoricalCrossentropy()(labels, probabilities)
    assert float(GenreCrossentropy(0.0)(labels, probabilities)) == pytest.approx(float(plain), 1e-5)
    one_hot = tf.one_hot(labels, 3)
    assert float(GenreCrossentropy(0.0)(one_hot, probabilities)) == pytest.approx(float(plain), 1e-5)
    smoothed = float(GenreCrossentropy(0.3)(labels, probabilities))
    target = np.eye(3)[[0, 2]] * 0.7 + 0.1
    expected = -np.mean(np.sum(target * np.log(probabilities.numpy()), axis=1))
    assert smoothed == pytest.approx(expected, rel=1e-5)
    accuracy = genre_accuracy(tf.constant([[0.6, 0.4, 0.0], [0.0, 0.6, 0.4]]), probabilities)
    np.testing.assert_array_equal(accuracy.numpy(), [1.0, 0.0])


@pytest.mark.parametrize("architecture", ["lstm", "crnn"])
def test_a_mixup_model_trains_on_blended_batches_and_scores_integer_labels(architecture):
    keras.utils.set_random_seed(4)
    hparams = GenreHParams(**SMALL, architecture=architecture, mixup_alpha=0.4,
                           label_smoothing=0.1, recurrent_path_dropout=0.5, head_l2=1e-3, epochs=2)
    model = build_classifier(N_MELS, 3, hparams, _normalization())
    rng = np.random.default_rng(5)
    x = rng.normal(-6, 2, (24, 12, N_MELS)).astype(np.float32)
    y = (np.arange(24) % 3).astype(np.int64)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).map(mixup(0.4, 3, seed=1))
    history = model.fit(data, epochs=2, verbose=0, class_weight={0: 1.0, 1: 2.0, 2: 1.0})
    assert np.all(np.isfinite(history.history["loss"]))
    # Validation and evaluation keep integer labels.
    scores = model.evaluate(x, y, verbose=0, return_dict=True)
    assert 0.0 <= scores["accuracy"] <= 1.0 and np.isfinite(scores["loss"])
    assert model.get_layer("recurrent_path_dropout").rate == pytest.approx(0.5)
    # The head's L2 penalty is part of the loss.
    assert len(model.losses) == 2


def test_new_regularisation_hparams_are_validated():
    for name, bad in (("mixup_alpha", -0.1), ("label_smoothing", 1.0),
                      ("recurrent_path_dropout", 1.0), ("head_l2", -1.0)):
        with pytest.raises(ValueError, match=name):
            GenreHParams.from_dict({name: bad})
