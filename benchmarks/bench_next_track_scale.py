"""The whole next-track pipeline on a large real play log, as a user runs it: wall time, peak memory.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_next_track_scale.py ../shared/data/spotify_history_large

What runs: ``musicrec run --playlogs <folder> --workdir <tmp>`` in a child
process with the default config (or ``--config``): ingestion, statistics,
training, evaluation against the baselines, blessing, final fit and push.
Measured: the child's wall time, its peak resident memory (the largest
``ru_maxrss`` of the process tree's children), and plays per second.

Reference, in this process on the same files: reading every play with the
project's readers (``playlog_readers.read_playlog``), the least any pipeline
over these logs must do. The ratio is pipeline seconds ÷ reading seconds.
Targets (issue 17): ≤ 30 min and peak RSS ≤ 8 GB on a 2-core machine.
Writes ``benchmarks/results/next_track_scale.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile

from common import short_machine, timed, write_result  # noqa: E402  (run as a script)

NAME = "next_track_scale"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_SECONDS = 30 * 60
TARGET_RSS_GIB = 8 * 10 ** 9 / 2 ** 30  # 8 GB

log = logging.getLogger(NAME)


def read_every_play(folder: str) -> tuple[int, int]:
    """``(plays, dead letters)`` of every play-log file under ``folder``, read by the project's readers."""
    from musicrec.components.playlog_readers import list_playlog_files, read_playlog
    from musicrec.components.playlog_rows import Play

    plays = dead_letters = 0
    files, _ = list_playlog_files([folder])
    for path, fmt in files:
        for record in read_playlog(path, fmt):
            if isinstance(record, Play):
                plays += 1
            else:
                dead_letters += 1
    return plays, dead_letters


def children_peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20


def stage_summary(workdir: str) -> tuple[dict, dict]:
    """``(seconds per stage, state per stage)`` of the newest run under ``workdir``."""
    from musicrec.pipeline.runner import read_run_record

    runs = os.path.join(workdir, "runs")
    # The newest run folder (run ids sort by time); the store and the lock sit beside them.
    records = [record for name in sorted(os.listdir(runs), reverse=True)
               if (record := read_run_record(os.path.join(runs, name))) is not None]
    if not records:
        return {}, {}
    record = records[0]
    seconds = {node: entry.get("seconds") for node, entry in record["components"].items()}
    return seconds, {node: entry.get("state") for node, entry in record["components"].items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("playlogs", help="play-log folder, e.g. ../shared/data/spotify_history_large")
    parser.add_argument("--config", help="pipeline config YAML (default: the defaults)")
    parser.add_argument("--work-dir", help="the pipeline's workdir (default: a temp dir)")
    parser.add_argument("--out", help=f"result JSON (default: benchmarks/results/{NAME}.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)

    with timed() as read_time:
        plays, dead_letters = read_every_play(args.playlogs)
    log.info("reference: %d plays (%d dead letters) read in %.0f s", plays, dead_letters, read_time.seconds)

    workdir = os.path.abspath(args.work_dir or tempfile.mkdtemp(prefix="bench-next-track-scale-"))
    command = [os.path.join(os.path.dirname(sys.executable), "musicrec"), "run",
               "--playlogs", args.playlogs, "--workdir", workdir, "--no-cache"]
    if args.config:
        command += ["--config", args.config]
    with timed() as pipeline_time:
        completed = subprocess.run(command, cwd=REPO_ROOT)
    peak_gib = children_peak_rss_gib()
    seconds, statuses = stage_summary(workdir)
    payload = {
        "data": os.path.abspath(args.playlogs), "config": args.config or "defaults",
        "command": " ".join(command), "exit_code": completed.returncode,
        "plays": plays, "dead_letters": dead_letters,
        "pipeline_seconds": pipeline_time.seconds, "stage_seconds": seconds, "stage_status": statuses,
        "plays_per_second": plays / pipeline_time.seconds,
        "peak_rss_gib": peak_gib,
        "reference_read_seconds": read_time.seconds,
        "pipeline_over_reference": pipeline_time.seconds / read_time.seconds,
        "targets": {"seconds": TARGET_SECONDS, "peak_rss_gib": TARGET_RSS_GIB},
        "target_met": completed.returncode == 0 and pipeline_time.seconds <= TARGET_SECONDS
        and peak_gib <= TARGET_RSS_GIB,
    }
    written = write_result(args.out or os.path.join(REPO_ROOT, "benchmarks", "results", f"{NAME}.json"),
                           NAME, payload)
    print(f"{NAME}: {plays} plays in {pipeline_time.seconds / 60:.1f} min ({payload['plays_per_second']:.0f} "
          f"plays/s, x{payload['pipeline_over_reference']:.1f} the read), peak RSS {peak_gib:.2f} GiB, "
          f"exit {completed.returncode}; target <= 30 min and <= 8 GB: "
          f"{'met' if payload['target_met'] else 'NOT met'}; on {short_machine(written['machine'])}")
    print(json.dumps(seconds))
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
