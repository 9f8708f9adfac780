"""Next-track model vs the strong simple baselines on real Spotify listening histories.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_next_track_spotify.py ../shared/data/spotify_history
    .venv/bin/python benchmarks/bench_next_track_spotify.py DATA --hparams '{"epochs": 2}'   # brief
    .venv/bin/python benchmarks/bench_next_track_spotify.py DATA --work-dir /tmp/nt  # keeps the ingest

Runs, in this process, what the pipeline runs:

1. ``playlog_example_gen`` (the Beam job) on the folder, with the split the
   data's README describes: per listener, a session whose start lies in the
   last ``--test-fraction`` (20 %) of that listener's time span is test, the
   rest train (no eval split; the trainer holds out a share of training
   sessions for early stopping); 30-minute session gap; sessions of >= 2 plays.
2. The trainer's ``run_fn`` (``--hparams`` overrides ``NextTrackHParams``),
   timed: that is the model's training time on this machine.
3. ``models.next_track.evaluate.evaluate``: the model and every baseline on
   the same cases (every position of every test session, targets restricted
   to training tracks, full-catalogue ranking, pessimistic ties).

The reference is the best baseline of the same run, per metric; the ratio is
model ÷ best baseline (above 1: the model wins). Writes
``benchmarks/results/next_track_spotify.json`` and, under ``--work-dir``,
``evaluation/comparison.{json,png}``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import apache_beam as beam  # noqa: E402

from common import short_machine, timed, write_result  # noqa: E402  (run as a script)
from musicrec.components import beam_io, playlog_example_gen  # noqa: E402

NAME = "next_track_spotify"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "benchmarks", "results", f"{NAME}.json")
METRICS = ("hr@20", "mrr@20", "ndcg@20")


def ingest(data_dir: str, sessions_dir: str, test_fraction: float) -> dict:
    """Runs the Beam job into ``sessions_dir`` unless a finished one is there; returns its manifest."""
    manifest_path = os.path.join(sessions_dir, playlog_example_gen.MANIFEST_FILENAME)
    if not os.path.exists(manifest_path):
        params = playlog_example_gen.PlaylogParams(test_fraction=test_fraction, eval_fraction=0.0)
        with beam.Pipeline(options=beam_io.pipeline_options(None)) as pipeline:
            playlog_example_gen.build_pipeline(pipeline, [data_dir], sessions_dir, params)
    with open(manifest_path, encoding="utf-8") as handle:
        return json.load(handle)


def split_files(sessions_dir: str, split: str) -> list[str]:
    folder = os.path.join(sessions_dir, f"Split-{split}")
    return sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".gz"))


def table(report: dict) -> str:
    """Markdown rows: model and baselines at 20."""
    columns = ["hr@1", "hr@5", "hr@10", "hr@20", "mrr@20", "ndcg@20", "coverage@20", "popularity_bias@20"]
    lines = ["| recommender | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, metrics in {"LSTM (model)": report["model"], **report["baselines"]}.items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics[c]:.3f}" for c in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="spotify_history folder (listener_NN/StreamingHistory*.json)")
    parser.add_argument("--hparams", default="{}", help="JSON overrides of NextTrackHParams")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", help="keeps the ingested sessions and the model (default: a temp dir)")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)

    from musicrec.models.next_track.evaluate import evaluate
    from musicrec.models.next_track.train import run_fn
    from musicrec.models.train_args import TrainArgs

    work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench-next-track-")
    sessions_dir = os.path.join(work_dir, f"sessions-test{args.test_fraction}")
    with timed() as ingest_time:
        manifest = ingest(args.data_dir, sessions_dir, args.test_fraction)
    train_files, test_files = split_files(sessions_dir, "train"), split_files(sessions_dir, "test")
    train_args = TrainArgs(train_files, [], sessions_dir, os.path.join(work_dir, "model"),
                           hparams=json.loads(args.hparams), seed=args.seed)
    with timed() as train_time:
        train_metrics = run_fn(train_args)
    with timed() as eval_time:
        report = evaluate(train_args.serving_dir, test_files, train_files, sessions_dir,
                          max_prefix_length=train_metrics["hparams"]["max_prefix_length"],
                          output_dir=os.path.join(work_dir, "evaluation"))

    best = {metric: max(report["baselines"].items(), key=lambda item: item[1][metric])
            for metric in METRICS}
    ratios = {metric: report["model"][metric] / max(best[metric][1][metric], 1e-12) for metric in METRICS}
    payload = {
        "data": os.path.basename(os.path.normpath(args.data_dir)),
        "split": {"test_fraction": args.test_fraction, "per": "listener", "sessions": manifest["splits"],
                  "vocab_size": manifest["vocab_size"]},
        "model": report["model"], "baselines": report["baselines"],
        "best_baseline": {metric: name for metric, (name, _) in best.items()},
        "ratio_model_over_best_baseline": ratios,
        "model_wins": all(ratio > 1.0 for ratio in ratios.values() if ratio),
        "n_predictions": report["n_predictions"], "skipped_oov_targets": report["skipped_oov_targets"],
        "train_seconds": train_time.seconds, "fit_seconds": train_metrics["train_seconds"],
        "epochs_run": train_metrics["epochs_run"], "epoch_seconds": train_metrics["epoch_seconds"],
        "ingest_seconds": ingest_time.seconds, "evaluate_seconds": eval_time.seconds,
        "hparams": train_metrics["hparams"], "softmax": train_metrics["softmax"],
        "protocol": report["protocol"],
    }
    result = write_result(args.out, NAME, payload)
    print(table(report))
    print(f"{NAME}: LSTM HR@20 {report['model']['hr@20']:.3f} vs {best['hr@20'][0]} "
          f"{best['hr@20'][1]['hr@20']:.3f} (x{ratios['hr@20']:.2f}), MRR@20 "
          f"{report['model']['mrr@20']:.3f} vs {best['mrr@20'][0]} {best['mrr@20'][1]['mrr@20']:.3f} "
          f"(x{ratios['mrr@20']:.2f}); {report['n_predictions']} cases; trained in "
          f"{train_time.seconds:.0f} s ({train_metrics['epochs_run']} epochs) on "
          f"{short_machine(result['machine'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
