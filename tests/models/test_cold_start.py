"""Cold start (models/next_track/cold_start.py, ridge.py, track_weights.py): regressor, weight surgery,
held-out cases, scoring."""
import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from musicrec.models import warm_start
from musicrec.models.next_track import cold_start
from musicrec.models.next_track.hparams import CATALOGUE_RANKING, NextTrackHParams
from musicrec.models.next_track.layout import NUM_RESERVED_IDS
from musicrec.models.next_track.model import build_model
from musicrec.models.next_track.ridge import DEFAULT_ALPHAS, RidgeRegressor
from musicrec.models.next_track.track_weights import read_rows, track_weights, write_rows

HPARAMS = NextTrackHParams(**CATALOGUE_RANKING, embedding_dim=4, lstm_units=6, top_k=5, max_prefix_length=3)


def test_ridge_leave_one_out_error_matches_refitting_without_each_row():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3))
    y = x @ rng.normal(size=(3, 2)) + 0.3 * rng.normal(size=(12, 2))
    fitted = RidgeRegressor.fit(x, y, alphas=[2.0])
    # Brute force: refit without row i (standardisation from the other rows, as the
    # closed form assumes for the intercept only), predict row i.
    squared = 0.0
    xs = (x - x.mean(axis=0)) / x.std(axis=0)
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        xk, yk = xs[keep], y[keep]
        xm, ym = xk.mean(axis=0), yk.mean(axis=0)
        coef = np.linalg.solve((xk - xm).T @ (xk - xm) + 2.0 * np.eye(3), (xk - xm).T @ (yk - ym))
        squared += np.sum((y[i] - ((xs[i] - xm) @ coef + ym)) ** 2)
    expected_r2 = 1.0 - squared / np.sum((y - y.mean(axis=0)) ** 2)
    # The closed form centres once on all rows; with a penalty that differs from the
    # refit only through the intercept term it includes, so they agree closely.
    assert fitted.loo_r2 == pytest.approx(expected_r2, abs=0.02)


def test_ridge_recovers_a_linear_map_and_picks_a_larger_penalty_for_noise():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5)) * [1.0, 10.0, 0.1, 3.0, 1.0] + 7.0
    truth = rng.normal(size=(5, 3))
    y = x @ truth + 2.0
    exact = RidgeRegressor.fit(x, y)
    assert exact.alpha == min(DEFAULT_ALPHAS)
    assert exact.loo_r2 > 0.99
    new_x = rng.normal(size=(4, 5)) + 7.0
    np.testing.assert_allclose(exact.predict(new_x), new_x @ truth + 2.0, atol=0.05)

    noise = RidgeRegressor.fit(x, rng.normal(size=(40, 3)))
    assert noise.alpha == max(DEFAULT_ALPHAS)
    assert noise.loo_r2 < 0.05

    restored = RidgeRegressor.from_dict(json.loads(json.dumps(exact.to_dict())))
    np.testing.assert_allclose(restored.predict(new_x), exact.predict(new_x))


def test_ridge_rejects_too_few_rows():
    with pytest.raises(ValueError, match="n >= 3"):
        RidgeRegressor.fit(np.ones((2, 3)), np.ones((2, 1)))


def test_track_weights_follow_tied_and_untied_output_layers():
    tied = build_model(7, dataclasses.replace(HPARAMS, tied_embeddings=True))
    assert [(w.layer, w.index, w.axis) for w in track_weights(tied, 7 + NUM_RESERVED_IDS)] \
        == [("track_embedding", 0, 0), ("next_track_logits", 0, 0)]
    model = build_model(7, dataclasses.replace(HPARAMS, tied_embeddings=False))
    weights = track_weights(model, 7 + NUM_RESERVED_IDS)
    assert [(w.layer, w.index, w.axis) for w in weights] == [
        ("track_embedding", 0, 0), ("next_track_logits", 0, 1), ("next_track_logits", 1, 0)]
    kernel = model.get_layer("next_track_logits").get_weights()[0]
    np.testing.assert_array_equal(read_rows(model, weights[1], [3, 5]), kernel[:, [3, 5]].T)
    write_rows(model, weights[1], [3], np.full((1, HPARAMS.lstm_units), 9.0))
    updated = model.get_layer("next_track_logits").get_weights()[0]
    assert np.all(updated[:, 3] == 9.0)
    np.testing.assert_array_equal(np.delete(updated, 3, axis=1), np.delete(kernel, 3, axis=1))


def _trained_like_checkpoint(model_dir, vocabulary, audio):
    """A next-track checkpoint whose per-track weights are an exact linear function of ``audio``."""
    keras.utils.set_random_seed(0)
    model = build_model(len(vocabulary), HPARAMS)
    maps = {}
    rng = np.random.default_rng(2)
    for weight in track_weights(model, len(vocabulary) + NUM_RESERVED_IDS):
        width = read_rows(model, weight, [0]).shape[1]
        maps[weight.name] = rng.normal(size=(audio.shape[1], width))
        ids = np.arange(NUM_RESERVED_IDS, NUM_RESERVED_IDS + len(vocabulary))
        write_rows(model, weight, ids, audio[:len(vocabulary)] @ maps[weight.name])
    warm_start.save_checkpoint(model, model_dir, vocabulary, HPARAMS.to_dict())
    return maps


def test_cold_tracks_are_appended_with_weights_predicted_from_audio(tmp_path):
    rng = np.random.default_rng(3)
    played = [f"warm-{i}" for i in range(30)]
    cold = ["cold-a", "cold-b"]
    audio = rng.normal(size=(32, 4))
    maps = _trained_like_checkpoint(str(tmp_path / "trained"), played, audio)
    # Audio order differs from the vocabulary's, and one played track has no audio.
    audio_ids = cold + played[1:]
    audio_rows = np.concatenate([audio[30:], audio[1:30]])

    result = cold_start.extend_with_cold_tracks(str(tmp_path / "trained"), played, audio_ids, audio_rows,
                                                warm_norm=False)
    assert result.vocabulary == played + cold
    assert result.cold_tracks == cold and len(result.warm_tracks) == 29
    for weight in track_weights(result.model, len(result.vocabulary) + NUM_RESERVED_IDS):
        predicted = read_rows(result.model, weight, [NUM_RESERVED_IDS + 30, NUM_RESERVED_IDS + 31])
        np.testing.assert_allclose(predicted, audio[30:] @ maps[weight.name], atol=0.05)
        # Warm tracks keep their trained weights.
        np.testing.assert_allclose(read_rows(result.model, weight, [NUM_RESERVED_IDS, NUM_RESERVED_IDS + 1]),
                                   audio[:2] @ maps[weight.name], atol=1e-5)
    assert all(fit.loo_r2 > 0.99 for fit in result.regressors.values())

    # By default vectors keep the predicted direction at the warm tracks' mean length.
    scaled = cold_start.extend_with_cold_tracks(str(tmp_path / "trained"), played, audio_ids, audio_rows)
    cold_ids = [NUM_RESERVED_IDS + 30, NUM_RESERVED_IDS + 31]
    warm_ids = [NUM_RESERVED_IDS + i for i in range(1, 30)]
    for weight in track_weights(scaled.model, len(scaled.vocabulary) + NUM_RESERVED_IDS):
        raw = read_rows(result.model, weight, cold_ids)
        rows = read_rows(scaled.model, weight, cold_ids)
        if raw.shape[1] == 1:  # a bias is not a direction
            np.testing.assert_allclose(rows, raw, rtol=1e-5)
            continue
        warm_length = np.linalg.norm(read_rows(scaled.model, weight, warm_ids), axis=1).mean()
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), warm_length, rtol=1e-4)
        cosine = np.sum(rows * raw, axis=1) / np.linalg.norm(rows, axis=1) / np.linalg.norm(raw, axis=1)
        np.testing.assert_allclose(cosine, 1.0, atol=1e-5)


def test_match_warm_norm_keeps_directions_and_leaves_biases_alone():
    warm = np.array([[3.0, 4.0], [0.0, 1.0]])  # lengths 5 and 1: mean 3
    predicted = np.array([[0.1, 0.0], [0.0, -0.2]])
    np.testing.assert_allclose(cold_start.match_warm_norm(predicted, warm), [[3.0, 0.0], [0.0, -3.0]])
    biases = np.array([[0.5], [-1.0]])
    np.testing.assert_array_equal(cold_start.match_warm_norm(biases, np.ones((3, 1))), biases)


def test_too_few_warm_tracks_is_a_clear_error(tmp_path):
    _trained_like_checkpoint(str(tmp_path / "trained"), ["a", "b", "c"], np.eye(3))
    with pytest.raises(ValueError, match="only 2 tracks have both audio and plays"):
        cold_start.extend_with_cold_tracks(str(tmp_path / "trained"), ["a", "b", "c"],
                                           ["a", "b", "x"], np.eye(3))
    with pytest.raises(ValueError, match="no next-track checkpoint"):
        cold_start.extend_with_cold_tracks(str(tmp_path / "nothing"), ["a"], ["a"], np.eye(1))


HOLDOUT_CSV = """user_id,timestamp,track_id,artist,ms_played,session_id,held_out
u1,2026-01-01T10:00:00Z,w1,A,1000,u1/0,0
u1,2026-01-01T10:04:00Z,c1,A,1000,u1/0,1
u2,2026-01-02T09:00:00Z,c2,B,1000,u2/3,1
u1,2026-01-01T10:08:00Z,w2,A,1000,u1/0,0
u2,2026-01-02T09:05:00Z,w3,B,1000,u2/3,0
u1,2026-01-01T10:12:00Z,c2,A,1000,u1/0,1
"""


def test_holdout_sessions_give_one_case_per_held_out_play_after_the_first(tmp_path):
    path = tmp_path / "cold_plays.csv"
    path.write_text(HOLDOUT_CSV)
    sessions = cold_start.read_holdout_sessions(str(path))
    assert sessions == [(["w1", "c1", "w2", "c2"], [False, True, False, True]),
                        (["c2", "w3"], [True, False])]
    cases = list(cold_start.holdout_cases(sessions, max_prefix_length=2))
    # u2's held-out play opens its session: no prefix, no case.
    assert cases == [(["w1"], "c1"), (["c1", "w2"], "c2")]


def test_holdout_file_errors_name_the_problem(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("session_id,timestamp,track_id\ns,2026-01-01T00:00:00Z,a\n")
    with pytest.raises(ValueError, match="held_out"):
        cold_start.read_holdout_sessions(str(path))
    path.write_text(HOLDOUT_CSV.replace("u1/0,1\n", "u1/0,yes\n", 1))
    with pytest.raises(ValueError, match="line 3"):
        cold_start.read_holdout_sessions(str(path))


def test_extended_savedmodel_ranks_cold_tracks_and_the_metrics_follow_the_protocol(tmp_path):
    rng = np.random.default_rng(4)
    played = [f"warm-{i}" for i in range(30)]
    audio = rng.normal(size=(32, 4))
    _trained_like_checkpoint(str(tmp_path / "trained"), played, audio)
    result = cold_start.extend_with_cold_tracks(
        str(tmp_path / "trained"), played, played + ["cold-a", "cold-b"], audio)
    out = str(tmp_path / "extended")
    cold_start.export_extended(result, out)
    assert cold_start.evaluate_extended(out, {"hr@5": 0.5}, k=5) is None  # no held-out cases yet

    import tensorflow as tf
    signature = tf.saved_model.load(os.path.join(out, "serving")).signatures["serving_default"]
    # Cold tracks can be inputs too (their input embedding was predicted as well).
    prefixes = [["warm-1", "warm-2"], ["cold-a", ""], ["warm-3", "cold-a"]]
    ranked = signature(track_keys=tf.constant(np.array(prefixes, dtype=object)))["track_keys"].numpy()
    ranked = [[key.decode() for key in row] for row in ranked]
    # The cold tracks are in the served catalogue: they have an output embedding, unknown keys none.
    embeddings = tf.saved_model.load(os.path.join(out, "serving")).signatures["track_embeddings"](
        track_keys=tf.constant(["cold-a", "never-seen"]))["embedding"].numpy()
    assert np.any(embeddings[0] != 0) and np.all(embeddings[1] == 0)
    targets = ["cold-a", "cold-b", "cold-b"]
    expected_hits = sum(target in row for target, row in zip(targets, ranked))

    csv_rows = ["user_id,timestamp,track_id,artist,ms_played,session_id,held_out"]
    for n, (prefix, target) in enumerate(zip(prefixes, targets)):
        plays = [key for key in prefix if key] + [target, "unknown-track"]
        for t, key in enumerate(plays):
            held = key == target or key == "unknown-track"
            csv_rows.append(f"u,2026-01-0{n + 1}T00:0{t}:00Z,{key},A,1,s{n},{int(held)}")
    plays_csv = tmp_path / "cold_plays.csv"
    plays_csv.write_text("\n".join(csv_rows) + "\n")
    assert cold_start.write_holdout_cases(str(plays_csv), out, HPARAMS.max_prefix_length) == 6

    metrics = cold_start.evaluate_extended(out, {"hr@5": 0.5}, k=5)
    assert metrics["n_cases"] == 3 and metrics["skipped_unknown_targets"] == 3
    assert metrics["cold"]["hr@5"] == pytest.approx(expected_hits / 3)
    assert metrics["random"]["hr@5"] == pytest.approx(5 / 32)
    assert metrics["catalogue_size"] == 32 and metrics["n_cold_tracks"] == 2
    assert metrics["cold_over_warm"] == pytest.approx(metrics["cold"]["hr@5"] / 0.5)
    assert "held-out play" in metrics["protocol"]
