"""The next-track branch protects users: blessing against the best baseline, the final fit, too little data.

Generated play logs (each listener replays a few "albums" in order, so the
sequential rules are strong) run through the real pipeline:

- an untrained candidate (learning rate ~0) loses to the best baseline: it
  is not pushed, and the run, the evaluation and the report say which
  baseline beat it and by how much;
- with the blessing check off, the blessed candidate is refitted on every
  split and pushed, and a track first played in the last test period is in
  the pushed model's vocabulary;
- play logs that leave no test case end the run with a one-line error.
"""
import csv
import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from musicrec import cli
from musicrec.serving.wire import list_versions
from musicrec.pipeline.config import make_config
from musicrec.pipeline.pipeline import create_pipeline
from musicrec.pipeline.runner import LocalRunner

pytestmark = pytest.mark.timeout(600)

START = 1_767_225_600  # 2026-01-01
DAY = 86_400
NEW_TRACK = "brand new single"
HPARAMS = {"epochs": 3, "lstm_units": 16, "embedding_dim": 16, "history_length": 200,
           "repeat_history_length": 50}


def write_plays(path: str, users: int = 8, days: int = 30, seed: int = 0) -> None:
    """Daily sessions: each listener plays one of their albums (8 tracks) from a random track on."""
    rng = random.Random(seed)
    rows = []
    for user in range(users):
        albums = [[f"album{(user + a) % 12}-track{t}" for t in range(8)] for a in range(3)]
        for day in range(days):
            album = rng.choice(albums)
            start = rng.randrange(4)
            for offset, track in enumerate(album[start:start + 5]):
                rows.append((f"u{user}", START + day * DAY + 200 * offset, track))
    # One listener's very last session plays a track nobody played before: the test period's.
    rows.append(("u0", START + days * DAY + 100, "album0-track0"))
    rows.append(("u0", START + days * DAY + 300, NEW_TRACK))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "timestamp", "track_id"])
        writer.writerows(rows)


def run(workdir: str, plays: str, **next_track):
    config = make_config({"next_track_model": {"hparams": HPARAMS, "warm_start": False, **next_track}})
    return LocalRunner().run(create_pipeline(config, workdir, playlog_paths=[plays]))


@pytest.fixture(scope="module")
def plays(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("logs") / "plays.csv")
    write_plays(path)
    return path


def test_a_candidate_below_the_best_baseline_is_not_pushed_and_the_run_says_why(plays, tmp_path):
    workdir = str(tmp_path / "work")
    result = run(workdir, plays, hparams={**HPARAMS, "learning_rate": 1e-9})
    evaluation = result.artifact("evaluator_next_track", "evaluation").properties
    assert evaluation["blessed"] is False
    reason = evaluation["reason"]
    assert reason.startswith("below the best baseline: ")
    # It names the baseline that beat it and the gap, per metric.
    metrics = json.load(open(result.artifact("evaluator_next_track", "evaluation")
                             .path("metrics.json")))["metrics"]
    best = metrics["best_baseline"]["mrr@20"]
    assert f"best baseline {best}" in reason and "%" in reason
    assert metrics["model"]["mrr@20"] < metrics["baselines"][best]["mrr@20"]
    push = result.artifact("pusher_next_track", "pushed_model").properties
    assert push["pushed"] is False and "below the best baseline" in push["reason"]
    assert list_versions(os.path.join(workdir, "serving", "next_track")) == []
    # Nothing was refitted for a candidate that will not be pushed.
    assert result.artifact("final_fit_next_track", "model").properties["refitted"] is False
    assert "below the best baseline" in open(result.report_path, encoding="utf-8").read()


def test_the_blessed_candidate_is_refitted_on_every_split_and_knows_the_newest_track(plays, tmp_path):
    workdir = str(tmp_path / "work")
    result = run(workdir, plays, must_beat_baselines=False)
    final = result.artifact("final_fit_next_track", "model")
    assert final.properties["refitted"] is True
    candidate = json.load(open(result.artifact("trainer_next_track", "model").path("train_metrics.json")))
    refit = json.load(open(final.path("train_metrics.json")))
    # Same recipe, the epochs early stopping chose, more examples (eval and test splits too).
    assert refit["epochs_run"] == final.properties["epochs"] == candidate["best_epoch"]
    assert refit["examples"]["train"] > candidate["examples"]["train"] and refit["validation"] is None
    push = result.artifact("pusher_next_track", "pushed_model").properties
    assert push["pushed"] is True
    served = tf.saved_model.load(push["path"]).signatures["track_embeddings"]
    vectors = served(track_keys=tf.constant([NEW_TRACK, "never played"]))["embedding"].numpy()
    assert np.abs(vectors[0]).sum() > 0, "the newest track is in the pushed vocabulary"
    assert np.abs(vectors[1]).sum() == 0, "unknown keys get zeros"


def test_play_logs_without_a_test_case_end_with_a_one_line_error(tmp_path, capsys):
    path = str(tmp_path / "few.csv")
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "timestamp", "track_id"])
        # Sessions of two plays, then one last single play: the test period holds no session of 2+.
        for day in range(6):
            writer.writerows([("u", START + day * DAY, "a"), ("u", START + day * DAY + 60, "b")])
        writer.writerow(("u", START + 30 * DAY, "a"))
    code = cli.main(["run", "--playlogs", path, "--workdir", str(tmp_path / "work"),
                     "--config", _write_config(tmp_path)])
    assert code == 1
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in stderr
    assert "test" in errors[0] and "playlogs.test_fraction" in errors[0]


def _write_config(tmp_path) -> str:
    path = str(tmp_path / "config.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("next_track_model:\n  hparams: {epochs: 1, lstm_units: 8, embedding_dim: 8,"
                     " history_length: 20, repeat_history_length: 10}\n")
    return path
