"""``musicrec playlist`` and ``musicrec recommend`` against a real server with a real next-track model."""
from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

from musicrec import cli
from musicrec.models.next_track.hparams import NextTrackHParams
from musicrec.models.next_track.model import build_model
from musicrec.models.next_track.serving import export_saved_model
from musicrec.playlist_command import allowed, artist_of, continue_playlist, read_artists
from musicrec.serving.server import LocalModelServer

# Four artists; the key's "<artist> - " part is what ingestion writes for name-only tracks.
VOCABULARY = [f"artist{i % 4} - song{i}" for i in range(24)]
HPARAMS = NextTrackHParams(embedding_dim=8, lstm_units=8, history_length=4, rnn_history_length=2,
                           max_prefix_length=4, top_k=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("playlist")
    core = build_model(len(VOCABULARY), HPARAMS)
    rng = np.random.default_rng(1)
    for layer in core.layers:
        layer.set_weights([rng.normal(scale=0.5, size=w.shape).astype(w.dtype) for w in layer.get_weights()])
    export_saved_model(core, VOCABULARY, HPARAMS, str(base / "next_track" / "1"))
    local_server = LocalModelServer({"next_track": str(base / "next_track")}, port=0, poll_wait_seconds=0)
    local_server.start()
    yield local_server
    local_server.stop(grace_seconds=1)


def run_cli(argv, capsys) -> dict:
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def longest_artist_run(playlist, artists=None) -> int:
    longest, run, previous = 0, 0, object()
    for key in playlist:
        artist = artist_of(key, artists)
        run = run + 1 if artist is not None and artist == previous else 1
        previous = artist
        longest = max(longest, run)
    return longest


@pytest.mark.parametrize("method", ["sample", "beam"])
def test_playlist_over_grpc_never_repeats_and_limits_artist_runs(server, capsys, method):
    seed = [VOCABULARY[0], VOCABULARY[5]]
    result = run_cli(["playlist", "--seed", *seed, "--length", "15", "--method", method,
                      "--max-artist-run", "1", "--random-seed", "3", "--server", server.address, "--json"],
                     capsys)
    playlist = result["playlist"]
    assert playlist[:2] == seed and len(result["added"]) == 15
    assert len(set(playlist)) == len(playlist)
    assert set(playlist) <= set(VOCABULARY)
    assert longest_artist_run(playlist) == 1


def test_playlist_takes_artists_from_a_catalogue_csv(server, capsys, tmp_path):
    catalogue = tmp_path / "tracks.csv"
    # Every track by one artist but song0..song2: a run limit of 2 then allows at most 2 in a row.
    rows = ["track_key,artist"] + [f"{key},{'solo' if i > 2 else f'other{i}'}" for i, key in enumerate(VOCABULARY)]
    catalogue.write_text("\n".join(rows) + "\n", encoding="utf-8")
    artists = read_artists(str(catalogue))
    result = run_cli(["playlist", "--seed", VOCABULARY[10], "--length", "6", "--max-artist-run", "2",
                      "--catalogue", str(catalogue), "--server", server.address, "--json"], capsys)
    playlist = result["playlist"]
    assert len(set(playlist)) == len(playlist)
    assert longest_artist_run(playlist, artists) <= 2
    # With three "other" tracks to break runs, the playlist can still reach 1 + 6 tracks.
    assert len(playlist) == 7


def test_recommend_over_grpc_with_history_k_and_exclusion(server, capsys):
    session, history = VOCABULARY[:3], VOCABULARY[3:8]
    result = run_cli(["recommend", *session, "--history", *history, "--k", "5", "--exclude-seen",
                      "--server", server.address, "--json"], capsys)
    keys = [r["track"] for r in result["recommendations"]]
    assert len(keys) == 5 and not set(keys) & (set(session) | set(history))
    scores = [r["score"] for r in result["recommendations"]]
    assert scores == sorted(scores, reverse=True)
    kept = run_cli(["recommend", *session, "--k", "24", "--server", server.address, "--json"], capsys)
    assert len(kept["recommendations"]) == 24  # without exclusion every track can come back


def test_continue_playlist_stops_rather_than_repeat_or_break_the_artist_rule():
    keys = ["a - 1", "a - 2", "a - 3", "b - 1"]

    def stubborn(playlists, k):  # always ranks the seed and artist a first
        return [[(key, 1.0 / (n + 1)) for n, key in enumerate(keys)][:k] for _ in playlists]

    for method in ("sample", "beam"):
        added = continue_playlist(stubborn, ["a - 1"], 10, method=method, max_artist_run=1,
                                  rng=random.Random(0))
        # After a - 1 only b - 1 may follow (another artist), then a - 2 or a - 3 (beam: the
        # better, a - 2); then only the other a, right after an a: nothing is allowed.
        assert added[0] == "b - 1" and len(added) == 2, method
        assert added[1] == "a - 2" if method == "beam" else added[1] in ("a - 2", "a - 3")
    assert not allowed(["x - 1", "a - 9"], "x - 1", 2, None)
    assert allowed(["a - 1", "b - 1"], "a - 2", 1, None)
    assert not allowed(["b - 1", "a - 1"], "a - 2", 1, None)
    assert artist_of("no separator", None) is None and allowed(["q"], "no separator", 1, None)


def test_catalogue_csv_without_artist_column_is_refused(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("track_key,genre\nx,rock\n", encoding="utf-8")
    with pytest.raises(ValueError, match="artist"):
        read_artists(str(path))
    assert os.path.exists(path)
