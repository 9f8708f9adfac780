"""Throughput and peak memory of the playlog_example_gen Beam job against a reference sessionizer.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_playlog_ingest.py                  # 1 M generated plays
    .venv/bin/python benchmarks/bench_playlog_ingest.py --plays 100000   # a quick run

Generates a CSV play log (``--files`` files, ``--users`` users, Zipf-distributed
tracks, gaps that straddle the 30-minute session gap) in a temp dir, then
times, in this process:

- the job under test: ``playlog_example_gen.build_pipeline`` on the
  in-process runner with the default params, writing GZIP TFRecords of
  ``SequenceExample`` s, the vocabulary, the manifest and the dead letters;
- the reference: pandas when it is installed (``read_csv``, sort, a
  per-user ``diff() > gap`` and ``cumsum``, sessions of at least two plays),
  else the same in plain Python (``csv`` module, a dict of lists per user,
  sort, split). The reference writes nothing.

Figures are plays per wall-clock second; the ratio is job ÷ reference. Peak
RSS is the process's maximum resident set (``ru_maxrss``) read after the
Beam job and before the reference, so it is the job's (with TensorFlow and
Beam imported), not the reference's.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import resource
import sys
import tempfile
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402

from common import short_machine, timed, write_result  # noqa: E402  (run as a script)
from musicrec.components import beam_io, playlog_example_gen, playlog_params  # noqa: E402

NAME = "playlog_ingest"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "benchmarks", "results", "playlog_ingest.json")
BASE_TIME = 1_600_000_000
GAP_SECONDS = 1800
MIN_SESSION_LENGTH = 2


def generate_log(out_dir: str, plays: int, users: int, files: int, tracks: int, seed: int = 0) -> list[str]:
    """Writes ``plays`` rows ``user_id,timestamp,track_id,ms_played`` over ``files`` CSVs; returns their paths.

    Each user's plays are consecutive in time (gaps of 3–5 minutes inside a
    session, 20 minutes to 2 days between sessions); users are spread over
    the files, and rows are written in chunks so memory stays small.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"plays-{index:03d}.csv") for index in range(files)]
    handles = [open(path, "w", encoding="utf-8", newline="") for path in paths]
    try:
        for handle in handles:
            handle.write("user_id,timestamp,track_id,ms_played\n")
        per_user = np.full(users, plays // users)
        per_user[: plays % users] += 1
        for user, count in enumerate(per_user):
            session_break = rng.random(count) < 0.08
            gaps = np.where(session_break, rng.integers(1200, 172_800, count), rng.integers(180, 300, count))
            times = BASE_TIME + np.cumsum(gaps)
            keys = np.minimum(rng.zipf(1.3, count), tracks)
            ms = rng.integers(0, 300_000, count)
            lines = [f"user{user},{t},track{k},{m}\n" for t, k, m in zip(times, keys, ms)]
            handles[user % files].writelines(lines)
    finally:
        for handle in handles:
            handle.close()
    return paths


def reference_sessionizer(paths: Sequence[str]) -> int:
    """Sessions of at least ``MIN_SESSION_LENGTH`` plays with a ``GAP_SECONDS`` gap; pandas when available."""
    try:
        import pandas as pd
    except ImportError:
        pd = None
    if pd is not None:
        frame = pd.concat([pd.read_csv(path) for path in paths]).sort_values(["user_id", "timestamp"])
        new_session = frame.groupby("user_id")["timestamp"].diff().fillna(GAP_SECONDS + 1) > GAP_SECONDS
        lengths = new_session.cumsum().value_counts()
        return int((lengths >= MIN_SESSION_LENGTH).sum())
    by_user: dict[str, list[tuple[int, str]]] = {}
    for path in paths:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            next(reader)
            for user, timestamp, track, _ms in reader:
                by_user.setdefault(user, []).append((int(timestamp), track))
    sessions = 0
    for plays in by_user.values():
        plays.sort()
        length, previous = 0, None
        for timestamp, _track in plays:
            if previous is not None and timestamp - previous > GAP_SECONDS:
                sessions += length >= MIN_SESSION_LENGTH
                length = 0
            length += 1
            previous = timestamp
        sessions += length >= MIN_SESSION_LENGTH
    return sessions


def beam_job(paths: Sequence[str], out_dir: str, beam_args: Sequence[str]) -> dict:
    """Runs playlog_example_gen into ``out_dir``; returns its manifest."""
    params = playlog_params.PlaylogParams(session_gap_seconds=GAP_SECONDS,
                                               min_session_length=MIN_SESSION_LENGTH)
    with beam.Pipeline(options=beam_io.pipeline_options(beam_args)) as pipeline:
        playlog_example_gen.build_pipeline(pipeline, paths, out_dir, params)
    return json.loads(beam_io.read_text(os.path.join(out_dir, playlog_example_gen.MANIFEST_FILENAME)))


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plays", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--tracks", type=int, default=50_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--beam-arg", action="append", default=[], dest="beam_args",
                        help="pass-through Beam flag (repeatable)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="result JSON path")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench-playlog-") as scratch:
        with timed() as generate_time:
            paths = generate_log(os.path.join(scratch, "logs"), args.plays, args.users, args.files, args.tracks)
        with timed() as job_time:
            manifest = beam_job(paths, os.path.join(scratch, "sessions"), args.beam_args)
        peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux
        with timed() as reference_time:
            reference_sessions = reference_sessionizer(paths)
    if manifest["sessions"] != reference_sessions or manifest["plays"] != args.plays:
        raise RuntimeError(f"job wrote {manifest['sessions']} sessions from {manifest['plays']} plays, "
                           f"the reference {reference_sessions} from {args.plays}")
    try:
        import pandas  # noqa: F401
        reference_name = "pandas"
    except ImportError:
        reference_name = "plain_python"
    job_rate = args.plays / job_time.seconds
    reference_rate = args.plays / reference_time.seconds
    result = write_result(args.out, NAME, {
        "plays": args.plays, "users": args.users, "files": args.files, "tracks": args.tracks,
        "generate_wall_s": generate_time.seconds,
        "unit": "plays per wall-clock second (higher is better)",
        "reference": reference_name,
        "rows": {
            "beam_job": {"wall_s": job_time.seconds, "plays_per_s": job_rate, "beam_args": args.beam_args,
                         "peak_rss_gib": peak_rss_gib, "sessions": manifest["sessions"],
                         "ratio_to_reference": job_rate / reference_rate},
            reference_name: {"wall_s": reference_time.seconds, "plays_per_s": reference_rate,
                             "sessions": reference_sessions},
        },
    }, packages=("musicrec", "numpy", "apache-beam", "tensorflow", "pandas"))
    print(f"{NAME}: {args.plays} plays, {manifest['sessions']} sessions; beam {job_time.seconds:.1f} s "
          f"({job_rate:.0f} plays/s, peak RSS {peak_rss_gib:.2f} GiB); {reference_name} "
          f"{reference_time.seconds:.1f} s ({reference_rate:.0f} plays/s); ratio x{job_rate / reference_rate:.3f}; "
          f"{short_machine(result['machine'])} -> {args.out}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
