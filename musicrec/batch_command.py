"""``musicrec batch``: catalogue tagging, precomputed recommendations and embedding export on Beam."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", help="a pipeline workdir whose pushed models to use")


def run(args: argparse.Namespace) -> int:
    from musicrec.commands import UserError

    raise UserError("batch is not implemented yet")
