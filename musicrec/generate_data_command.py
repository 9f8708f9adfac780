"""``musicrec generate-data --out DIR``: write the synthetic demo dataset.

Deterministic for a ``--seed``: audio tracks in a folder per genre, their
metadata CSV and play logs (:mod:`musicrec.demo_data`).
"""
from __future__ import annotations

import argparse

from musicrec.demo import generate_demo_data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a very small dataset")


def run(args: argparse.Namespace) -> int:
    summary = generate_demo_data(args.out, args.seed, args.tiny)
    print(f"wrote {summary.n_tracks} tracks in {len(summary.genres)} genres "
          f"({', '.join(summary.genres)}), {summary.n_plays} plays by {summary.n_users} users "
          f"in {summary.n_sessions} sessions to {summary.out_dir}")
    return 0
