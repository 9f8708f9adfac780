"""``musicrec config show [--config FILE]``: show the effective configuration."""
from __future__ import annotations

import argparse

from musicrec.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["show"])
    parser.add_argument("--config", help="YAML file merged over the defaults")


def run(args: argparse.Namespace) -> int:
    from musicrec.pipeline import runs_cli
    from musicrec.pipeline.config import ConfigError

    try:
        print(runs_cli.show_config(args.config), end="")
    except ConfigError as exc:
        raise UserError(f"config {args.config}: {exc}") from exc
    return 0
