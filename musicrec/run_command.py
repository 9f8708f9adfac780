"""``musicrec run --audio DIR --playlogs PATH... --workdir DIR``: run the pipeline on your own audio and play logs.

Ingest → train → evaluate → push, once, in the foreground; prints what each
evaluation measured and what was pushed. Exits 0 when every model was
pushed, 1 when one was not.
"""
from __future__ import annotations

import argparse

from musicrec.pipeline_runs import add_run_flags, checked_run_config, print_run_summary, pushes, run_pipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_flags(parser)


def run(args: argparse.Namespace) -> int:
    config = checked_run_config(args)
    result = run_pipeline(config, args.workdir, no_cache=args.no_cache, audio_dir=args.audio,
                          metadata_csv=args.metadata, playlog_paths=args.playlogs)
    print_run_summary(result)
    return 0 if all(push.get("pushed") for push in pushes(result).values()) else 1
