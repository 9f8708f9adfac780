"""``musicrec runs --workdir DIR [show RUN_ID]``: list runs, or show one run's stages and lineage."""
from __future__ import annotations

import argparse

from musicrec.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True)
    parser.add_argument("action", nargs="?", choices=["show"], help="show one run")
    parser.add_argument("run_id", nargs="?", help="the run to show")
    parser.add_argument("--config", help="YAML config (for a non-default ML Metadata store)")


def run(args: argparse.Namespace) -> int:
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
