"""What each ``musicrec`` command does; ``cli.py`` only parses flags.

This is the one place that joins the serving clients with the feature code:
``classify`` computes log-mel segments with ``musicrec.models.features`` (the
single source of truth) and sends them to the server.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
from typing import Any

from musicrec.serving.wire import MODELS_CONFIG, serving_base

log = logging.getLogger("musicrec")


class UserError(Exception):
    """A problem the user can fix (bad path, missing model...): printed without a traceback."""


# ---------------------------------------------------------------------------- data and pipeline

def generate_data(args: argparse.Namespace) -> int:
    summary = _generate(args.out, args.seed, args.tiny)
    print(f"wrote {summary.n_tracks} tracks in {len(summary.genres)} genres "
          f"({', '.join(summary.genres)}), {summary.n_plays} plays by {summary.n_users} users "
          f"in {summary.n_sessions} sessions to {summary.out_dir}")
    return 0


def _generate(out_dir: str, seed: int, tiny: bool):
    from musicrec import demo_data

    config = demo_data.tiny_config(seed) if tiny else demo_data.DemoDataConfig(seed=seed)
    return demo_data.generate(out_dir, config, progress=lambda message: log.info("%s", message))


def run(args: argparse.Namespace) -> int:
    config = _checked_run_config(args)
    result = run_pipeline(config, args.workdir, no_cache=args.no_cache, audio_dir=args.audio,
                          metadata_csv=args.metadata, playlog_paths=args.playlogs)
    print_run_summary(result)
    return 0 if all(push.get("pushed") for push in pushes(result).values()) else 1


def _checked_run_config(args: argparse.Namespace) -> dict[str, Any]:
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


def schedule(args: argparse.Namespace) -> int:
    from musicrec.pipeline import runs_cli

    _checked_run_config(args)  # fail now, not at the first tick
    return runs_cli.schedule(lambda: run(args), every=args.every, cron=args.cron,
                             max_runs=args.max_runs, workdir=args.workdir)


def runs(args: argparse.Namespace) -> int:
    from musicrec.pipeline import runs_cli
    from musicrec.pipeline.config import load_config

    if args.action is None:
        print(runs_cli.list_runs(args.workdir))
        return 0
    if not args.run_id:
        raise UserError("runs show needs a RUN_ID (see `musicrec runs --workdir DIR`)")
    try:
        print(runs_cli.show_run(args.workdir, args.run_id, load_config(args.config)["metadata"]))
    except LookupError as exc:
        raise UserError(str(exc)) from exc
    return 0


def show_config(args: argparse.Namespace) -> int:
    from musicrec.pipeline import runs_cli
    from musicrec.pipeline.config import ConfigError

    try:
        print(runs_cli.show_config(args.config), end="")
    except ConfigError as exc:
        raise UserError(f"config {args.config}: {exc}") from exc
    return 0


def run_pipeline(config, workdir: str, no_cache: bool = False, **sources):
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


def print_run_summary(result) -> None:
    print(f"run {result.run_id}: {result.run_dir}")
    cached = [node for node, state in result.states.items() if state == "cached"]
    if cached:
        print(f"  cached (unchanged inputs and parameters): {', '.join(cached)}")
    for kind, report in sorted(evaluations(result).items()):
        metrics, blessing = report["metrics"], report["blessing"]
        if kind == "genre":
            print(f"  genre: held-out track accuracy {metrics['track_accuracy']:.3f} "
                  f"(segment {metrics['segment_accuracy']:.3f}; chance {metrics['chance_accuracy']:.3f}) "
                  f"on {metrics['n_tracks']} tracks")
        else:
            model, popularity = metrics["model"], metrics["baselines"]["popularity"]
            print(f"  next_track: HR@20 {model['hr@20']:.3f}, MRR@20 {model['mrr@20']:.3f} "
                  f"(popularity baseline HR@20 {popularity['hr@20']:.3f}, MRR@20 "
                  f"{popularity['mrr@20']:.3f}) over {metrics['n_predictions']} predictions")
        print(f"    {'blessed' if blessing['blessed'] else 'NOT blessed'}: {blessing['reason']}")
    for name, push in sorted(pushes(result).items()):
        if push.get("pushed"):
            print(f"  pushed {name} version {push['version']} to {push['path']}")
        else:
            print(f"  did not push {name}: {push.get('reason')}")
    if result.report_path:
        print(f"  report: {result.report_path}")


# ---------------------------------------------------------------------------- serving

def served_models(workdir: str) -> dict[str, str]:
    """Model name → absolute base path, for every model with a version under ``<workdir>/serving``."""
    base = os.path.abspath(serving_base(workdir))
    models = {}
    if os.path.isdir(base):
        for name in sorted(os.listdir(base)):
            path = os.path.join(base, name)
            if os.path.isdir(path) and any(v.isdigit() for v in os.listdir(path)):
                models[name] = path
    return models


_ALL_INTERFACES = ("0.0.0.0", "::", "")
GENERATED_CONFIG_NOTE = ("Written by `musicrec serve --workdir` on every start, listing every pushed model. "
                         "For labels or version policies pass your own --model_config_file.")


def serve(args: argparse.Namespace) -> int:
    """Starts tensorflow_model_server when it is on PATH and may listen everywhere, else the built-in server.

    TF Serving flags other than the ones ``musicrec serve`` defines arrive in
    ``args.passthrough`` and are handed over unchanged. A ``--model_config_file``
    or ``--model_base_path`` among them names the models; otherwise
    ``--workdir`` does, through a generated ``<workdir>/serving/models.config``.
    The real binary has no bind-address flag and listens on all interfaces,
    so it is used only when ``--host`` asks for that (``0.0.0.0`` or ``::``);
    for any other host the built-in server binds it, with a warning.
    """
    from musicrec.serving import config as serving_config
    from musicrec.serving import flags as serving_flags

    flags = [f"--port={args.port}", f"--rest_api_port={args.rest_api_port}", *args.passthrough]
    given = [flag.split("=", 1)[0] for flag in args.passthrough
             if flag.startswith(("--model_config_file", "--model_base_path"))]
    if given:
        if args.workdir:
            log.warning("serving the models %s names; --workdir is not used for them", given[0])
    elif args.workdir:
        models = served_models(args.workdir)
        if not models:
            raise UserError(f"no pushed models under {args.workdir}/serving; run `musicrec run` first")
        config_file = os.path.join(os.path.abspath(serving_base(args.workdir)), MODELS_CONFIG)
        serving_config.write_model_config(config_file, models, comment=GENERATED_CONFIG_NOTE)
        flags.append(f"--model_config_file={config_file}")
    else:
        raise UserError("give --workdir, --model_config_file, or --model_name with --model_base_path")
    binary = None if args.local else serving_config.find_model_server()
    if binary and args.host not in _ALL_INTERFACES:
        log.warning("%s is on PATH, but it listens on all interfaces (it has no bind-address flag): "
                    "serving on %s with the built-in server instead. Pass --host 0.0.0.0 to run %s, "
                    "or --local to keep the built-in server without this warning.",
                    serving_config.MODEL_SERVER_BINARY, args.host, serving_config.MODEL_SERVER_BINARY)
        binary = None
    if binary:
        log.info("starting %s (listening on all interfaces)", binary)
        os.execv(binary, [binary, *flags])
    return serving_flags.main([*flags, f"--host={args.host}"])


# ---------------------------------------------------------------------------- demo

def demo(args: argparse.Namespace) -> int:
    from musicrec.demo import run_demo

    return run_demo(args.workdir, seed=args.seed, port=args.port, tiny=args.tiny)


def read_metadata(path: str) -> dict[str, dict[str, str]]:
    """track_id → metadata row, paths made absolute."""
    root = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {row["track_id"]: {**row, "path": os.path.join(root, row["path"])} for row in rows}

