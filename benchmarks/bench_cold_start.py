"""Cold-start quality: HR@20 of never-played tracks against warm tracks and a random ranking.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_cold_start.py             # the full demo data set (minutes)
    .venv/bin/python benchmarks/bench_cold_start.py --tiny      # a smoke run (under a minute)
    .venv/bin/python benchmarks/bench_cold_start.py --epochs 5  # fewer next-track epochs

Generates the demo data (10 % of the tracks held out of every play log, drawn
uniformly), runs the whole pipeline with the ``cold_start`` stage, and reads
the next-track evaluation's ``cold_start`` metrics (protocol in
docs/cold_start.md). The references are measured in the same run: the same
model's HR@20 on the regular (warm) test cases, and a random ranking's HR@20
(``20 / catalogue size``). Ratios: cold ÷ warm (target >= 0.5) and cold ÷
random (target > 5).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import timed, write_result  # noqa: E402  (run as a script)

NAME = "cold_start"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "benchmarks", "results", "cold_start.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny demo data and models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="next-track epochs (default: the model's)")
    parser.add_argument("--workdir", default=None, help="keep the run here (default: a temp dir)")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("apache_beam", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from musicrec import demo_data, demo_data_config, pipeline_runs
    from musicrec.demo import DEMO_OVERRIDES, TINY_OVERRIDES
    from musicrec.pipeline.config import make_config

    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-cold-start-")
    data_config = demo_data.tiny_config(args.seed) if args.tiny else demo_data_config.DemoDataConfig(seed=args.seed)
    data = demo_data.generate(os.path.join(workdir, "data"), data_config)
    overrides = {"seed": args.seed, **(TINY_OVERRIDES if args.tiny else DEMO_OVERRIDES),
                 "cold_start": {"enabled": True, "eval_plays": data.cold_plays_csv}}
    if args.epochs is not None:
        section = overrides.get("next_track_model", {})  # a module constant's: copied, never changed
        overrides["next_track_model"] = {**section, "hparams": {**section.get("hparams", {}),
                                                                "epochs": args.epochs}}
    config = make_config(overrides)
    with timed() as pipeline_time:
        result = pipeline_runs.run_pipeline(config, workdir, audio_dir=data.audio_dir,
                                            playlog_paths=data.playlog_paths)
    metrics = pipeline_runs.evaluations(result)["next_track"]["metrics"]
    cold = metrics["cold_start"]
    written = write_result(args.out, NAME, {
        "data": {"tiny": args.tiny, "seed": args.seed, "tracks": data.n_tracks,
                 "cold_tracks": len(data.cold_tracks), "plays": data.n_plays,
                 "held_out_plays": data.n_held_out_plays},
        "next_track_hparams": config["next_track_model"]["hparams"],
        "cold_start": cold, "model": metrics["model"],
        "regressors": result.artifact("cold_start", "model").properties.get("regressor_loo_r2"),
        "pipeline_seconds": round(pipeline_time.seconds, 1),
        "run_dir": result.run_dir,
    })
    print(f"{NAME}: cold HR@20 {cold['cold']['hr@20']:.3f} on {cold['n_cases']} cases of "
          f"{cold['n_cold_tracks']} never-played tracks; warm HR@20 {cold['warm']['hr@20']:.3f} "
          f"(cold/warm {cold['cold_over_warm']:.2f}); random {cold['random']['hr@20']:.3f} "
          f"(cold/random {cold['cold_over_random']:.1f}x); catalogue {cold['catalogue_size']}; "
          f"pipeline {pipeline_time.seconds:.0f} s -> {args.out}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
