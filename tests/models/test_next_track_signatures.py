"""The exported next-track signatures: names, dtypes, shapes, exclusion, k, embeddings, core ops."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from musicrec.models.export_check import non_core_ops
from musicrec.models.next_track.hparams import CATALOGUE_RANKING, NextTrackHParams
from musicrec.models.next_track.layout import input_layout
from musicrec.models.next_track.model import build_model, output_embeddings
from musicrec.models.next_track.serving import export_saved_model

VOCABULARY = [f"artist{i % 4} - song{i}" for i in range(30)]
HPARAMS = NextTrackHParams(**CATALOGUE_RANKING, embedding_dim=8, lstm_units=8, history_length=5, rnn_history_length=2,
                           max_prefix_length=4, top_k=6)


def _randomise(core):
    rng = np.random.default_rng(0)
    for layer in core.layers:
        layer.set_weights([rng.normal(scale=0.5, size=w.shape).astype(w.dtype) for w in layer.get_weights()])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    core = build_model(len(VOCABULARY), HPARAMS)
    _randomise(core)  # zero-initialised repeat weights would hide the history's effect
    serving_dir = str(tmp_path_factory.mktemp("signatures") / "serving")
    export_saved_model(core, VOCABULARY, HPARAMS, serving_dir)
    return {"dir": serving_dir, "signatures": tf.saved_model.load(serving_dir).signatures,
            "table": np.asarray(output_embeddings(core, HPARAMS))}


def _spec(signature):
    _, inputs = signature.structured_input_signature
    return ({name: (spec.dtype, spec.shape.as_list()) for name, spec in inputs.items()},
            {name: (spec.dtype, spec.shape.as_list()) for name, spec in signature.structured_outputs.items()})


def test_signature_names_dtypes_and_shapes(exported):
    signatures = exported["signatures"]
    assert set(signatures.keys()) == {"serving_default", "recommend", "track_embeddings"}
    assert _spec(signatures["serving_default"]) == (
        {"track_keys": (tf.string, [None, None])},
        {"track_keys": (tf.string, [None, 6]), "scores": (tf.float32, [None, 6])})
    assert _spec(signatures["recommend"]) == (
        {"track_keys": (tf.string, [None, None]), "history_keys": (tf.string, [None, None]),
         "k": (tf.int32, [None]), "exclude_seen": (tf.bool, [None])},
        {"track_keys": (tf.string, [None, None]), "scores": (tf.float32, [None, None])})
    assert _spec(signatures["track_embeddings"]) == (
        {"track_keys": (tf.string, [None])}, {"embedding": (tf.float32, [None, HPARAMS.embedding_dim])})
    assert non_core_ops(exported["dir"]) == set()


def test_the_layout_is_as_wide_as_the_longest_history_and_scores_as_the_full_layout():
    """Serving feeds only the history slots a batch uses; the training layout has all of them."""
    core = build_model(len(VOCABULARY), HPARAMS)
    _randomise(core)
    session = tf.constant([[5, 6, 7, 0], [8, 9, 0, 0], [6, 0, 0, 0]], tf.int64)
    history = tf.constant([[10, 11, 5, 0], [12, 0, 0, 0], [0, 0, 0, 0]], tf.int64)
    after_history = 1 + HPARAMS.max_prefix_length

    layout = input_layout(history, session, HPARAMS)
    assert layout.shape == (3, 3 + after_history)  # the longest history has 3 plays
    full = np.pad(layout.numpy(), [[0, 0], [HPARAMS.history_length - 3, 0]])  # as training lays it out
    scores = core(layout).numpy()
    np.testing.assert_allclose(scores, core(full).numpy(), rtol=1e-5, atol=1e-5)
    for row in range(3):  # alone, a row gets a narrower layout and the same scores
        alone = input_layout(history[row:row + 1], session[row:row + 1], HPARAMS)
        np.testing.assert_allclose(core(alone).numpy()[0], scores[row], rtol=1e-5, atol=1e-5)
    assert alone.shape[1] == HPARAMS.rnn_history_length + after_history  # what the recurrent layer reads

    longest = tf.constant([list(range(10, 17))], tf.int64)  # 7 plays: only the last history_length count
    assert input_layout(longest, session[:1], HPARAMS).shape[1] == HPARAMS.history_length + after_history
    assert input_layout(tf.zeros([3, 0], tf.int64), session, HPARAMS).shape[1] == \
        HPARAMS.rnn_history_length + after_history


def recommend(signatures, sessions, histories, ks, exclude):
    width = max(len(s) for s in sessions)
    hwidth = max([len(h) for h in histories] + [0])
    out = signatures["recommend"](
        track_keys=tf.constant([s + [""] * (width - len(s)) for s in sessions]),
        history_keys=tf.constant([h + [""] * (hwidth - len(h)) for h in histories], tf.string,
                                 shape=(len(sessions), hwidth)),
        k=tf.constant(ks, tf.int32), exclude_seen=tf.constant(exclude))
    return [[key.decode() for key in row] for row in out["track_keys"].numpy()], out["scores"].numpy()


def test_recommend_gives_each_row_its_own_k_and_excludes_what_was_seen(exported):
    signatures = exported["signatures"]
    session, history = VOCABULARY[:3], VOCABULARY[10:14]
    keys, scores = recommend(signatures, [session, session], [history, history], [len(VOCABULARY), 4],
                             [True, False])
    assert len(keys[0]) == len(VOCABULARY)  # K = the largest k asked, capped at the catalogue
    seen = set(session) | set(history)
    excluded_row = [key for key, s in zip(keys[0], scores[0]) if s > 0]
    assert not seen & set(excluded_row) and set(excluded_row) == set(VOCABULARY) - seen
    assert keys[1][4:] == [""] * (len(VOCABULARY) - 4) and np.all(scores[1][4:] == 0)
    assert np.all(np.diff(scores[1][:4]) <= 0) and len(set(keys[1][:4])) == 4


def test_history_changes_the_ranking_and_serving_default_matches_an_empty_history(exported):
    signatures = exported["signatures"]
    session = [VOCABULARY[5], VOCABULARY[6]]
    without, without_scores = recommend(signatures, [session], [[]], [6], [False])
    default = signatures["serving_default"](track_keys=tf.constant([session + ["", ""]]))
    assert [k.decode() for k in default["track_keys"].numpy()[0]] == without[0]
    np.testing.assert_allclose(default["scores"].numpy()[0], without_scores[0], rtol=1e-5)
    with_history, _ = recommend(signatures, [session], [VOCABULARY[20:25]], [6], [False])
    assert with_history[0] != without[0]
    # Only the last history_length plays count: older ones (and extra padding) change nothing.
    longer, _ = recommend(signatures, [session], [VOCABULARY[0:2] + VOCABULARY[20:25]], [6], [False])
    assert longer[0] == with_history[0]


def test_track_embeddings_are_the_output_table_rows_and_zero_for_unknown_keys(exported):
    out = exported["signatures"]["track_embeddings"](
        track_keys=tf.constant([VOCABULARY[0], "nope", VOCABULARY[7], ""]))["embedding"].numpy()
    table = exported["table"]
    np.testing.assert_allclose(out[0], table[2], rtol=1e-6)  # ids: 0 pad, 1 OOV, 2.. the vocabulary
    np.testing.assert_allclose(out[2], table[9], rtol=1e-6)
    assert not out[1].any() and not out[3].any()


def test_gru_untied_unpersonalised_model_builds_and_exports(tmp_path):
    options = {"rnn": "gru", "tied_embeddings": False, "repeat_scores": False, "history_length": 0,
               "rnn_history_length": 0}
    hparams = NextTrackHParams(**{**HPARAMS.to_dict(), **options})
    core = build_model(len(VOCABULARY), hparams)
    export_saved_model(core, VOCABULARY, hparams, str(tmp_path / "serving"))
    signatures = tf.saved_model.load(str(tmp_path / "serving")).signatures
    keys, _ = recommend(signatures, [VOCABULARY[:2]], [VOCABULARY[3:5]], [3], [True])
    # exclude_seen removes the session's and the history's tracks, and only those.
    assert len(keys[0]) == 3 and not set(keys[0]) & {*VOCABULARY[:2], *VOCABULARY[3:5]}
    embedding = signatures["track_embeddings"](track_keys=tf.constant(VOCABULARY[:2]))["embedding"]
    width = hparams.embedding_dim if hparams.tied_embeddings else hparams.lstm_units
    assert embedding.shape == (2, width)


def test_the_sampled_softmax_trains_and_exports_the_same_signatures(tmp_path):
    import random

    from musicrec.models.next_track.train import run_fn
    from musicrec.models.train_args import TrainArgs
    from test_next_track_model import successor_sessions, write_sessions, write_vocabulary

    examples_dir = str(tmp_path / "examples")
    sessions = successor_sessions(random.Random(5), 60)
    train_file = write_sessions(f"{examples_dir}/Split-train/d.tfrecord.gz", sessions)
    write_vocabulary(examples_dir, sessions)
    hparams = {**{k: v for k, v in HPARAMS.to_dict().items() if k != "top_k"}, "softmax": "sampled",
               "epochs": 2, "batch_size": 32, "validation_share": 0.2}
    args = TrainArgs([train_file], [], examples_dir, str(tmp_path / "model"), hparams=hparams)
    metrics = run_fn(args)
    assert metrics["softmax"] == "sampled" and metrics["monitor"] == "val_hr@20"
    assert len(metrics["history"]["val_hr@20"]) == metrics["epochs_run"]
    assert np.isfinite(metrics["history"]["loss"]).all()
    signatures = tf.saved_model.load(args.serving_dir).signatures
    keys, scores = recommend(signatures, [["track-01", "track-02"]], [[]], [5], [True])
    assert len(keys[0]) == 5 and not {"track-01", "track-02"} & set(keys[0])
