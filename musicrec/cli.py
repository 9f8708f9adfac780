"""The ``musicrec`` command line.

    musicrec demo                      generate data, run, serve, query, stop
    musicrec generate-data --out DIR   deterministic synthetic tracks and play logs
    musicrec run --audio DIR --playlogs PATH... --workdir DIR [--config FILE]
    musicrec serve --workdir DIR       the local gRPC/REST server on 127.0.0.1:8500/:8501
    musicrec classify FILE...          top genres per file, over gRPC
    musicrec recommend TRACK...        next tracks for a session, over gRPC
    musicrec playlist --seed TRACK...  continue seed tracks into a playlist, over gRPC
    musicrec batch ...                 batch inference with Beam RunInference
    musicrec runs --workdir DIR [show RUN_ID]   past runs, their stages, metrics and lineage
    musicrec schedule --every 24h ...  run the pipeline repeatedly in the foreground
    musicrec config show [--config FILE]        the effective configuration
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from types import ModuleType
from typing import Sequence

from musicrec.errors import UserError

# Every command, in the order ``musicrec --help`` lists them: name → module. Each module
# has add_arguments(parser) and run(args) -> int, opens its docstring with
# "``musicrec NAME ...``: <the one-line help>." and imports nothing heavy at module level.
COMMANDS = {
    "demo": "musicrec.demo_command",
    "generate-data": "musicrec.generate_data_command",
    "run": "musicrec.run_command",
    "schedule": "musicrec.schedule_command",
    "runs": "musicrec.runs_command",
    "config": "musicrec.config_command",
    "serve": "musicrec.serve_command",
    "classify": "musicrec.classify_command",
    "recommend": "musicrec.recommend_command",
    "playlist": "musicrec.playlist_command",
    "batch": "musicrec.batch_command",
}


def command_module(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])


def command_help(module: ModuleType) -> str:
    """The one-line help of a command module: its docstring's first line after the usage, no final full stop."""
    summary = module.__doc__.strip().splitlines()[0]
    _, separator, help_text = summary.partition("``: ")
    if not separator:
        raise ValueError(f"{module.__name__}: the docstring must open with ``musicrec NAME ...``: <help>.")
    return help_text.removesuffix(".")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musicrec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = command_module(name)
        module.add_arguments(commands.add_parser(name, help=command_help(module)))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, passthrough = parser.parse_known_args(argv)
    if passthrough and args.command != "serve":
        parser.error(f"unrecognized arguments: {' '.join(passthrough)}")
    args.passthrough = passthrough
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.verbose:
        # Beam logs every runner step at INFO; keep stage progress readable.
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from musicrec.pipeline.lock import PipelineLockedError
    from musicrec.pipeline.runner import PipelineRunError
    from musicrec.serving.errors import ServingError

    try:
        return command_module(args.command).run(args) or 0
    except UserError as exc:
        print(f"musicrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except PipelineLockedError as exc:
        print(f"musicrec {args.command}: error: {exc}", file=sys.stderr)
        return 75  # EX_TEMPFAIL: try again when the other run is done
    except PipelineRunError as exc:
        # The stage's own message says what is missing; the traceback is for --verbose.
        logging.getLogger("musicrec").debug("pipeline failure", exc_info=True)
        print(f"musicrec {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except ServingError as exc:
        print(f"musicrec {args.command}: server error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
