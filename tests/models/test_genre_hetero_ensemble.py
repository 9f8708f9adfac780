"""Tests of the heterogeneous genre ensemble (``GenreHParams.ensemble``) and the random gain.

The unit tests build tiny classifiers on random log-mel; the last one trains an
LSTM + CRNN ensemble with the random gain through ``run_fn`` on the synthetic
examples of ``test_genre_model`` and checks the exported serving contract.
"""
from __future__ import annotations

import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_genre_ensemble import check_exported_ensemble  # noqa: E402
from test_genre_model import LABELS, N_MELS, train_on_examples  # noqa: E402

from musicrec.models.genre.augment import chain, random_gain
from musicrec.models.genre.hparams import GenreHParams
from musicrec.models.genre.layers import PADDING_VALUE
from musicrec.models.genre.model import build_classifier, build_serving_model, new_normalization
from musicrec.models.genre.train import SHAPE_HPARAMS, warm_start_keys

# An LSTM member and a CRNN member of different embedding widths.
LSTM_EMBEDDING, CRNN_EMBEDDING = 5, 3
MEMBERS = [{}, {"architecture": "crnn", "std_pooling": True, "conv_filters": [4, 4],
                "embedding_dim": CRNN_EMBEDDING}]
SMALL = {"lstm_units": 4, "embedding_dim": LSTM_EMBEDDING, "ensemble": MEMBERS}


def _log_mel(rng: np.random.Generator, batch: int = 4, frames: int = 12) -> np.ndarray:
    return rng.normal(-6.0, 1.0, size=(batch, frames, N_MELS)).astype(np.float32)


def _classifier() -> keras.Model:
    keras.utils.set_random_seed(1)
    normalization = new_normalization()
    normalization.adapt(_log_mel(np.random.default_rng(0), batch=16))
    return build_classifier(N_MELS, len(LABELS), GenreHParams.from_dict(SMALL), normalization)


def test_each_member_has_its_own_architecture():
    hparams = GenreHParams.from_dict(SMALL)
    assert [member.architecture for member in hparams.members()] == ["lstm", "crnn"]
    # Keys a member does not set come from the model's hyperparameters.
    assert [member.lstm_units for member in hparams.members()] == [4, 4]
    classifier = _classifier()
    lstm, crnn = classifier.get_layer("member_1"), classifier.get_layer("member_2")
    assert any(isinstance(layer, keras.layers.LSTM) for layer in lstm.layers)
    assert not any(isinstance(layer, keras.layers.Conv2D) for layer in lstm.layers)
    assert any(isinstance(layer, keras.layers.Conv2D) for layer in crnn.layers)
    assert any(isinstance(layer, keras.layers.GRU) for layer in crnn.layers)


def test_serving_averages_the_members_and_concatenates_their_embeddings():
    classifier = _classifier()
    log_mel = _log_mel(np.random.default_rng(2))
    outputs = [classifier.get_layer(f"member_{k}")(log_mel) for k in (1, 2)]
    member_probabilities = np.stack([np.asarray(p) for _, p in outputs], axis=1)
    np.testing.assert_allclose(np.asarray(classifier(log_mel)), member_probabilities, atol=1e-6)

    served = build_serving_model(classifier, LABELS)(log_mel)
    np.testing.assert_allclose(np.asarray(served["probabilities"]),
                               member_probabilities.mean(axis=1), atol=1e-6)
    assert served["embedding"].shape == (4, LSTM_EMBEDDING + CRNN_EMBEDDING)
    np.testing.assert_allclose(np.asarray(served["embedding"]),
                               np.concatenate([np.asarray(e) for e, _ in outputs], axis=1),
                               atol=1e-6)


def test_padding_does_not_change_the_ensembles_prediction():
    served = build_serving_model(_classifier(), LABELS)
    log_mel = _log_mel(np.random.default_rng(4))
    plain = served(log_mel)
    padding = np.full((4, 5, N_MELS), PADDING_VALUE, dtype=np.float32)
    padded = served(np.concatenate([log_mel, padding], axis=1))
    for name in ("probabilities", "embedding"):
        np.testing.assert_allclose(np.asarray(padded[name]), np.asarray(plain[name]), atol=1e-5)
    # The same extra frames at a real value are not padding and do change it.
    loud = served(np.concatenate([log_mel, padding + 1.0], axis=1))
    assert np.abs(np.asarray(loud["probabilities"]) - np.asarray(plain["probabilities"])).max() > 1e-5


@pytest.mark.parametrize("values, message", [
    ({"ensemble": [{}]}, "two members or more"),
    ({"ensemble": [{}, {"epochs": 3}]}, r"\['epochs'\] cannot be set per member"),
    ({"ensemble": [{}, {}], "ensemble_members": 3}, "contradicts the 2 members"),
    ({"ensemble": [{}, {"architecture": "cnn"}]}, "architecture must be one of"),
    ({"ensemble": [{}, {"dropout": 1.5}]}, "dropout must be in"),
    ({"ensemble": "crnn"}, "must be a list of mappings"),
    ({"ensemble": [{}, "crnn"]}, "member 2 must be a mapping"),
    ({"random_gain_db": -1.0}, "random_gain_db must be >= 0"),
])
def test_bad_ensemble_and_gain_values_are_rejected_with_their_name(values, message):
    with pytest.raises(ValueError, match=message):
        GenreHParams.from_dict(values)


def test_ensemble_members_may_repeat_the_ensemble_size_and_round_trips_through_to_dict():
    hparams = GenreHParams.from_dict({**SMALL, "ensemble_members": 2})
    assert len(hparams.members()) == 2
    values = hparams.to_dict()
    assert values["ensemble"] == MEMBERS
    assert GenreHParams.from_dict(values) == hparams
    assert GenreHParams().to_dict()["ensemble"] == []


def test_random_gain_shifts_each_segment_by_one_constant_within_the_range():
    assert random_gain(0.0) is None
    shift = random_gain(6.0, seed=5)
    segment = tf.constant(_log_mel(np.random.default_rng(6), batch=1)[0])
    offsets = []
    for _ in range(40):
        shifted, label = shift(segment, tf.constant(2, tf.int64))
        assert int(label) == 2
        difference = (shifted - segment).numpy()
        np.testing.assert_allclose(difference, difference[0, 0], atol=1e-5)
        offsets.append(float(difference[0, 0]))
    # +-6 dB of power is +-0.6 ln(10) on the natural-log log-mel.
    assert max(abs(o) for o in offsets) <= 0.6 * np.log(10.0) + 1e-6
    assert min(offsets) < -0.3 and max(offsets) > 0.3


def test_chain_applies_the_maps_in_order_and_skips_the_missing():
    assert chain(None, None) is None
    double = lambda x, y: (x * 2.0, y)  # noqa: E731
    plus_one = lambda x, y: (x + 1.0, y)  # noqa: E731
    assert chain(None, double) is double
    result, _ = chain(double, None, plus_one)(tf.constant([1.0]), tf.constant(0))
    assert float(result[0]) == 3.0


def test_an_old_checkpoint_without_ensemble_still_warm_starts_a_plain_model():
    old_checkpoint = {key: value for key, value in GenreHParams().to_dict().items()
                      if key != "ensemble"}
    assert "ensemble" not in warm_start_keys(GenreHParams(), old_checkpoint)
    assert "ensemble" in warm_start_keys(GenreHParams.from_dict(SMALL), old_checkpoint)
    assert warm_start_keys(GenreHParams(), GenreHParams().to_dict()) == SHAPE_HPARAMS


def test_trained_lstm_crnn_ensemble_with_random_gain_exports_the_contract(tmp_path):
    hparams = {"lstm_units": 8, "embedding_dim": 4, "dropout": 0.1, "learning_rate": 1e-2,
               "epochs": 2, "batch_size": 16, "random_gain_db": 6.0,
               "ensemble": [{}, {"architecture": "crnn", "std_pooling": True,
                                 "conv_filters": [4, 4], "embedding_dim": 6}]}
    args, metrics, tracks = train_on_examples(tmp_path, hparams)
    assert metrics["hparams"]["ensemble"][1]["architecture"] == "crnn"
    assert metrics["hparams"]["random_gain_db"] == 6.0
    check_exported_ensemble(args.serving_dir, next(iter(tracks["test"].values()))[1], 4 + 6)
