"""``musicrec schedule --every 24h ...``: run the pipeline repeatedly, in the foreground.

Each tick does what ``musicrec run`` does with the same flags; ``--every``
or ``--cron`` says when, ``--max-runs`` when to stop.
"""
from __future__ import annotations

import argparse

from musicrec import run_command
from musicrec.pipeline_runs import add_run_flags, checked_run_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_flags(parser)
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", help="interval such as 30m, 6h, 24h")
    when.add_argument("--cron", help='5-field cron expression, e.g. "0 3 * * *"')
    parser.add_argument("--max-runs", type=int, help="stop after this many runs")


def run(args: argparse.Namespace) -> int:
    from musicrec.pipeline import runs_cli

    checked_run_config(args)  # fail now, not at the first tick
    return runs_cli.schedule(lambda: run_command.run(args), every=args.every, cron=args.cron,
                             max_runs=args.max_runs, workdir=args.workdir)
