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
from typing import Sequence

from musicrec.serving.wire import DEFAULT_GRPC_PORT, DEFAULT_REST_PORT

# Commands with a module of their own: name → (module, help). Each module has
# add_arguments(parser) and run(args) and imports nothing heavy at module level.
CLIENT_COMMANDS = {
    "classify": ("musicrec.classify_command", "genre of audio files, from the server"),
    "recommend": ("musicrec.recommend_command", "next tracks for a session, from the server"),
    "playlist": ("musicrec.playlist_command", "continue seed tracks into a playlist, from the server"),
    "batch": ("musicrec.batch_command", "batch inference with Beam RunInference over pushed models"),
}


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musicrec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="the whole job on generated data")
    demo.add_argument("--workdir", default="demo-run", help="where data, runs and models go")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--port", type=int, default=DEFAULT_GRPC_PORT, help="gRPC port; 0 picks a free one")
    demo.add_argument("--tiny", action="store_true", help="a very small dataset (smoke test)")

    generate = commands.add_parser("generate-data", help="write the synthetic demo dataset")
    generate.add_argument("--out", required=True)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--tiny", action="store_true", help="a very small dataset")

    run = commands.add_parser("run", help="run the pipeline on your own audio and play logs")
    _add_run_flags(run)

    schedule = commands.add_parser("schedule", help="run the pipeline repeatedly, in the foreground")
    _add_run_flags(schedule)
    when = schedule.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", help="interval such as 30m, 6h, 24h")
    when.add_argument("--cron", help='5-field cron expression, e.g. "0 3 * * *"')
    schedule.add_argument("--max-runs", type=int, help="stop after this many runs")

    runs = commands.add_parser("runs", help="list runs, or show one run's stages and lineage")
    runs.add_argument("--workdir", required=True)
    runs.add_argument("action", nargs="?", choices=["show"], help="show one run")
    runs.add_argument("run_id", nargs="?", help="the run to show")
    runs.add_argument("--config", help="YAML config (for a non-default ML Metadata store)")

    config = commands.add_parser("config", help="show the effective configuration")
    config.add_argument("action", choices=["show"])
    config.add_argument("--config", help="YAML file merged over the defaults")

    serve = commands.add_parser(
        "serve", help="serve pushed models over TF Serving's gRPC and REST APIs",
        description="Any other tensorflow_model_server flag (--model_name, --model_base_path, "
                    "--model_config_file, --enable_batching, --batching_parameters_file, "
                    "--monitoring_config_file, --file_system_poll_wait_seconds, ...) is passed "
                    "through unchanged.")
    serve.add_argument("--workdir", help="serve every model pushed under <workdir>/serving")
    serve.add_argument("--port", type=int, default=DEFAULT_GRPC_PORT, help="gRPC port (default %(default)s)")
    serve.add_argument("--rest_api_port", type=int, default=DEFAULT_REST_PORT,
                       help="REST port, 0 to disable (default %(default)s)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default %(default)s); tensorflow_model_server on PATH "
                            "listens on all interfaces, so it runs only with --host 0.0.0.0")
    serve.add_argument("--local", action="store_true",
                       help="use the built-in server even when tensorflow_model_server is on PATH")

    for name, (module, help_text) in CLIENT_COMMANDS.items():
        importlib.import_module(module).add_arguments(commands.add_parser(name, help=help_text))
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
    from musicrec import commands  # imports TensorFlow: keep --help fast
    from musicrec.pipeline.lock import PipelineLockedError
    from musicrec.pipeline.runner import PipelineRunError
    from musicrec.serving.errors import ServingError

    handlers = {"demo": commands.demo, "generate-data": commands.generate_data, "run": commands.run,
                "serve": commands.serve, "schedule": commands.schedule,
                "runs": commands.runs, "config": commands.show_config}
    for name, (module, _) in CLIENT_COMMANDS.items():
        handlers[name] = importlib.import_module(module).run
    handler = handlers[args.command]
    try:
        return handler(args) or 0
    except commands.UserError as exc:
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
