"""``musicrec serve --workdir DIR``: serve pushed models over TF Serving's gRPC and REST APIs.

Starts tensorflow_model_server when it is on PATH and may listen everywhere,
else the built-in server. TF Serving flags other than the ones ``musicrec
serve`` defines arrive in ``args.passthrough`` and are handed over unchanged.
A ``--model_config_file`` or ``--model_base_path`` among them names the
models; otherwise ``--workdir`` does, through a generated
``<workdir>/serving/models.config``. The real binary has no bind-address
flag and listens on all interfaces, so it is used only when ``--host`` asks
for that (``0.0.0.0`` or ``::``); for any other host the built-in server
binds it, with a warning.
"""
from __future__ import annotations

import argparse
import logging
import os

from musicrec.errors import UserError
from musicrec.serving.wire import DEFAULT_GRPC_PORT, DEFAULT_REST_PORT, MODELS_CONFIG, serving_base

log = logging.getLogger("musicrec")

_ALL_INTERFACES = ("0.0.0.0", "::", "")
GENERATED_CONFIG_NOTE = ("Written by `musicrec serve --workdir` on every start, listing every pushed model. "
                         "For labels or version policies pass your own --model_config_file.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Any other tensorflow_model_server flag (--model_name, --model_base_path, "
                          "--model_config_file, --enable_batching, --batching_parameters_file, "
                          "--monitoring_config_file, --file_system_poll_wait_seconds, ...) is passed "
                          "through unchanged.")
    parser.add_argument("--workdir", help="serve every model pushed under <workdir>/serving")
    parser.add_argument("--port", type=int, default=DEFAULT_GRPC_PORT, help="gRPC port (default %(default)s)")
    parser.add_argument("--rest_api_port", type=int, default=DEFAULT_REST_PORT,
                        help="REST port, 0 to disable (default %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default %(default)s); tensorflow_model_server on PATH "
                             "listens on all interfaces, so it runs only with --host 0.0.0.0")
    parser.add_argument("--local", action="store_true",
                        help="use the built-in server even when tensorflow_model_server is on PATH")


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


def run(args: argparse.Namespace) -> int:
    """Execs tensorflow_model_server (never returns) or runs the built-in server until stopped."""
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
