"""The ``musicrec`` command line.

    musicrec demo                      generate data, run, serve, query, stop
    musicrec generate-data --out DIR   deterministic synthetic tracks and play logs
    musicrec run --audio DIR --playlogs PATH... --workdir DIR [--config FILE]
    musicrec serve --workdir DIR       TF Serving (or the local gRPC server) on :8500
    musicrec classify FILE...          top genres per file, over gRPC
    musicrec recommend TRACK...        next tracks for a session, over gRPC
    musicrec runs --workdir DIR [show RUN_ID]   past runs, their stages, metrics and lineage
    musicrec schedule --every 24h ...  run the pipeline repeatedly in the foreground
    musicrec config show [--config FILE]        the effective configuration
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

DEFAULT_SERVER = "127.0.0.1:8500"


def _add_server_flags(parser: argparse.ArgumentParser, model_name: str) -> None:
    parser.add_argument("--server", default=DEFAULT_SERVER, help="gRPC host:port (default %(default)s)")
    parser.add_argument("--model", default=model_name, help="served model name (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--json", action="store_true", help="one JSON object per input on stdout")


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
    demo.add_argument("--port", type=int, default=8500, help="gRPC port; 0 picks a free one")
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
    serve.add_argument("--port", type=int, default=8500, help="gRPC port (default %(default)s)")
    serve.add_argument("--rest_api_port", type=int, default=8501,
                       help="REST port, 0 to disable (default %(default)s)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="bind address of the built-in server (default %(default)s)")
    serve.add_argument("--local", action="store_true",
                       help="use the built-in server even when tensorflow_model_server is on PATH")

    classify = commands.add_parser("classify", help="genre of audio files, from the server")
    classify.add_argument("files", nargs="+")
    classify.add_argument("--config", help="the pipeline config the model was trained with")
    classify.add_argument("--top", type=int, default=3)
    _add_server_flags(classify, "genre")

    recommend = commands.add_parser("recommend", help="next tracks for a session, from the server")
    recommend.add_argument("tracks", nargs="+", help="track keys of the session so far, oldest first")
    recommend.add_argument("--k", type=int, default=10, help="how many tracks (at most the exported k)")
    _add_server_flags(recommend, "next_track")
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
    from musicrec.serving.errors import ServingError

    handler = {"demo": commands.demo, "generate-data": commands.generate_data, "run": commands.run,
               "serve": commands.serve, "classify": commands.classify,
               "recommend": commands.recommend, "schedule": commands.schedule,
               "runs": commands.runs, "config": commands.show_config}[args.command]
    try:
        return handler(args) or 0
    except commands.UserError as exc:
        print(f"musicrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except PipelineLockedError as exc:
        print(f"musicrec {args.command}: error: {exc}", file=sys.stderr)
        return 75  # EX_TEMPFAIL: try again when the other run is done
    except ServingError as exc:
        print(f"musicrec {args.command}: server error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
