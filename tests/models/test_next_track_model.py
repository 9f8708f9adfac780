"""Next-track LSTM: training examples, training + export, the serving contract, evaluation."""
from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from musicrec.models.baselines import PopularityBaseline
from musicrec.models.export_check import non_core_ops
from musicrec.models.next_track import data
from musicrec.models.next_track.evaluate import RankingMetrics, evaluate
from musicrec.models.next_track.history import ListeningHistory
from musicrec.models.next_track.hparams import CATALOGUE_RANKING, NextTrackHParams
from musicrec.models.next_track.layout import make_track_lookup
from musicrec.models.next_track.model import build_model
from musicrec.models.next_track.serving import build_serving_model
from musicrec.models.next_track.sessions import SessionRecord
from musicrec.models.next_track.train import run_fn
from musicrec.models.train_args import TrainArgs

NUM_TRACKS = 60  # > 20, so popularity cannot score a hit on every case at k=20
TOP_K = 20
UNKNOWN_KEY = "never-in-train"
FAST_HPARAMS = {**CATALOGUE_RANKING, "embedding_dim": 16, "lstm_units": 32, "learning_rate": 0.01, "epochs": 12,
                "batch_size": 64, "early_stopping_patience": 2, "max_prefix_length": 6,
                "history_length": 6, "rnn_history_length": 2, "top_k": TOP_K}


def track(index: int) -> str:
    return f"track-{index % NUM_TRACKS:02d}"


def successor_sessions(rng: random.Random, count: int) -> list[list[str]]:
    """Sessions where track i is always followed by track i + 1 (mod NUM_TRACKS)."""
    sessions = []
    for _ in range(count):
        start, length = rng.randrange(NUM_TRACKS), rng.randint(4, 9)
        sessions.append([track(start + offset) for offset in range(length)])
    return sessions


def write_sessions(path: str, sessions: list[list[str]]) -> str:
    """Writes sessions as GZIP TFRecords of SequenceExamples per the Sessions contract."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for number, plays in enumerate(sessions):
            example = tf.train.SequenceExample()
            example.context.feature["user_id"].bytes_list.value.append(b"user-1")
            example.context.feature["session_id"].bytes_list.value.append(f"s{number}".encode())
            example.context.feature["start_time"].int64_list.value.append(1_700_000_000 + number)
            keys = example.feature_lists.feature_list["track_key"]
            times = example.feature_lists.feature_list["timestamp"]
            for offset, key in enumerate(plays):
                keys.feature.add().bytes_list.value.append(key.encode())
                times.feature.add().int64_list.value.append(1_700_000_000 + number + 60 * offset)
            writer.write(example.SerializeToString())
    return path


def write_vocabulary(examples_dir: str, sessions: list[list[str]]) -> list[str]:
    counts: dict[str, int] = {}
    for plays in sessions:
        for key in plays:
            counts[key] = counts.get(key, 0) + 1
    vocabulary = sorted(counts, key=lambda key: (-counts[key], key))
    with open(os.path.join(examples_dir, "vocab.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(vocabulary) + "\n")
    return vocabulary


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Trains and exports once on structured sessions; the test split has OOV targets."""
    root = str(tmp_path_factory.mktemp("next_track"))
    rng = random.Random(7)
    train_sessions = successor_sessions(rng, 450)
    test_sessions = successor_sessions(rng, 40)
    test_sessions[0] = [track(3), UNKNOWN_KEY, track(4)]  # one OOV target
    test_sessions[1] = [track(9)]  # too short to give a case
    examples_dir = os.path.join(root, "examples")
    train_file = write_sessions(f"{examples_dir}/Split-train/data-0.tfrecord.gz", train_sessions)
    eval_file = write_sessions(f"{examples_dir}/Split-eval/data-0.tfrecord.gz",
                               successor_sessions(rng, 40))
    test_file = write_sessions(f"{examples_dir}/Split-test/data-0.tfrecord.gz", test_sessions)
    vocabulary = write_vocabulary(examples_dir, train_sessions)
    args = TrainArgs(train_files=[train_file], eval_files=[eval_file], examples_dir=examples_dir,
                     model_dir=os.path.join(root, "model"), hparams=FAST_HPARAMS, seed=1)
    metrics = run_fn(args)
    return {"args": args, "metrics": metrics, "vocabulary": vocabulary, "test_file": test_file,
            "test_sessions": test_sessions}


@pytest.fixture(scope="module")
def signature(trained):
    return tf.saved_model.load(trained["args"].serving_dir).signatures["serving_default"]


def test_training_pairs_cover_every_position_with_truncated_right_padded_prefixes():
    prefixes, targets = data.training_pairs(tf.constant([5, 6, 7, 8], tf.int64), max_prefix_length=2)
    np.testing.assert_array_equal(prefixes.numpy(), [[5, 0], [5, 6], [6, 7]])
    np.testing.assert_array_equal(targets.numpy(), [6, 7, 8])

    key_prefixes, key_targets = data.training_pairs(tf.constant(["a", "b"]), 3, padding="")
    assert key_prefixes.numpy().tolist() == [[b"a", b"", b""]]
    assert key_targets.numpy().tolist() == [b"b"]

    lone_prefixes, lone_targets = data.training_pairs(tf.constant([4], tf.int64), 3)
    assert lone_prefixes.shape == (0, 3) and lone_targets.shape == (0,)


def test_build_examples_use_contract_ids_history_and_drop_oov_targets():
    hparams = NextTrackHParams(history_length=2, rnn_history_length=1, max_prefix_length=2)
    earlier = SessionRecord("u", "u-1", 100, ("b", "a", "b"), (100, 160, 220))
    session = SessionRecord("u", "u-2", 1000, ("a", "x", "b"), (1000, 1060, 1120))
    examples = data.build_examples([session], ListeningHistory([earlier]), ["a", "b"], hparams)
    inputs, targets = examples.inputs(), examples.targets
    # a -> 2, b -> 3 (after padding 0 and OOV 1); (a -> x) is dropped, x stays as OOV.
    # Layout: [history (2, right-aligned) | boundary (-1) | session prefix (2, right-aligned)].
    np.testing.assert_array_equal(inputs, [[2, 3, -1, 2, 1]])
    np.testing.assert_array_equal(targets, [3])


def test_hparams_reject_unknown_names_and_lookup_rejects_padding_key():
    hparams = NextTrackHParams.from_dict({"top_k": 5, "learning_rate": "2e-3", "epochs": 3.0})
    assert (hparams.top_k, hparams.learning_rate, hparams.epochs) == (5, 0.002, 3)
    assert isinstance(hparams.epochs, int)
    with pytest.raises(ValueError, match="integer"):
        NextTrackHParams.from_dict({"epochs": 2.5})
    with pytest.raises(ValueError, match="lstm_size"):
        NextTrackHParams.from_dict({"lstm_size": 8})
    with pytest.raises(ValueError, match="padding"):
        make_track_lookup(["a", ""])


def test_run_fn_writes_metrics_and_serving_model(trained):
    args, metrics = trained["args"], trained["metrics"]
    on_disk = json.load(open(os.path.join(args.model_dir, "train_metrics.json"), encoding="utf-8"))
    assert on_disk == metrics
    assert metrics["monitor"] == f"val_hr@{TOP_K}"
    assert 1 <= metrics["epochs_run"] == len(metrics["history"]["val_loss"]) <= FAST_HPARAMS["epochs"]
    # restore_best_weights: the final validation HR@20 is the best one seen.
    assert metrics["validation"][f"hr@{TOP_K}"] == pytest.approx(
        max(metrics["history"][f"val_hr@{TOP_K}"]), rel=1e-4)
    assert metrics["vocab_size"] == NUM_TRACKS and metrics["top_k"] == TOP_K
    assert os.path.exists(os.path.join(args.serving_dir, "saved_model.pb"))
    assert not os.path.exists(f"{args.serving_dir}.tmp")


def test_serving_signature_follows_the_contract(signature, trained):
    _, inputs = signature.structured_input_signature
    assert set(inputs) == {"track_keys"}
    assert inputs["track_keys"].dtype == tf.string
    assert inputs["track_keys"].shape.as_list() == [None, None]
    outputs = signature.structured_outputs
    assert set(outputs) == {"track_keys", "scores"}
    assert outputs["track_keys"].dtype == tf.string and outputs["scores"].dtype == tf.float32

    result = signature(track_keys=tf.constant([[track(1), track(2), ""], [track(5), "", ""]]))
    assert result["track_keys"].shape == (2, TOP_K) and result["scores"].shape == (2, TOP_K)
    scores = result["scores"].numpy()
    assert np.all(np.diff(scores, axis=1) <= 0) and np.all(scores >= 0)
    assert np.all(scores.sum(axis=1) <= 1.0 + 1e-5)
    returned = {key.decode() for key in result["track_keys"].numpy().ravel()}
    assert returned <= set(trained["vocabulary"])


def test_model_never_returns_padding_or_oov_even_when_they_score_highest():
    vocabulary = ["a", "b", "c"]
    core = build_model(len(vocabulary), NextTrackHParams(**CATALOGUE_RANKING, embedding_dim=4, lstm_units=4))
    weights = core.get_layer("next_track_logits").get_weights()
    weights[-1][:2] = 50.0  # padding and OOV would win every ranking without suppression
    core.get_layer("next_track_logits").set_weights(weights)
    serving = build_serving_model(core, vocabulary, top_k=10)  # k is capped at 3
    result = serving(tf.constant([["a", ""], ["zzz", "zzz"], ["", ""]]))
    keys = result["track_keys"].numpy()
    assert keys.shape == (3, 3)
    for row in keys:
        assert sorted(key.decode() for key in row) == vocabulary
    np.testing.assert_allclose(result["scores"].numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_extra_right_padding_does_not_change_the_output(signature):
    short = signature(track_keys=tf.constant([[track(10), track(11)]]))
    padded = signature(track_keys=tf.constant([[track(10), track(11), "", "", "", ""]]))
    np.testing.assert_array_equal(short["track_keys"].numpy(), padded["track_keys"].numpy())
    np.testing.assert_allclose(short["scores"].numpy(), padded["scores"].numpy(), rtol=1e-5)


def test_saved_model_has_only_core_ops(trained):
    assert non_core_ops(trained["args"].serving_dir) == set()


def test_lstm_beats_popularity_on_structured_sessions(trained):
    args = trained["args"]
    output_dir = os.path.join(os.path.dirname(args.model_dir), "evaluation")
    report = evaluate(args.serving_dir, [trained["test_file"]], args.train_files,
                      args.examples_dir, k=TOP_K, batch_size=32,
                      max_prefix_length=FAST_HPARAMS["max_prefix_length"], output_dir=output_dir)
    comparison = json.load(open(os.path.join(output_dir, "comparison.json"), encoding="utf-8"))
    assert set(comparison["recommenders"]) == {"model", *report["baselines"]}
    with open(os.path.join(output_dir, "comparison.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    expected_cases = sum(len(plays) - 1 for plays in trained["test_sessions"] if len(plays) >= 2)
    assert report["skipped_targets"] == 1
    assert report["n_predictions"] == expected_cases - 1
    assert set(report["model"]) == ({f"{name}@{k}" for name in ("hr", "mrr", "ndcg") for k in (1, 5, 10, 20)}
                                     | {"coverage@20", "popularity_bias@20", "cases"})
    assert set(report["baselines"]) == {"popularity", "user_popularity", "markov", "sequential_rules",
                                        "personal_rules",
                                        "sknn", "vsknn"}
    assert report["personalised"] is True
    model, popularity = report["model"], report["baselines"]["popularity"]
    assert model["hr@20"] > popularity["hr@20"] and model["mrr@20"] > popularity["mrr@20"]
    assert model["hr@1"] > 0.5  # the successor rule is learnable
    assert "prefix = plays[:i]" in report["protocol"]


def test_models_without_recommend_are_evaluated_through_serving_default(trained, tmp_path):
    # A model exported before the recommend signature existed (serving_default only, k fixed).
    from musicrec.models import warm_start
    from musicrec.models.export import export_serving_model

    args = trained["args"]
    checkpoint = warm_start.load_checkpoint(args.model_dir)
    hparams = NextTrackHParams.from_dict(checkpoint.hparams)
    core = build_model(len(checkpoint.tokens), hparams)
    core.load_weights(checkpoint.weights_path)
    old_style = str(tmp_path / "serving")
    export_serving_model(build_serving_model(core, checkpoint.tokens, TOP_K), old_style,
                         inputs={"track_keys"}, outputs={"track_keys", "scores"})
    report = evaluate(old_style, [trained["test_file"]], args.train_files, args.examples_dir, k=TOP_K,
                      baselines=[])
    assert report["personalised"] is False and report["baselines"] == {}
    assert report["model"]["hr@1"] > 0.5
    with pytest.raises(ValueError, match="fewer than k"):
        evaluate(old_style, [trained["test_file"]], args.train_files, args.examples_dir, k=TOP_K + 1)


def test_ranking_metrics_on_a_hand_made_ranking():
    metrics = RankingMetrics([1, 3])
    metrics.add(["a", "b", "c"], "a")  # rank 1
    metrics.add(["a", "b", "c"], "c")  # rank 3
    metrics.add(["a", "b", "c"], "z")  # miss
    metrics.add(["b", "a", "c"], "a")  # rank 2
    result = metrics.result()
    assert result["hr@1"] == pytest.approx(1 / 4)
    assert result["mrr@1"] == pytest.approx(1 / 4)
    assert result["hr@3"] == pytest.approx(3 / 4)
    assert result["mrr@3"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 4)


def test_popularity_ranks_by_count_and_ties_never_favour_the_target():
    baseline = PopularityBaseline().fit([["x", "y", "x"], ["z", "y", "x"], ["w"], ["v"]])
    assert baseline.recommend(["y"], 2) == ["x", "y"]
    # "v", "w" and "z" tie at one play: key order decides, whichever is the target.
    assert baseline.recommend([], 5) == ["x", "y", "v", "w", "z"]
    metrics = RankingMetrics([3])
    metrics.add(baseline.recommend([], 3), "z")
    assert metrics.result()["hr@3"] == 0.0
    with pytest.raises(RuntimeError):
        PopularityBaseline().recommend([], 1)


@pytest.mark.parametrize("validation_share", [0.2, 0.0])
def test_run_fn_without_eval_pairs_holds_out_training_sessions_or_trains_every_epoch(
        tmp_path, validation_share):
    examples_dir = str(tmp_path / "examples")
    sessions = successor_sessions(random.Random(3), 20)
    train_file = write_sessions(f"{examples_dir}/Split-train/d.tfrecord.gz", sessions)
    eval_file = write_sessions(f"{examples_dir}/Split-eval/d.tfrecord.gz", [[track(1)]])
    write_vocabulary(examples_dir, sessions)
    args = TrainArgs([train_file], [eval_file], examples_dir, str(tmp_path / "model"),
                     hparams={**FAST_HPARAMS, "epochs": 1, "validation_share": validation_share}, seed=0)
    metrics = run_fn(args)
    all_examples = sum(len(plays) - 1 for plays in sessions)
    assert metrics["examples"]["train"] + metrics["examples"]["validation"] == all_examples
    if validation_share:
        assert metrics["monitor"] == f"val_hr@{TOP_K}" and metrics["examples"]["validation"] > 0
        assert metrics["validation_source"] == "20% of training sessions"
    else:
        # Nothing to stop on: every epoch runs and the last one is kept.
        assert metrics["monitor"] is None and metrics["validation"] is None
        assert metrics["epochs_run"] == metrics["best_epoch"] == 1
    assert os.path.exists(os.path.join(args.serving_dir, "saved_model.pb"))


def test_evaluation_scores_a_stable_sample_of_test_sessions_when_capped(trained):
    args = trained["args"]
    scored_sessions = [plays for plays in trained["test_sessions"] if len(plays) >= 2]
    cap = len(scored_sessions) // 2
    first = evaluate(args.serving_dir, [trained["test_file"]], args.train_files, args.examples_dir,
                     k=TOP_K, baselines=[], max_sessions=cap)
    again = evaluate(args.serving_dir, [trained["test_file"]], args.train_files, args.examples_dir,
                     k=TOP_K, baselines=[], max_sessions=cap)
    whole = evaluate(args.serving_dir, [trained["test_file"]], args.train_files, args.examples_dir,
                     k=TOP_K, baselines=[])
    assert first["test_sessions"] == {"total": len(trained["test_sessions"]), "scored": cap}
    assert "test_sessions" not in whole
    assert 0 < first["n_predictions"] < whole["n_predictions"]
    assert first["model"] == again["model"]


def test_session_sample_is_uniform_stable_and_keeps_order():
    from musicrec.models.next_track.evaluate import sample_sessions

    sessions = [SessionRecord(f"user-{n % 7}", f"s{n}", n, (track(n), track(n + 1)), (n, n + 60))
                for n in range(2000)]
    drawn = sample_sessions(sessions, 500)
    assert len(drawn) == 500
    assert [s.start_time for s in drawn] == sorted(s.start_time for s in drawn)
    # Drawn from every session, a session is drawn from any part of them that holds it.
    drawn_ids = {s.session_id for s in drawn}
    first_half = {s.session_id for s in sample_sessions(sessions[:1000], 500)}
    assert drawn_ids & {s.session_id for s in sessions[:1000]} <= first_half
    # Uniform over time: each quarter of the sessions gives about a quarter of the sample.
    quarters = np.bincount([s.start_time * 4 // 2000 for s in drawn], minlength=4)
    assert quarters.min() > 90
    assert sample_sessions(sessions, 0) == sessions and sample_sessions(sessions[:10], 20) == sessions[:10]


def test_early_stopping_reads_at_most_max_validation_examples(tmp_path):
    examples_dir = str(tmp_path / "examples")
    sessions = successor_sessions(random.Random(5), 40)
    train_file = write_sessions(f"{examples_dir}/Split-train/d.tfrecord.gz", sessions[:30])
    eval_file = write_sessions(f"{examples_dir}/Split-eval/d.tfrecord.gz", sessions[30:])
    write_vocabulary(examples_dir, sessions)
    args = TrainArgs([train_file], [eval_file], examples_dir, str(tmp_path / "model"),
                     hparams={**FAST_HPARAMS, "epochs": 1, "max_validation_examples": 7}, seed=0)
    metrics = run_fn(args)
    assert sum(len(plays) - 1 for plays in sessions[30:]) > 7
    assert metrics["examples"]["validation"] == 7
    assert metrics["validation_source"] == "eval split, 7 examples evenly spaced"
    assert metrics["monitor"] == f"val_hr@{TOP_K}"


def test_evenly_spaced_examples_span_the_whole_set():
    rows = np.arange(10)
    examples = data.Examples(np.arange(5, dtype=np.int32), rows, rows + 1,
                             np.stack([rows, rows]).T.astype(np.int32), rows.astype(np.int32), 2)
    subset = examples.evenly_spaced(4)
    assert subset.targets.tolist() == [0, 3, 6, 9]
    assert subset.history_start.tolist() == [0, 3, 6, 9] and subset.session[:, 0].tolist() == [0, 3, 6, 9]
    assert examples.evenly_spaced(0) is examples and examples.evenly_spaced(10) is examples
