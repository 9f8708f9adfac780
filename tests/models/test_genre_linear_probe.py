"""The pretrained clip head's linear probe: fitted like scikit-learn's, blended into the answer, seed-free."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from musicrec.models.genre.linear_probe import fit_linear_probe
from musicrec.models.genre.pretrained import (PretrainedHParams, build_clip_head, clip_statistics,
                                              compile_for_training, fixed_normalization, pad_clips,
                                              probe_statistics)
from musicrec.models.genre.train_pretrained import fit_head

WIDTH = 6


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _clips(n_classes: int, per_class: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Clips of 3-6 patches whose embedding mean depends on the class."""
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for label in range(n_classes):
        for _ in range(per_class):
            centre = np.eye(WIDTH)[label % WIDTH] * 2.0
            clips.append((centre + rng.standard_normal((int(rng.integers(3, 7)), WIDTH))).astype(np.float32))
            labels.append(label)
    return clips, np.array(labels)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_the_probe_gives_scikit_learns_probabilities(n_classes):
    from sklearn.linear_model import LogisticRegression

    statistics = np.random.default_rng(0).standard_normal((40, 2 * WIDTH))
    labels = np.arange(40) % n_classes
    statistics[:, 0] += labels   # something to learn
    kernel, bias = fit_linear_probe(statistics, labels, n_classes)
    reference = LogisticRegression(max_iter=5000, class_weight="balanced").fit(statistics, labels)
    np.testing.assert_allclose(_softmax(statistics @ kernel + bias), reference.predict_proba(statistics),
                               atol=1e-5)


def test_a_genre_without_training_clips_gets_no_probability():
    statistics = np.random.default_rng(1).standard_normal((30, 2 * WIDTH))
    labels = np.array([0, 2] * 15)
    kernel, bias = fit_linear_probe(statistics, labels, 3)
    probabilities = _softmax(statistics @ kernel + bias)
    assert probabilities[:, 1].max() < 1e-9
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("probe_features", ["embedding", "embedding_and_pooled"])
def test_the_head_serves_the_blend_and_trains_its_own_softmax(probe_features):
    pooled_clips, labels = _clips(3, 4, seed=2)
    hparams = PretrainedHParams(linear_share=0.25, embedding_dim=8, recurrent_units=4,
                                probe_features=probe_features)
    # A stand-in for musicnn's penultimate block: the pooled features' own projection.
    penultimate = keras.layers.Dense(4, activation="relu", name="penultimate") if hparams.reads_pooled else None
    clips = [np.asarray(penultimate(clip)) for clip in pooled_clips] if penultimate else pooled_clips
    statistics_normalization = fixed_normalization(clip_statistics(clips), "statistics_normalization")
    probe_inputs = probe_statistics(clips, pooled_clips, hparams)
    assert probe_inputs.shape == (len(clips), 2 * (4 + WIDTH) if penultimate else 2 * WIDTH)
    probe_normalization = fixed_normalization(probe_inputs, "probe_normalization")
    probe = fit_linear_probe(np.asarray(probe_normalization(probe_inputs)), labels, 3)
    head = build_clip_head(WIDTH, 3, hparams, fixed_normalization(np.concatenate(clips), "patches"),
                           statistics_normalization, penultimate, probe, probe_normalization)
    padded, mask = pad_clips(pooled_clips)
    inputs = {"patch_features": padded, "patch_mask": mask}
    served = np.asarray(head(inputs)[0])
    own = np.asarray(keras.Model(head.inputs, head.get_layer("probabilities").output)(inputs))
    probe_only = _softmax(np.asarray(probe_normalization(probe_inputs)) @ probe[0] + probe[1])
    np.testing.assert_allclose(served, 0.75 * own + 0.25 * probe_only, atol=1e-5)
    trained = compile_for_training(head, hparams)
    assert trained.outputs[0] is head.get_layer("probabilities").output
    assert not head.get_layer("linear_probe").trainable_weights
    with pytest.raises(ValueError, match="linear_probe"):
        build_clip_head(WIDTH, 3, hparams, fixed_normalization(np.concatenate(clips), "patches"),
                        statistics_normalization, penultimate)


def test_the_probe_is_the_same_whatever_the_seed():
    clips, labels = _clips(3, 5, seed=3)
    hparams = PretrainedHParams(linear_share=0.5, epochs=2, embedding_dim=8, recurrent_units=4,
                                probe_features="embedding")
    probes = [fit_head(clips, labels, 3, hparams, seed=seed)[0].get_layer("linear_probe").get_weights()
              for seed in (0, 1)]
    for first, second in zip(*probes):
        np.testing.assert_array_equal(first, second)
    without = fit_head(clips, labels, 3, PretrainedHParams(linear_share=0.0, epochs=1), seed=0)[0]
    assert "linear_probe" not in [layer.name for layer in without.layers]
