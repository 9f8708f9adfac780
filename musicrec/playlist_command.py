"""``musicrec playlist --seed TRACK... --length N``: continue a seed into a playlist."""
from __future__ import annotations

import argparse

from musicrec.client_commands import add_server_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", nargs="+", required=True, dest="seed_tracks",
                        help="track keys the playlist starts from, oldest first")
    parser.add_argument("--length", type=int, default=20, help="tracks to add")
    add_server_flags(parser, "next_track")


def run(args: argparse.Namespace) -> int:
    from musicrec.commands import UserError

    raise UserError("playlist is not implemented yet")
