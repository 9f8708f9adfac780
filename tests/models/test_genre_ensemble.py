"""Tests of the in-model seed ensemble (``GenreHParams.ensemble_members``).

The unit tests build tiny classifiers on random log-mel; the last one trains a
two-member ensemble through ``run_fn`` on the synthetic examples of
``test_genre_model`` and checks the exported serving contract.
"""
from __future__ import annotations

import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_genre_model import LABELS, N_MELS, train_on_examples  # noqa: E402

from musicrec.models import export_check
from musicrec.models.genre.hparams import GenreHParams
from musicrec.models.genre.layers import PADDING_VALUE
from musicrec.models.genre.losses import GenreCrossentropy
from musicrec.models.genre.model import build_classifier, build_serving_model, new_normalization

MEMBERS = 3
SMALL = {"lstm_units": 4, "embedding_dim": 5, "ensemble_members": MEMBERS}


def _log_mel(rng: np.random.Generator, batch: int = 4, frames: int = 12) -> np.ndarray:
    return rng.normal(-6.0, 1.0, size=(batch, frames, N_MELS)).astype(np.float32)


def _ensemble(architecture: str = "lstm") -> keras.Model:
    keras.utils.set_random_seed(1)
    normalization = new_normalization()
    normalization.adapt(_log_mel(np.random.default_rng(0), batch=16))
    return build_classifier(N_MELS, len(LABELS),
                            GenreHParams(**SMALL, architecture=architecture), normalization)


def _members(classifier: keras.Model) -> list[keras.Model]:
    return [classifier.get_layer(f"member_{index}") for index in range(1, MEMBERS + 1)]


def test_members_start_from_different_weights():
    members = _members(_ensemble())
    kernels = [member.get_layer("embedding").get_weights()[0] for member in members]
    for index, kernel in enumerate(kernels):
        for other in kernels[index + 1:]:
            assert np.abs(kernel - other).max() > 1e-3
    # The fixed input normalisation is the one layer they share.
    assert len({id(member.get_layer("normalize")) for member in members}) == 1


@pytest.mark.parametrize("architecture", ["lstm", "crnn"])
def test_serving_averages_the_members_and_concatenates_their_embeddings(architecture):
    classifier = _ensemble(architecture)
    log_mel = _log_mel(np.random.default_rng(2))
    member_outputs = [member(log_mel) for member in _members(classifier)]
    member_probabilities = np.stack([np.asarray(p) for _, p in member_outputs], axis=1)
    # The training output is every member's probabilities, [batch, members, classes].
    np.testing.assert_allclose(np.asarray(classifier(log_mel)), member_probabilities, atol=1e-6)

    served = build_serving_model(classifier, LABELS)(log_mel)
    np.testing.assert_allclose(np.asarray(served["probabilities"]),
                               member_probabilities.mean(axis=1), atol=1e-6)
    assert np.abs(member_probabilities - member_probabilities.mean(axis=1, keepdims=True)).max() > 1e-4
    assert served["embedding"].shape == (4, MEMBERS * SMALL["embedding_dim"])
    np.testing.assert_allclose(np.asarray(served["embedding"]),
                               np.concatenate([np.asarray(e) for e, _ in member_outputs], axis=1),
                               atol=1e-6)
    top = np.asarray(served["probabilities"]).argmax(axis=1)
    assert list(np.asarray(served["genre"]).astype(str)) == [LABELS[i] for i in top]


def test_the_loss_is_the_mean_of_the_members_own_losses():
    rng = np.random.default_rng(3)
    member_probabilities = rng.dirichlet(np.ones(len(LABELS)), size=(6, MEMBERS)).astype(np.float32)
    labels = rng.integers(0, len(LABELS), size=6)
    loss = GenreCrossentropy(0.1)
    own = np.mean([float(loss(labels, member_probabilities[:, k])) for k in range(MEMBERS)])
    assert float(loss(labels, member_probabilities)) == pytest.approx(own, rel=1e-5)
    # Not the loss of the averaged output (which is lower, by Jensen's inequality).
    assert float(loss(labels, member_probabilities.mean(axis=1))) < own - 1e-3


def test_ensemble_members_must_be_positive():
    with pytest.raises(ValueError, match="ensemble_members"):
        GenreHParams(ensemble_members=0)


def test_trained_ensemble_exports_the_contract_with_masking(tmp_path):
    hparams = {"lstm_units": 8, "embedding_dim": 4, "dropout": 0.1, "learning_rate": 1e-2,
               "epochs": 3, "batch_size": 16, "ensemble_members": 2}
    args, metrics, tracks = train_on_examples(tmp_path, hparams)
    assert metrics["hparams"]["ensemble_members"] == 2
    check_exported_ensemble(args.serving_dir, next(iter(tracks["test"].values()))[1],
                            2 * hparams["embedding_dim"])


def check_exported_ensemble(serving_dir: str, segments: np.ndarray, embedding_width: int) -> None:
    """An exported ensemble keeps the contract: core ops, the four outputs, the members' embeddings
    side by side, probabilities that sum to 1, and padding frames that change nothing."""
    assert export_check.non_core_ops(serving_dir) == set()
    signature = tf.saved_model.load(serving_dir).signatures["serving_default"]
    assert set(signature.structured_outputs) == {"probabilities", "classes", "genre", "embedding"}
    plain = signature(log_mel=tf.constant(segments[:, None]))   # each segment a track
    assert plain["embedding"].shape == (len(segments), embedding_width)
    np.testing.assert_allclose(plain["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)
    padding = np.full((len(segments), 7, N_MELS), PADDING_VALUE, dtype=np.float32)
    padded = signature(log_mel=tf.constant(np.concatenate([segments, padding], axis=1)[:, None]))
    np.testing.assert_allclose(padded["probabilities"].numpy(), plain["probabilities"].numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(padded["embedding"].numpy(), plain["embedding"].numpy(), atol=1e-5)
