"""What the commands that run the pipeline share (``run``, ``schedule``, ``demo``).

Their flags and input checks, the local run itself, and reading and printing
what a run produced (evaluations and pushes). Nothing heavy is imported at
module level, so that ``musicrec --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

from musicrec.errors import UserError

log = logging.getLogger("musicrec")


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The inputs, workdir, config and Beam flags of ``musicrec run`` and ``musicrec schedule``."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--audio", help="folder-per-genre audio tree (<root>/<genre>/<file>)")
    source.add_argument("--metadata", help="CSV with path,genre[,artist][,track_id]")
    parser.add_argument("--playlogs", nargs="+", help="play-log files or folders")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--config", help="YAML config; see docs/configuration.md")
    parser.add_argument("--no-cache", action="store_true",
                        help="rerun every stage even when a cached execution matches")
    parser.add_argument("--beam-arg", action="append", default=[], dest="beam_args",
                        help="pass-through Beam flag, repeatable (e.g. --beam-arg=--runner=FlinkRunner)")


def checked_run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The config for ``run``/``schedule``, after checking that the inputs exist."""
    from musicrec.pipeline.config import ConfigError, load_config

    for path in [args.audio, args.metadata, args.config, *(args.playlogs or [])]:
        if path and "://" not in path and not os.path.exists(path):
            raise UserError(f"{path} does not exist")
    if not (args.audio or args.metadata or args.playlogs):
        raise UserError("give --audio DIR (or --metadata CSV), --playlogs PATH..., or both")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UserError(f"config {args.config}: {exc}") from exc
    config["beam_args"] = [*config["beam_args"], *args.beam_args]
    return config


def run_pipeline(config, workdir: str, no_cache: bool = False, **sources):
    """Runs the pipeline on this machine; returns the runner's result (run id, states, artifacts)."""
    from musicrec.pipeline.pipeline import create_pipeline
    from musicrec.pipeline.runner import LocalRunner, describe

    pipeline = create_pipeline(config, os.path.abspath(workdir), **sources)
    log.info("pipeline:\n%s", describe(pipeline.ordered()))
    return LocalRunner(no_cache=no_cache).run(pipeline)


def pushes(result) -> dict[str, dict[str, Any]]:
    """Model name → the pusher's record, for every pusher in the run."""
    return {artifact.properties["model_name"]: artifact.properties
            for ref, artifact in result.artifacts.items() if artifact.type_name == "PushedModel"}


def evaluations(result) -> dict[str, dict[str, Any]]:
    """Model kind → the evaluator's metrics.json."""
    reports = {}
    for artifact in result.artifacts.values():
        if artifact.type_name == "ModelEvaluation":
            with open(artifact.path("metrics.json"), encoding="utf-8") as handle:
                reports[artifact.properties["kind"]] = json.load(handle)
    return reports


def genre_summary_lines(report: dict) -> list[str]:
    """The genre evaluation's lines of the run summary: the model, then the classical baseline."""
    metrics = report["metrics"]
    lines = [f"  genre: held-out track accuracy {metrics['track_accuracy']:.3f} "
             f"(segment {metrics['segment_accuracy']:.3f}; chance {metrics['chance_accuracy']:.3f}) "
             f"on {metrics['n_tracks']} tracks"]
    baseline = report.get("classical_baseline")
    if baseline and "error" in baseline:
        lines.append(f"    classical baseline not computed: {baseline['error']}")
    elif baseline:
        source = {"audio": ", from the audio", "log_mel": ", from the examples' log-mel"}.get(
            baseline.get("features_from"), "")
        lines.append(f"    classical baseline (MFCC, centroid, contrast statistics; logistic "
                     f"regression): track accuracy {baseline['track_accuracy']:.3f}{source}")
    return lines


def print_run_summary(result) -> None:
    print(f"run {result.run_id}: {result.run_dir}")
    cached = [node for node, state in result.states.items() if state == "cached"]
    if cached:
        print(f"  cached (unchanged inputs and parameters): {', '.join(cached)}")
    for kind, report in sorted(evaluations(result).items()):
        metrics, blessing = report["metrics"], report["blessing"]
        if kind == "genre":
            print("\n".join(genre_summary_lines(report)))
        else:
            model, popularity = metrics["model"], metrics["baselines"]["popularity"]
            print(f"  next_track: HR@20 {model['hr@20']:.3f}, MRR@20 {model['mrr@20']:.3f} "
                  f"(popularity baseline HR@20 {popularity['hr@20']:.3f}, MRR@20 "
                  f"{popularity['mrr@20']:.3f}) over {metrics['n_predictions']} predictions")
            best = metrics.get("best_baseline") or {}
            if "hr@20" in best and "mrr@20" in best:
                print(f"    best baselines: HR@20 {best['hr@20']} "
                      f"{metrics['baselines'][best['hr@20']]['hr@20']:.3f}, MRR@20 {best['mrr@20']} "
                      f"{metrics['baselines'][best['mrr@20']]['mrr@20']:.3f}")
        print(f"    {'blessed' if blessing['blessed'] else 'NOT blessed'}: {blessing['reason']}")
    for name, push in sorted(pushes(result).items()):
        if push.get("pushed"):
            print(f"  pushed {name} version {push['version']} to {push['path']}")
        else:
            print(f"  did not push {name}: {push.get('reason')}")
    if result.report_path:
        print(f"  report: {result.report_path}")
