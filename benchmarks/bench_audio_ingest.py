"""Throughput of the audio_example_gen Beam job against a plain librosa loop.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_audio_ingest.py --data ../shared/data/gtzan_dev
    .venv/bin/python benchmarks/bench_audio_ingest.py            # synthetic clips in a temp dir

The reference is the plain librosa loop (``librosa.load``, then the same
``features.log_mel`` and ``features.segment``) that keeps nothing; the job under test is
``audio_example_gen`` on the DirectRunner, writing GZIP TFRecords (zlib's
Huffman-only strategy, see docs/ingestion.md), the manifest, statistics and
dead letters, once with Beam's default options and once with two worker
processes. The figure is
audio seconds per wall-clock second; the ratio is Beam over the loop, measured
in the same process on the same (page-cached, warmed-up) files.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from common import short_machine, timed, write_result  # noqa: E402  (run as a script)
from musicrec.components import audio_example_gen, beam_io  # noqa: E402
from musicrec.models import features  # noqa: E402

NAME = "audio_ingest"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "benchmarks", "results", "audio_ingest.json")
BEAM_VARIANTS = {
    "beam_direct_default": [],
    "beam_direct_2proc": ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
}


def synthesise_clips(out_dir: str, genres: int = 2, clips_per_genre: int = 4, seconds: float = 10.0,
                     sample_rate: int = 22050, seed: int = 0) -> str:
    """Writes a folder-per-genre tree of 16-bit WAV clips (tones plus noise); returns ``out_dir``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    for g in range(genres):
        genre_dir = os.path.join(out_dir, f"genre{g}")
        os.makedirs(genre_dir, exist_ok=True)
        for c in range(clips_per_genre):
            tone = 0.4 * np.sin(2 * np.pi * rng.uniform(110, 880) * t)
            clip = tone + 0.05 * rng.standard_normal(t.shape[0])
            sf.write(os.path.join(genre_dir, f"clip{g}_{c}.wav"), clip.astype(np.float32), sample_rate,
                     subtype="PCM_16")
    return out_dir


def audio_seconds(paths: Sequence[str]) -> float:
    """Total duration of the files soundfile can read, in seconds (unreadable ones count 0)."""
    total = 0.0
    for path in paths:
        try:
            total += sf.info(path).duration
        except (RuntimeError, sf.LibsndfileError):
            continue
    return total


def reference_loop(paths: Sequence[str], params: features.AudioFeatureParams) -> int:
    """The plain librosa loop: ``librosa.load`` (mono, soxr_hq) → log-mel → segments per file,
    nothing kept or written; files too short for one segment count 0. Returns the segment count."""
    import librosa

    segments = 0
    for path in paths:
        try:
            waveform, _ = librosa.load(path, sr=params.sample_rate, mono=True, res_type="soxr_hq")
        except Exception:  # noqa: BLE001 - the reference skips what it cannot decode
            continue
        segments += features.segment(features.log_mel(waveform, params), params).shape[0]
    return segments


def beam_job(sources, labels, params, beam_args: Sequence[str], out_dir: str) -> dict:
    """Runs audio_example_gen into ``out_dir``; returns its manifest."""
    with beam.Pipeline(options=beam_io.pipeline_options(beam_args)) as pipeline:
        audio_example_gen.build_pipeline(pipeline, sources, labels, out_dir, params)
    return json.loads(beam_io.read_text(os.path.join(out_dir, audio_example_gen.MANIFEST_FILE)))


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="folder-per-genre audio tree; synthetic clips when omitted")
    parser.add_argument("--out", default=DEFAULT_OUT, help="result JSON path")
    parser.add_argument("--limit", type=int, help="use only the first N files (sorted by path)")
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)  # Beam logs every shard rename at INFO

    params = features.AudioFeatureParams()
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as scratch:
        data_dir = args.data or synthesise_clips(os.path.join(scratch, "audio"))
        sources, labels = audio_example_gen.list_sources(audio_dir=data_dir)
        if args.limit:
            sources = sources[:args.limit]
            labels = sorted({s.genre for s in sources})
        paths = [s.path for s in sources]
        total_seconds = audio_seconds(paths)

        # Warm-up outside the timings: page cache, librosa/numba/soxr first-call costs.
        for path in paths:
            with open(path, "rb") as handle:
                handle.read()
        reference_loop(paths[:1], params)

        with timed() as loop_time:
            loop_segments = reference_loop(paths, params)
        rows = {"librosa_loop": {"wall_s": loop_time.seconds, "segments": loop_segments}}
        for name, beam_args in BEAM_VARIANTS.items():
            # The same job over no files: the runner's fixed cost, which dominates small sets.
            with timed() as startup_time:
                beam_job([], labels, params, beam_args, os.path.join(scratch, f"{name}-no-files"))
            with timed() as job_time:
                manifest = beam_job(sources, labels, params, beam_args, os.path.join(scratch, name))
            if manifest["segments"] != loop_segments:
                raise RuntimeError(f"{name} wrote {manifest['segments']} segments, the loop {loop_segments}")
            rows[name] = {"wall_s": job_time.seconds, "no_files_wall_s": startup_time.seconds,
                          "segments": manifest["segments"], "beam_args": beam_args,
                          "dead_letters": manifest["dead_letters"]}

    reference_rate = total_seconds / rows["librosa_loop"]["wall_s"]
    for row in rows.values():
        row["audio_s_per_wall_s"] = total_seconds / row["wall_s"]
        row["ratio_to_loop"] = row["audio_s_per_wall_s"] / reference_rate
        if "no_files_wall_s" in row:  # throughput once the runner is up
            marginal_s = max(row["wall_s"] - row["no_files_wall_s"], 1e-9)
            row["marginal_ratio_to_loop"] = total_seconds / marginal_s / reference_rate
    result = write_result(args.out, NAME, {
        "data": os.path.abspath(args.data) if args.data else "synthetic (temp dir)",
        "files": len(paths),
        "total_audio_s": total_seconds,
        "feature_params": params.to_dict(),
        "unit": "audio seconds per wall-clock second (higher is better)",
        "reference": "librosa_loop",
        "rows": rows,
    })
    print(f"{NAME}: {len(paths)} files, {total_seconds:.0f} audio-s; "
          f"loop {reference_rate:.1f} audio-s/s; "
          + "; ".join(f"{name} {row['audio_s_per_wall_s']:.1f} audio-s/s (x{row['ratio_to_loop']:.2f}, "
                      f"x{row['marginal_ratio_to_loop']:.2f} without its {row['no_files_wall_s']:.1f} s "
                      f"no-files cost)" for name, row in rows.items() if name != "librosa_loop")
          + f"; {short_machine(result['machine'])} -> {args.out}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
