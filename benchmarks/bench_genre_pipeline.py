"""Genre accuracy of the DEFAULT configuration through the whole pipeline, on real GTZAN clips.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_genre_pipeline.py --data ../shared/data/gtzan_dev --protocol cv \\
        --seeds 0,1,2
    .venv/bin/python benchmarks/bench_genre_pipeline.py --data ../shared/data/gtzan_dev --protocol check
    .venv/bin/python benchmarks/bench_genre_pipeline.py --data ../shared/data/gtzan_dev --protocol run

Every run is ``musicrec run`` as a user runs it: ``make_config({"seed": s})``
(nothing else changed) and ``create_pipeline`` + ``LocalRunner`` in a fresh
workdir, so ingestion (Beam), the trainer, the evaluator (with the classical
baseline fitted and scored on the same split, from the clip vectors ingestion
stored) and the pusher all run. The split is pinned with the metadata CSV's
``split`` column (docs/ingestion.md):

- ``cv``: issue 18's 3-fold cross-validation, fixed before any run: per
  genre, the clips sorted by number are cut into 3 contiguous blocks
  (``{0, 1}, {2, 3}, {4, 5}`` by position); fold ``i`` tests on block ``i``
  of every genre and trains on the other two (40 clips), no validation
  split. One pipeline run per fold and seed.
- ``check``: train on the tuning part of ``bench_genre_gtzan.tuning_check_split``
  (40 clips), score on its check part (20 clips), once per seed. The head's
  design and hyperparameters were chosen on the tuning part alone
  (``tune_genre_head.py``).
- ``run``: the pipeline on the folder as given (the ExampleGen's hash split,
  10 % eval, 10 % test): how long ``musicrec run --audio gtzan_dev`` takes,
  stage by stage.

References measured in the same process: the classical baseline on the
audio itself (librosa MFCC(20), centroid, contrast at 22 050 Hz: the
project's reference baseline) on the same folds/split, and for ``run`` the
audio's duration (training speed as a multiple of real time) and that
baseline's feature extraction and fit on the same clips.

GTZAN's neighbouring clip numbers often share an artist: contiguous folds
keep most of them together, the hash split of ``check`` does not, so its
figure is optimistic about unseen artists.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench_genre_gtzan import clip_id, list_clips, make_folds, tuning_check_split  # noqa: E402
from common import short_machine, timed, write_result  # noqa: E402

NAME = "genre_pipeline"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "benchmarks", "results", "genre_pipeline_{protocol}.json")
TARGET_TRAIN_SECONDS = 300.0


class Listed:
    """A clip as ``make_folds`` wants it: genre and clip number."""

    def __init__(self, path: str, genre: str, number: int):
        self.path, self.genre, self.number = path, genre, number


def write_metadata(path: str, clips: list[Listed], splits: dict[int, str]) -> str:
    """A metadata CSV (``path, genre, split``) of the clips in ``splits``."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "genre", "split"])
        for index, split in sorted(splits.items()):
            # Absolute: the ExampleGen reads relative paths as relative to the CSV's folder.
            writer.writerow([os.path.abspath(clips[index].path), clips[index].genre, split])
    return path


def audio_baseline(clips: list[Listed]) -> tuple[np.ndarray, float]:
    """Classical baseline clip vectors from the audio (22 050 Hz librosa features), and the seconds."""
    from musicrec.models import audio_files, features, genre_baseline

    params = features.AudioFeatureParams()
    with timed() as watch:
        vectors = np.stack([genre_baseline.clip_vector(genre_baseline.frame_features_from_waveform(
            audio_files.load_audio(clip.path, params), params)) for clip in clips])
    return vectors, watch.seconds


def baseline_predictions(vectors: np.ndarray, clips: list[Listed], train: list[int],
                         test: list[int], labels: list[str]) -> dict[str, str]:
    from musicrec.models.genre_baseline import ClassicalGenreBaseline

    model = ClassicalGenreBaseline().fit(vectors[train], [labels.index(clips[i].genre) for i in train])
    return {clip_id(clips[i]): labels[int(p)] for i, p in zip(test, model.predict(vectors[test]))}


def run_pipeline(workdir: str, seed: int, metadata_csv: str | None = None,
                 audio_dir: str | None = None) -> tuple[Any, float]:
    from musicrec.pipeline.config import make_config
    from musicrec.pipeline.pipeline import create_pipeline
    from musicrec.pipeline.runner import LocalRunner

    config = make_config({"seed": seed})   # the default configuration
    with timed() as watch:
        result = LocalRunner().run(create_pipeline(config, workdir, audio_dir=audio_dir,
                                                   metadata_csv=metadata_csv))
    return result, watch.seconds


def stage_seconds(result) -> dict[str, float]:
    with open(os.path.join(result.run_dir, "run.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    return {name: component["seconds"] for name, component in record["components"].items()}


def scored_run(workdir: str, seed: int, metadata_csv: str, truth: dict[str, str]) -> dict[str, Any]:
    """One pipeline run; the evaluator's scores, each test clip's prediction, the stage times."""
    from musicrec.models.genre.evaluate import evaluate

    result, seconds = run_pipeline(workdir, seed, metadata_csv=metadata_csv)
    with open(result.artifact("evaluator_genre", "evaluation").path("metrics.json"),
              encoding="utf-8") as handle:
        report = json.load(handle)
    examples = result.artifact("audio_example_gen", "examples").uri
    test_files = sorted(os.path.join(examples, "Split-test", name)
                        for name in os.listdir(os.path.join(examples, "Split-test")))
    # The evaluator keeps no per-clip predictions; the same evaluate() gives them (same model).
    model = result.artifact("trainer_genre", "model").uri
    predictions = evaluate(os.path.join(model, "serving"), test_files, examples,
                           with_track_predictions=True)["track_predictions"]
    with open(os.path.join(model, "train_metrics.json"), encoding="utf-8") as handle:
        train = json.load(handle)
    assert set(predictions) == set(truth), "the evaluator scored other clips than the split's"
    return {
        "track_accuracy": report["metrics"]["track_accuracy"],
        "segment_accuracy": report["metrics"]["segment_accuracy"],
        "macro_f1": report["metrics"]["macro_f1"],
        "evaluator_classical_baseline": report["classical_baseline"].get("track_accuracy"),
        "track_predictions": predictions,
        "pipeline_seconds": seconds, "stage_seconds": stage_seconds(result),
        "front_end_seconds": train["feature_cache_seconds"], "head_fit_seconds": train["fit_seconds"],
        "epochs_run": train["epochs_run"], "hparams": train["hparams"], "frontend": train["frontend"],
    }


def accuracy(predictions: dict[str, str], truth: dict[str, str]) -> float:
    return float(np.mean([predictions[clip] == genre for clip, genre in truth.items()]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder-per-genre clips, e.g. ../shared/data/gtzan_dev")
    parser.add_argument("--protocol", choices=["cv", "check", "run"], required=True)
    parser.add_argument("--seeds", default="0", help="comma-separated config seeds")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    out = args.out or DEFAULT_OUT.format(protocol=args.protocol)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("apache_beam", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    listed = list_clips(args.data)
    clips = [Listed(*entry) for entry in listed]
    labels = sorted({clip.genre for clip in clips})
    started = time.perf_counter()
    vectors, baseline_feature_seconds = audio_baseline(clips)
    payload: dict[str, Any] = {"data": os.path.abspath(args.data), "clips": len(clips),
                               "protocol": args.protocol, "seeds": seeds, "config": "defaults"}

    if args.protocol == "run":
        with tempfile.TemporaryDirectory(prefix="bench-genre-pipeline-") as work:
            result, seconds = run_pipeline(work, seeds[0], audio_dir=args.data)
            stages = stage_seconds(result)
            with open(os.path.join(result.artifact("trainer_genre", "model").uri,
                                   "train_metrics.json"), encoding="utf-8") as handle:
                train = json.load(handle)
            with open(result.artifact("evaluator_genre", "evaluation").path("metrics.json"),
                      encoding="utf-8") as handle:
                report = json.load(handle)
        audio_seconds = 30.0 * len(clips)
        with timed() as fit_watch:
            from musicrec.models.genre_baseline import ClassicalGenreBaseline

            ClassicalGenreBaseline().fit(vectors, [labels.index(c.genre) for c in clips])
        trainer = stages["trainer_genre"]
        payload.update({
            "pipeline_seconds": seconds, "stage_seconds": stages,
            "trainer_seconds": trainer, "front_end_seconds": train["feature_cache_seconds"],
            "head_fit_seconds": train["fit_seconds"], "train_tracks": train["train_tracks"],
            "audio_seconds": audio_seconds,
            "trainer_x_real_time": audio_seconds / trainer,
            "reference_classical_baseline_seconds": baseline_feature_seconds + fit_watch.seconds,
            "trainer_over_reference": trainer / (baseline_feature_seconds + fit_watch.seconds),
            "target_train_seconds": TARGET_TRAIN_SECONDS, "target_met": trainer <= TARGET_TRAIN_SECONDS,
            "hash_split_test": {"n_tracks": report["metrics"]["n_tracks"],
                                "track_accuracy": report["metrics"]["track_accuracy"],
                                "classical_baseline": report["classical_baseline"].get("track_accuracy")},
        })
        result_json = write_result(out, NAME, payload)
        print(f"{NAME} run: musicrec run --audio {args.data} (defaults) {seconds:.0f} s, trainer "
              f"{trainer:.0f} s (front end {train['feature_cache_seconds']:.0f} s, head "
              f"{train['fit_seconds']:.0f} s; target {TARGET_TRAIN_SECONDS:.0f} s) = "
              f"{audio_seconds / trainer:.0f}x real time over {audio_seconds:.0f} s of audio; "
              f"reference: classical baseline features + fit {payload['reference_classical_baseline_seconds']:.0f} s "
              f"(trainer/reference {payload['trainer_over_reference']:.2f}); "
              f"{short_machine(result_json['machine'])}, load {result_json['machine']['load_average_1_5_15']}")
        return 0

    if args.protocol == "cv":
        parts = [(f"fold{fold}", [i for i in range(len(clips)) if i not in set(test)], test)
                 for fold, test in enumerate(make_folds(clips, args.folds))]
    else:
        tuning, check = tuning_check_split(listed)
        parts = [("check", tuning, check)]
    runs: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        for name, train, test in parts:
            truth = {clip_id(clips[i]): clips[i].genre for i in test}
            baseline = baseline_predictions(vectors, clips, train, test, labels)
            with tempfile.TemporaryDirectory(prefix="bench-genre-pipeline-") as work:
                csv_path = write_metadata(os.path.join(work, "clips.csv"), clips,
                                          {**{i: "train" for i in train}, **{i: "test" for i in test}})
                scored = scored_run(os.path.join(work, "run"), seed, csv_path, truth)
            scored.update(truth=truth, train_clips=len(train), test_clips=len(test),
                          baseline_audio={"track_accuracy": accuracy(baseline, truth),
                                          "track_predictions": baseline})
            runs[f"seed{seed}/{name}"] = scored
            print(f"seed {seed} {name}: model {scored['track_accuracy']:.3f}, baseline (audio) "
                  f"{scored['baseline_audio']['track_accuracy']:.3f}, evaluator's baseline "
                  f"{scored['evaluator_classical_baseline']:.3f}, {scored['pipeline_seconds']:.0f} s",
                  file=sys.stderr, flush=True)
    summary: dict[str, Any] = {}
    for seed in seeds:
        mine = [runs[f"seed{seed}/{name}"] for name, _, _ in parts]
        summary[f"seed{seed}"] = {
            "per_part": {name: {"model": run["track_accuracy"],
                                "baseline_audio": run["baseline_audio"]["track_accuracy"],
                                "evaluator_classical_baseline": run["evaluator_classical_baseline"]}
                         for (name, _, _), run in zip(parts, mine)},
            "mean_model": float(np.mean([run["track_accuracy"] for run in mine])),
            "mean_baseline_audio": float(np.mean([run["baseline_audio"]["track_accuracy"]
                                                  for run in mine])),
            "mean_evaluator_classical_baseline": float(np.mean(
                [run["evaluator_classical_baseline"] for run in mine])),
            "above_both_baselines_on_every_part": all(
                run["track_accuracy"] > max(run["baseline_audio"]["track_accuracy"],
                                            run["evaluator_classical_baseline"]) for run in mine),
        }
    payload.update({"parts": {name: {"train_clips": len(train), "test_clips": len(test)}
                              for name, train, test in parts},
                    "runs": runs, "summary": summary, "wall_seconds": time.perf_counter() - started,
                    "artist_note": "GTZAN's neighbouring clip numbers often share an artist; "
                                   "contiguous folds keep most together, the tuning/check hash "
                                   "split does not"})
    result_json = write_result(out, NAME, payload)
    line = "; ".join(
        f"seed {seed}: " + " / ".join(f"{s['per_part'][name]['model']:.3f}" for name, _, _ in parts)
        + f" (mean {s['mean_model']:.3f}) vs baseline audio "
        + " / ".join(f"{s['per_part'][name]['baseline_audio']:.3f}" for name, _, _ in parts)
        + ", evaluator's " + " / ".join(
            f"{s['per_part'][name]['evaluator_classical_baseline']:.3f}" for name, _, _ in parts)
        for seed, s in ((seed, summary[f"seed{seed}"]) for seed in seeds))
    print(f"{NAME} {args.protocol} (default config, through the pipeline): {line}; "
          f"{short_machine(result_json['machine'])}, load {result_json['machine']['load_average_1_5_15']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
