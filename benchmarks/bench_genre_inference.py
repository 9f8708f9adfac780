"""In-process genre inference speed, as a multiple of real time (target: 100x for the default
pretrained front end, 200x for the log-mel models, on CPU).

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_genre_inference.py --data ../shared/data/gtzan_dev --limit 10
    .venv/bin/python benchmarks/bench_genre_inference.py                     # synthetic 30 s clips
    .venv/bin/python benchmarks/bench_genre_inference.py --saved-model work/serving/genre/3
    .venv/bin/python benchmarks/bench_genre_inference.py --frontend log_mel --config crnn_pitch_tempo_x3

The model is a SavedModel exported as ``run_fn`` exports it: the one given
with ``--saved-model``, or else an untrained stand-in (speed does not depend
on the weights): with ``--frontend musicnn_msd`` (default) the real frozen
MSD_musicnn front end under a clip head of the default hyperparameters; with
``log_mel`` a model of ``--architecture`` with the default hyperparameters,
or of ``--config``, one of the models that ``bench_genre_gtzan.py`` compares.
One clip per call, as ``musicrec classify`` sends one file per request;
``--repeats`` passes over the clips after one untimed warm-up pass. Three
paths are timed, each in audio seconds per wall-clock second:

- ``from_waveform``: the waveform signature at 22 050 Hz, resampling and
  log-mel computed in-graph (what ``musicrec classify`` calls);
- ``numpy_log_mel_then_serving_default``: ``features.log_mel`` and segments
  (the Beam path, on audio already at the model's rate), then
  ``serving_default`` on the track's segments;
- ``serving_default_only``: ``serving_default`` on precomputed segments.

The reference is plain librosa's log-mel (``common.librosa_log_mel``) with
the model's feature parameters on the same clips, in the same process; the
ratio is each path's speed over it.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench_genre_gtzan import MODELS as GTZAN_MODELS  # noqa: E402  (run as a script)
from common import librosa_log_mel, short_machine, timed, write_result  # noqa: E402

NAME = "genre_inference"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "benchmarks", "results", "genre_inference.json")


TARGETS = {"musicnn_msd": 100.0, "log_mel": 200.0}


def load_waveforms(data: str | None, limit: int, seconds: float, rate: int) -> list[np.ndarray]:
    from musicrec.models import audio_files, features

    params = features.AudioFeatureParams(sample_rate=rate)
    if data:
        paths = sorted(p for p in glob.glob(os.path.join(data, "*", "*"))
                       if p.lower().endswith((".flac", ".wav", ".ogg", ".mp3")))
        # Every genre in turn, so a small --limit still spans the set.
        by_genre: dict[str, list[str]] = {}
        for path in paths:
            by_genre.setdefault(os.path.basename(os.path.dirname(path)), []).append(path)
        ordered = [p for group in zip(*by_genre.values()) for p in group]
        if not ordered:
            raise SystemExit(f"no audio under {data}")
        return [audio_files.load_audio(p, params) for p in ordered[:limit]]
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    return [(0.3 * np.sin(2 * np.pi * rng.uniform(80, 2000) * t)
             + 0.05 * rng.standard_normal(t.size)).astype(np.float32) for _ in range(limit)]


def stand_in_model(overrides: dict, params, out_dir: str) -> str:
    """Exports an untrained log-mel model of ``GenreHParams(**overrides)``; returns its folder."""
    from musicrec.models.export import export_serving_model
    from musicrec.models.genre.hparams import GenreHParams
    from musicrec.models.genre.model import build_classifier, build_serving_model, new_normalization
    from musicrec.models.genre.signatures import OUTPUTS, GenreSignatures

    labels = [f"genre{i}" for i in range(10)]
    normalization = new_normalization()
    normalization.adapt(np.random.default_rng(0).normal(-8, 3, (500, params.n_mels)).astype(np.float32))
    classifier = build_classifier(params.n_mels, len(labels), GenreHParams(**overrides),
                                  normalization)
    serving_dir = os.path.join(out_dir, "serving")
    export_serving_model(GenreSignatures(build_serving_model(classifier, labels), labels, params),
                         serving_dir, inputs={"log_mel"}, outputs=OUTPUTS)
    return serving_dir


def pretrained_stand_in(out_dir: str) -> str:
    """Exports the frozen MSD_musicnn front end under a default clip head fitted for one epoch
    on random features (its weights do not change the cost)."""
    from musicrec.models.export import export_serving_model
    from musicrec.models.genre import musicnn
    from musicrec.models.genre.pretrained import PretrainedHParams
    from musicrec.models.genre.signatures import OUTPUTS, GenreSignatures, PretrainedClipModel
    from musicrec.models.genre.train_pretrained import fit_head, frontend_models

    labels = [f"genre{i}" for i in range(10)]
    hparams = PretrainedHParams(epochs=1)
    cache_model, penultimate = frontend_models(hparams)
    width = int(cache_model.outputs[0].shape[-1])
    rng = np.random.default_rng(0)
    clips = [rng.normal(0, 1, (10, width)).astype(np.float32) for _ in range(2 * len(labels))]
    head, _history, _monitor = fit_head(clips, [i % len(labels) for i in range(len(clips))],
                                        len(labels), hparams, penultimate=penultimate)
    serving_dir = os.path.join(out_dir, "serving")
    params = musicnn.FEATURE_PARAMS
    export_serving_model(GenreSignatures(PretrainedClipModel(cache_model, head, params.n_mels,
                                                             musicnn.PATCH_FRAMES),
                                         labels, params, frontend="musicnn_msd"),
                         serving_dir, inputs={"log_mel"}, outputs=OUTPUTS)
    return serving_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="folder-per-genre clips (default: synthetic clips)")
    parser.add_argument("--limit", type=int, default=10, help="clips")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of synthetic clips")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the clips")
    parser.add_argument("--saved-model", help="a genre SavedModel folder (default: untrained stand-in)")
    parser.add_argument("--frontend", default="musicnn_msd", choices=sorted(TARGETS),
                        help="the stand-in's front end (default %(default)s)")
    parser.add_argument("--architecture", default="lstm", choices=["lstm", "crnn"],
                        help="the log_mel stand-in's architecture")
    parser.add_argument("--config", choices=sorted(GTZAN_MODELS),
                        help="log_mel stand-in with the hyperparameters of this bench_genre_gtzan.py "
                             "model (instead of --architecture's defaults)")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    import tensorflow as tf

    from musicrec.models import features
    from musicrec.models.genre.evaluate import predict_track
    from musicrec.models.genre.frontends import WAVEFORM_SAMPLE_RATE
    from musicrec.models.genre.signatures import read_model_features

    with tempfile.TemporaryDirectory(prefix="bench-genre-inference-") as work:
        if args.saved_model:
            saved_model = args.saved_model
        elif args.frontend == "musicnn_msd":
            saved_model = pretrained_stand_in(work)
        else:
            overrides = GTZAN_MODELS[args.config] if args.config else {"architecture": args.architecture}
            saved_model = stand_in_model(overrides, features.AudioFeatureParams(), work)
        frontend, params = read_model_features(saved_model)
        # The waveform from_waveform takes (22 050 Hz) and the same clips at the model's rate.
        waveforms = load_waveforms(args.data, args.limit, args.seconds, WAVEFORM_SAMPLE_RATE)
        at_model_rate = load_waveforms(args.data, args.limit, args.seconds, params.sample_rate)
        audio_seconds = sum(w.shape[0] for w in waveforms) / WAVEFORM_SAMPLE_RATE
        signatures = tf.saved_model.load(saved_model).signatures
        serving_default, from_waveform = signatures["serving_default"], signatures["from_waveform"]
        segments = [features.segment(features.log_mel(w, params), params) for w in at_model_rate]

        paths = {
            "reference_librosa_log_mel": lambda i: librosa_log_mel(at_model_rate[i], params),
            "from_waveform": lambda i: from_waveform(waveform=tf.constant(waveforms[i][None])),
            "numpy_log_mel_then_serving_default": lambda i: predict_track(
                serving_default, features.segment(features.log_mel(at_model_rate[i], params), params)),
            "serving_default_only": lambda i: predict_track(serving_default, segments[i]),
        }
        speeds, cpu_speeds = {}, {}
        for name, run_one in paths.items():
            for i in range(len(waveforms)):   # warm-up: traces, caches, lazy imports
                run_one(i)
            cpu_started = time.process_time()
            with timed() as watch:
                for _ in range(args.repeats):
                    for i in range(len(waveforms)):
                        run_one(i)
            speeds[name] = args.repeats * audio_seconds / watch.seconds
            # Audio seconds per CPU-second of this process (all its threads): what the path
            # costs whatever else runs on the machine; on N free cores wall speed is at most N x it.
            cpu_speeds[name] = args.repeats * audio_seconds / (time.process_time() - cpu_started)
            print(f"{name}: {speeds[name]:.0f}x real time ({cpu_speeds[name]:.0f}x per CPU-second)",
                  file=sys.stderr, flush=True)

    target = TARGETS[frontend]
    reference = speeds["reference_librosa_log_mel"]
    payload = {
        "data": os.path.abspath(args.data) if args.data else f"synthetic {args.seconds} s clips",
        "clips": len(waveforms), "audio_seconds": audio_seconds, "repeats": args.repeats,
        "frontend": frontend, "feature_params": params.to_dict(),
        "model": args.saved_model or (f"untrained stand-in, {frontend} front end"
                                      + (f", bench_genre_gtzan model {args.config}" if args.config
                                         else f", architecture {args.architecture}"
                                         if frontend == "log_mel" else ", default clip head")),
        "x_real_time": speeds,
        "x_real_time_per_cpu_second": cpu_speeds,
        "ratio_to_reference": {name: speed / reference for name, speed in speeds.items()},
        "target_x_real_time": target,
        "target_met": {name: speed >= target for name, speed in speeds.items()},
    }
    result = write_result(args.out, NAME, payload)
    print(f"{NAME}: from_waveform {speeds['from_waveform']:.0f}x real time "
          f"({cpu_speeds['from_waveform']:.0f}x per CPU-second), numpy log-mel + "
          f"serving_default {speeds['numpy_log_mel_then_serving_default']:.0f}x, serving_default on "
          f"segments {speeds['serving_default_only']:.0f}x (target {target:.0f}x); reference librosa "
          f"log-mel {reference:.0f}x; ratio from_waveform/reference "
          f"{speeds['from_waveform'] / reference:.2f}; {payload['model']}; "
          f"{short_machine(result['machine'])}, load {result['machine']['load_average_1_5_15']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
