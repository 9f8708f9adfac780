"""``musicrec demo``: the whole job on generated data.

generate data → ingest (Beam) → train → evaluate → push → serve → query over
gRPC → stop the server, as a user would run it. Every prediction printed
comes from the server. Exits 1 when a model was not pushed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from musicrec.classify_command import classify_file
from musicrec.demo import (DEMO_OVERRIDES, TINY_OVERRIDES, first_cold_case, free_port, generate_demo_data,
                           held_out_sessions, held_out_tracks, print_cold_start, read_metadata, serving_process)
from musicrec.pipeline_runs import evaluations, print_run_summary, pushes, run_pipeline
from musicrec.recommend_command import recommend_tracks
from musicrec.serving.wire import DEFAULT_GRPC_PORT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="demo-run", help="where data, runs and models go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=DEFAULT_GRPC_PORT, help="gRPC port; 0 picks a free one")
    parser.add_argument("--tiny", action="store_true", help="a very small dataset (smoke test)")


def run(args: argparse.Namespace) -> int:
    return run_demo(args.workdir, seed=args.seed, port=args.port, tiny=args.tiny)


def run_demo(workdir: str, seed: int = 0, port: int = DEFAULT_GRPC_PORT, tiny: bool = False) -> int:
    """The demo in ``workdir`` (gRPC on ``port``, or a free port when it is taken); returns the exit code."""
    from musicrec.pipeline.config import make_config
    from musicrec.serving.client import PredictionClient

    started = time.monotonic()
    workdir = os.path.abspath(workdir)
    data_dir = os.path.join(workdir, "data")
    print(f"== 1/4 generating demo data into {data_dir}", flush=True)
    summary = generate_demo_data(data_dir, seed, tiny)
    print(f"   {summary.n_tracks} tracks, {len(summary.genres)} genres, {summary.n_plays} plays, "
          f"{summary.n_users} users", flush=True)

    print("== 2/4 running the pipeline: ingest → train → evaluate → push", flush=True)
    config = make_config({"seed": seed, **(TINY_OVERRIDES if tiny else DEMO_OVERRIDES),
                          "cold_start": {"enabled": True, "eval_plays": summary.cold_plays_csv}})
    result = run_pipeline(config, workdir, audio_dir=summary.audio_dir,
                          playlog_paths=summary.playlog_paths)
    print_run_summary(result)
    cold = evaluations(result).get("next_track", {}).get("metrics", {}).get("cold_start")
    print_cold_start(cold)
    pushed = pushes(result)
    missing = [name for name in ("genre", "next_track") if not pushed.get(name, {}).get("pushed")]
    if missing:
        print(f"demo: {', '.join(missing)} not pushed; nothing to serve", file=sys.stderr)
        return 1

    port = free_port(port)
    print(f"== 3/4 serving {workdir}/serving on 127.0.0.1:{port}", flush=True)
    metadata = read_metadata(summary.metadata_csv)
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
