"""Throughput of the audio_example_gen Beam job against a plain librosa loop.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_audio_ingest.py --data ../shared/data/gtzan_dev
    .venv/bin/python benchmarks/bench_audio_ingest.py --data ../shared/data/gtzan_dev --repeat 8 --rounds 3
    .venv/bin/python benchmarks/bench_audio_ingest.py            # synthetic clips in a temp dir

The reference is the plain librosa loop (``librosa.load``, then
``librosa.feature.melspectrogram`` with the project's parameters, its log, and
``features.segment``, and, as the job stores the classical baseline's clip
vectors by default, librosa's MFCC, centroid and contrast and their clip
statistics; ``--no-baseline-vectors`` leaves them out of both) that keeps
nothing; the job under test is
``audio_example_gen`` on the DirectRunner, writing GZIP TFRecords (zlib's
Huffman-only strategy, see docs/ingestion.md), the manifest, statistics and
dead letters, once with Beam's default options (one worker), once with two
worker threads (``multi_threading``: the decode, FFT, matrix and zlib steps
release the GIL) and once with two worker processes (``multi_processing``).
The figure is audio seconds per wall-clock second; the ratio is Beam over the loop,
measured in the same process on the same (page-cached, warmed-up) files.
``--repeat N`` lists every file N times under distinct
track ids (the loop decodes them as often), so the runner's fixed start-up
weighs less; ``--rounds R`` repeats loop and jobs back to back R times and
reports the median ratio, which a shared, loaded machine needs. Each row also
has its CPU seconds (this process and Beam's finished worker processes) and
the loop's CPU over the job's: the job's extra work, which the load does not
change (it cannot show what parallel workers win).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from common import librosa_log_mel, short_machine, timed, write_result  # noqa: E402  (run as a script)
from musicrec.components import audio_example_gen, audio_sources, beam_io  # noqa: E402
from musicrec.models import features, genre_baseline  # noqa: E402

NAME = "audio_ingest"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "benchmarks", "results", "audio_ingest.json")
BEAM_VARIANTS = {
    "beam_direct_default": [],
    "beam_direct_2proc": ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
    "beam_direct_2thread": ["--direct_num_workers=2", "--direct_running_mode=multi_threading"],
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


def reference_loop(paths: Sequence[str], params: features.AudioFeatureParams,
                   baseline_vectors: bool = True) -> int:
    """The plain librosa loop: ``librosa.load`` (mono, soxr_hq) → librosa's log-mel → segments per file
    and, with ``baseline_vectors``, librosa's MFCC, centroid and contrast at 22 050 Hz → the clip
    vector (the same decode when the rates agree); nothing kept or written; files too short
    for one segment count 0. Returns the segment count."""
    import librosa

    baseline = genre_baseline.BASELINE_FEATURE_PARAMS
    segments = 0
    for path in paths:
        try:
            waveform, _ = librosa.load(path, sr=params.sample_rate, mono=True, res_type="soxr_hq")
        except Exception:  # noqa: BLE001 - the reference skips what it cannot decode
            continue
        segments += features.segment(librosa_log_mel(waveform, params), params).shape[0]
        if baseline_vectors:
            if params.sample_rate != baseline.sample_rate:
                waveform, _ = librosa.load(path, sr=baseline.sample_rate, mono=True, res_type="soxr_hq")
            genre_baseline.clip_vector(genre_baseline.librosa_frame_features(waveform, baseline))
    return segments


def beam_job(sources, labels, params, beam_args: Sequence[str], out_dir: str,
             baseline_vectors: bool = True) -> dict:
    """Runs audio_example_gen into ``out_dir``; returns its manifest."""
    with beam.Pipeline(options=beam_io.pipeline_options(beam_args)) as pipeline:
        audio_example_gen.build_pipeline(pipeline, sources, labels, out_dir, params,
                                         baseline_vectors=baseline_vectors)
    return json.loads(beam_io.read_text(os.path.join(out_dir, audio_example_gen.MANIFEST_FILE)))


def repeated_sources(sources: Sequence[audio_sources.AudioSource],
                     repeat: int) -> list[audio_sources.AudioSource]:
    """Every source ``repeat`` times under distinct track ids (``<id>~<copy>``): a larger
    catalogue from the same files, so a job's fixed start-up weighs less. ``repeat=1``: as is."""
    if repeat == 1:
        return list(sources)
    return [dataclasses.replace(source, track_id=f"{source.track_id}~{copy}")
            for copy in range(repeat) for source in sources]


def _cpu_seconds() -> float:
    """CPU seconds of this process (all threads) plus its finished children (Beam's worker
    processes): what a job costs in CPU whatever the load, unlike its wall time."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _load() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="folder-per-genre audio tree; synthetic clips when omitted")
    parser.add_argument("--out", default=DEFAULT_OUT, help="result JSON path")
    parser.add_argument("--limit", type=int, help="use only the first N files (sorted by path)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="list every file this many times under distinct track ids (default 1); "
                             "the loop decodes the same files as often")
    parser.add_argument("--rounds", type=int, default=1,
                        help="interleaved rounds of loop and jobs (default 1); the ratio reported "
                             "is the median of the rounds' ratios, each measured back to back")
    parser.add_argument("--no-baseline-vectors", dest="baseline_vectors", action="store_false",
                        help="the job without the classical baseline's clip vectors, and the loop "
                             "without them too (default: both compute them, as ingestion does)")
    parser.add_argument("--variants", nargs="+", choices=sorted(BEAM_VARIANTS), default=list(BEAM_VARIANTS),
                        help="which Beam runs (default: all)")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.rounds < 1:
        parser.error("--repeat and --rounds must be >= 1")
    logging.getLogger().setLevel(logging.WARNING)  # Beam logs every shard rename at INFO

    params = features.AudioFeatureParams()
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as scratch:
        data_dir = args.data or synthesise_clips(os.path.join(scratch, "audio"))
        sources, labels = audio_sources.list_sources(audio_dir=data_dir)
        if args.limit:
            sources = sources[:args.limit]
            labels = sorted({s.genre for s in sources})
        files = len(sources)
        sources = repeated_sources(sources, args.repeat)
        paths = [s.path for s in sources]
        total_seconds = audio_seconds(paths)

        # Warm-up outside the timings: page cache, librosa/numba/soxr first-call costs.
        for path in paths[:files]:
            with open(path, "rb") as handle:
                handle.read()
        reference_loop(paths[:1], params, args.baseline_vectors)

        startup = {}
        for name in args.variants:
            # The same job over no files: the runner's fixed cost, which dominates small sets.
            with timed() as startup_time:
                beam_job([], labels, params, BEAM_VARIANTS[name], os.path.join(scratch, f"{name}-no-files"),
                         args.baseline_vectors)
            startup[name] = startup_time.seconds
        rounds = []
        for round_index in range(args.rounds):
            load_before = _load()
            cpu_start = _cpu_seconds()
            with timed() as loop_time:
                loop_segments = reference_loop(paths, params, args.baseline_vectors)
            loop_cpu = _cpu_seconds() - cpu_start
            measured = {"librosa_loop": {"wall_s": loop_time.seconds, "cpu_s": loop_cpu, "segments": loop_segments}}
            for name in args.variants:
                out_dir = os.path.join(scratch, f"{name}-{round_index}")
                cpu_start = _cpu_seconds()
                with timed() as job_time:
                    manifest = beam_job(sources, labels, params, BEAM_VARIANTS[name], out_dir,
                                        args.baseline_vectors)
                job_cpu = _cpu_seconds() - cpu_start
                if manifest["segments"] != loop_segments:
                    raise RuntimeError(f"{name} wrote {manifest['segments']} segments, the loop {loop_segments}")
                measured[name] = {"wall_s": job_time.seconds, "segments": manifest["segments"],
                                  "dead_letters": manifest["dead_letters"],
                                  "ratio_to_loop": loop_time.seconds / job_time.seconds,
                                  "cpu_s": job_cpu, "cpu_ratio_to_loop": loop_cpu / job_cpu}
                shutil.rmtree(out_dir, ignore_errors=True)
            rounds.append({"load_before_1_5_15": load_before, "load_after_1_5_15": _load(), **measured})

    def median(values: list[float]) -> float:
        return float(np.median(values))

    loop_wall = median([r["librosa_loop"]["wall_s"] for r in rounds])
    reference_rate = total_seconds / loop_wall
    rows = {"librosa_loop": {"wall_s": loop_wall, "segments": rounds[0]["librosa_loop"]["segments"],
                             "cpu_s": median([r["librosa_loop"]["cpu_s"] for r in rounds]),
                             "audio_s_per_wall_s": reference_rate, "ratio_to_loop": 1.0}}
    for name in args.variants:
        wall = median([r[name]["wall_s"] for r in rounds])
        marginal_s = max(wall - startup[name], 1e-9)
        rows[name] = {"wall_s": wall, "no_files_wall_s": startup[name], "beam_args": BEAM_VARIANTS[name],
                      "segments": rounds[0][name]["segments"], "dead_letters": rounds[0][name]["dead_letters"],
                      "audio_s_per_wall_s": total_seconds / wall,
                      "ratio_to_loop": median([r[name]["ratio_to_loop"] for r in rounds]),
                      "ratio_of_median_walls": loop_wall / wall,
                      "cpu_s": median([r[name]["cpu_s"] for r in rounds]),
                      # loop CPU over job CPU: the job's extra work, whatever the load
                      "cpu_ratio_to_loop": median([r[name]["cpu_ratio_to_loop"] for r in rounds]),
                      # throughput once the runner is up
                      "marginal_ratio_to_loop": loop_wall / marginal_s}
    result = write_result(args.out, NAME, {
        "data": os.path.abspath(args.data) if args.data else "synthetic (temp dir)",
        "files": files,
        "repeat": args.repeat,
        "tracks": len(paths),
        "total_audio_s": total_seconds,
        "feature_params": params.to_dict(),
        "baseline_vectors": args.baseline_vectors,
        "unit": "audio seconds per wall-clock second (higher is better)",
        "reference": "librosa_loop",
        "ratio": "median over rounds of loop wall time / job wall time, measured back to back",
        "rows": rows,
        "rounds": rounds,
    })
    print(f"{NAME}: {len(paths)} tracks ({files} files x{args.repeat}), {total_seconds:.0f} audio-s, "
          f"baseline vectors {'on' if args.baseline_vectors else 'off'}, "
          f"{args.rounds} round(s); loop {reference_rate:.1f} audio-s/s; "
          + "; ".join(f"{name} {row['audio_s_per_wall_s']:.1f} audio-s/s (x{row['ratio_to_loop']:.2f}, "
                      f"x{row['marginal_ratio_to_loop']:.2f} without its {row['no_files_wall_s']:.1f} s "
                      f"no-files cost; CPU x{row['cpu_ratio_to_loop']:.2f})"
                      for name, row in rows.items() if name != "librosa_loop")
          + f"; load {rounds[0]['load_before_1_5_15']} -> {rounds[-1]['load_after_1_5_15']}"
          + f"; {short_machine(result['machine'])} -> {args.out}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
