"""``musicrec demo``: the whole job on generated data, as a user would run it.

generate data → ingest (Beam) → train → evaluate → push → serve → query over
gRPC → stop the server. Every prediction printed comes from the server.
"""
from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator

log = logging.getLogger("musicrec.demo")

# The demo shows cold start, so its next-track model ranks the whole catalogue
# (models.next_track.hparams.CATALOGUE_RANKING, spelled out here to keep TensorFlow
# out of the CLI's import; tests/test_demo_config.py checks they agree).
DEMO_OVERRIDES = {"next_track_model": {"hparams": {"neural_scores": True, "scorer": "gates"}}}
# Small models for the tiny smoke-test dataset; the full demo uses the defaults.
# The tiny catalogue has 24 tracks (22 with plays), so HR@20 sits at its ceiling for
# every recommender and "beats popularity" is a coin toss: the smoke test skips it.
TINY_OVERRIDES = {
    "genre_model": {"hparams": {"epochs": 30}},
    "next_track_model": {"hparams": {**DEMO_OVERRIDES["next_track_model"]["hparams"],
                                     "epochs": 5, "lstm_units": 32, "embedding_dim": 16},
                         "must_beat_baselines": False},
}


def free_port(preferred: int = 0, host: str = "127.0.0.1") -> int:
    """``preferred`` if it can be bound now, else a free port picked by the OS."""
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, candidate))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise OSError("no free port")


@contextlib.contextmanager
def serving_process(workdir: str, port: int, ready_models: list[str],
                    timeout_seconds: float = 120.0) -> Iterator[str]:
    """Runs ``musicrec serve --workdir`` in a child process; yields its gRPC target.

    The server is stopped with SIGTERM (graceful) when the block exits.
    """
    from musicrec.serving.client import PredictionClient

    # The REST port would default to 8501, which a second server on this machine may hold.
    command = [sys.executable, "-m", "musicrec.cli", "serve", "--workdir", workdir,
               f"--port={port}", f"--rest_api_port={free_port()}"]
    log.info("starting the server: %s", " ".join(command))
    process = subprocess.Popen(command)
    target = f"127.0.0.1:{port}"
    try:
        with PredictionClient(target, timeout_seconds=10.0) as client:
            for model_name in ready_models:
                deadline = time.monotonic() + timeout_seconds
                while True:
                    if process.poll() is not None:
                        raise RuntimeError(f"the server exited with code {process.returncode}")
                    try:
                        client.wait_until_ready(model_name, timeout_seconds=5.0)
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
        yield target
    finally:
        stop_process(process)
        log.info("server stopped (exit code %s)", process.returncode)


def stop_process(process: subprocess.Popen, timeout_seconds: float = 30.0) -> None:
    """SIGTERM (graceful shutdown), then SIGKILL if it has not exited in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def held_out_tracks(examples_uri: str, count: int) -> list[tuple[str, str]]:
    """(track_id, genre) of up to ``count`` test-split tracks, taking genres in turn."""
    import tensorflow as tf

    spec = {"track_id": tf.io.FixedLenFeature([], tf.string), "genre": tf.io.FixedLenFeature([], tf.string)}
    files = sorted(glob.glob(os.path.join(examples_uri, "Split-test", "*.tfrecord.gz")))
    by_genre: dict[str, list[str]] = {}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        parsed = tf.io.parse_single_example(record, spec)
        tracks = by_genre.setdefault(parsed["genre"].numpy().decode(), [])
        track_id = parsed["track_id"].numpy().decode()
        if track_id not in tracks:
            tracks.append(track_id)
    rounds = zip(*[[(track, genre) for track in tracks] for genre, tracks in sorted(by_genre.items())])
    return [pair for round_ in rounds for pair in round_][:count]


def held_out_sessions(sessions_uri: str, count: int, min_length: int = 4) -> list[list[str]]:
    """Track keys of the first ``count`` test sessions with at least ``min_length`` plays."""
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(sessions_uri, "Split-test", "*.tfrecord.gz")))
    sessions = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        _, lists = tf.io.parse_single_sequence_example(
            record, sequence_features={"track_key": tf.io.FixedLenSequenceFeature([], tf.string)})
        keys = [k.decode() for k in lists["track_key"].numpy()]
        if len(keys) >= min_length:
            sessions.append(keys)
        if len(sessions) == count:
            break
    return sessions


def print_cold_start(cold: dict | None) -> None:
    """Prints the cold-start metrics of the next-track evaluation (nothing when absent)."""
    if not cold:
        return
    hr = next(key for key in cold["cold"] if key.startswith("hr@"))
    ratio = cold["cold_over_warm"]
    print(f"  cold start: {cold['n_cold_tracks']} tracks never played; {hr.upper()} "
          f"{cold['cold'][hr]:.3f} on {cold['n_cases']} held-out plays of them, warm tracks "
          f"{cold['warm'][hr]:.3f}, random {cold['random'][hr]:.3f} "
          f"(cold/warm {'n/a' if ratio is None else f'{ratio:.2f}'}, "
          f"cold/random {cold['cold_over_random']:.1f}x; catalogue {cold['catalogue_size']})")


def first_cold_case(result) -> tuple[list[str], str] | None:
    """A held-out (prefix, cold target) case with a prefix of at least 2 plays, if the run made one."""
    from musicrec.models.next_track.cold_start import COLD_START_DIR, CASES_FILE

    if "cold_start" not in result.states:
        return None
    path = result.artifact("cold_start", "model").path(COLD_START_DIR, CASES_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            case = json.loads(line)
            if len(case["prefix"]) >= 2:
                return case["prefix"][-3:], case["target"]
    return None


def run_demo(workdir: str, seed: int = 0, port: int = 8500, tiny: bool = False) -> int:
    from musicrec import commands
    from musicrec.classify_command import classify_file
    from musicrec.pipeline.config import make_config
    from musicrec.recommend_command import recommend_tracks
    from musicrec.serving.client import PredictionClient

    started = time.monotonic()
    workdir = os.path.abspath(workdir)
    data_dir = os.path.join(workdir, "data")
    print(f"== 1/4 generating demo data into {data_dir}", flush=True)
    summary = commands._generate(data_dir, seed, tiny)
    print(f"   {summary.n_tracks} tracks, {len(summary.genres)} genres, {summary.n_plays} plays, "
          f"{summary.n_users} users", flush=True)

    print("== 2/4 running the pipeline: ingest → train → evaluate → push", flush=True)
    config = make_config({"seed": seed, **(TINY_OVERRIDES if tiny else DEMO_OVERRIDES),
                          "cold_start": {"enabled": True, "eval_plays": summary.cold_plays_csv}})
    result = commands.run_pipeline(config, workdir, audio_dir=summary.audio_dir,
                                   playlog_paths=summary.playlog_paths)
    commands.print_run_summary(result)
    cold = commands.evaluations(result).get("next_track", {}).get("metrics", {}).get("cold_start")
    print_cold_start(cold)
    pushed = commands.pushes(result)
    missing = [name for name in ("genre", "next_track") if not pushed.get(name, {}).get("pushed")]
    if missing:
        print(f"demo: {', '.join(missing)} not pushed; nothing to serve", file=sys.stderr)
        return 1

    port = free_port(port)
    print(f"== 3/4 serving {workdir}/serving on 127.0.0.1:{port}", flush=True)
    metadata = commands.read_metadata(summary.metadata_csv)
    tracks = held_out_tracks(result.artifact("audio_example_gen", "examples").uri, 6)
    sessions = held_out_sessions(result.artifact("playlog_example_gen", "sessions").uri, 3)
    cold_example = first_cold_case(result)
    with serving_process(workdir, port, ["genre", "next_track"]) as target, \
            PredictionClient(target, timeout_seconds=30.0) as client:
        print("== 4/4 querying the server over gRPC", flush=True)
        print("   genre of held-out tracks (true → predicted):")
        correct = 0
        for track_id, genre in tracks:
            top = classify_file(client, "genre", metadata[track_id]["path"], 3)
            correct += top[0]["genre"] == genre
            ranked = ", ".join(f"{g['genre']} {g['probability']:.2f}" for g in top)
            print(f"   {track_id}  {genre:>10} → {ranked}")
        print(f"   {correct}/{len(tracks)} correct")
        if cold_example:
            prefix, cold_track = cold_example
            names = [r["track"] for r in recommend_tracks(client, "next_track", prefix, 20)]
            rank = names.index(cold_track) + 1 if cold_track in names else None
            print(f"   a track that was never played: {' → '.join(prefix)} ⇒ actual next {cold_track} "
                  f"(cold): {'rank ' + str(rank) if rank else 'not in top 20'}")
        print("   next tracks for held-out session prefixes:")
        for keys in sessions:
            prefix, actual = keys[:3], keys[3]
            ranked = recommend_tracks(client, "next_track", prefix, 20)
            names = [r["track"] for r in ranked]
            rank = names.index(actual) + 1 if actual in names else None
            print(f"   {' → '.join(prefix)} ⇒ {', '.join(names[:5])}"
                  f"   (actual next {actual}: {'rank ' + str(rank) if rank else 'not in top 20'})")
    print(f"demo finished in {time.monotonic() - started:.0f} s; run record: "
          f"{os.path.join(result.run_dir, 'run.json')}", flush=True)
    print(json.dumps({"workdir": workdir, "run_id": result.run_id}), flush=True)
    return 0
