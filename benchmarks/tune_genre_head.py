"""Design and hyperparameter choices for the pretrained-front-end genre head, on the tuning clips only.

Usage (from the repository root)::

    .venv/bin/python benchmarks/tune_genre_head.py --data ../shared/data/gtzan_dev
    .venv/bin/python benchmarks/tune_genre_head.py --data ../shared/data/gtzan_dev \\
        --candidates gru,none --seeds 0,1,2

Only the tuning part of ``bench_genre_gtzan.tuning_check_split`` is ever
read (40 of GTZAN dev's 60 clips); the check part is left for the one final
score. Inside the tuning clips: per genre, the clips sorted by number are
cut into ``--folds`` contiguous blocks (fold ``i`` tests on block ``i`` of
every genre; neighbouring clip numbers, often one artist, stay together).
The musicnn patch embeddings are computed once, with the pipeline's own
front-end code (ingestion's log-mel, then the frozen network), and cached in
``--cache``; every candidate head trains with the trainer's own ``fit_head``
on them (no validation split: early stopping watches the training loss, as
in the GTZAN benchmark) and is scored per clip. Two references on the same
folds: a standardised logistic regression on the clips' embedding mean and
standard deviation (the issue's recipe) and the classical MFCC baseline.
Writes JSON to ``--out`` and prints one summary line.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench_genre_gtzan import list_clips, tuning_check_split  # noqa: E402  (run as a script)
from common import short_machine, write_result  # noqa: E402

NAME = "genre_head_tuning"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "benchmarks", "results", "genre_head_tuning.json")

# Candidate heads: overrides of PretrainedHParams' defaults (the defaults then were those of
# "default"; after these rounds they became "lstm_lr3"'s). Round 1 (2 inner folds, seeds 0-1):
# default, none, none_lr3, gru_lr3; round 2 (2 folds, seeds 0-2): the first block below;
# round 3 (4 folds, seeds 0-2): the second; round 4 (4 folds, seeds 0-2): the ensembles;
# round 5 (4 and 2 folds, seeds 0-2): the linear probe blends; round 6: the probe's features.
# Results: benchmarks/results/genre_head_tuning_round*.json.


def _head(recurrent: str, learning_rate: float = 3e-3, **overrides: Any) -> dict[str, Any]:
    # Rounds 1-4 ran before the linear probe existed: no probe unless a candidate asks for one.
    return {"recurrent": recurrent, "learning_rate": learning_rate, "linear_share": 0.0, **overrides}


CANDIDATES: dict[str, dict[str, Any]] = {
    "default": _head("gru", 1e-3),
    "none": _head("none", 1e-3),
    "none_lr3": _head("none"),
    "none_lr3_d2": _head("none", dropout=0.2),
    "none_lr3_e200": _head("none", epochs=200),
    "none_lr3_w128": _head("none", embedding_dim=128),
    "none_lr3_ls0": _head("none", label_smoothing=0.0),
    "none_lr1e2": _head("none", 1e-2),
    "gru_lr3": _head("gru"),
    "gru_lr3_e200": _head("gru", epochs=200),
    "gru_lr3_drop": _head("gru", recurrent_path_dropout=0.5),
    "gru_lr3_drop8": _head("gru", recurrent_path_dropout=0.8),
    "gru_lr3_crop": _head("gru", crop_min_patches=4),
    "gru8_lr3": _head("gru", recurrent_units=8),
    "lstm_lr3": _head("lstm"),
    "bigru_lr3": _head("gru", bidirectional=True),
    "finetune_lr3": _head("gru", finetune_penultimate=True),
    # Round 3 (4 inner folds): label smoothing off, with each recurrent path.
    "lstm_lr3_ls0": _head("lstm", label_smoothing=0.0),
    "gru_lr3_ls0": _head("gru", label_smoothing=0.0),
    "none_lr3_ls0_wd0": _head("none", label_smoothing=0.0, weight_decay=0.0),
    "lstm_lr3_ls0_e150": _head("lstm", label_smoothing=0.0, epochs=150),
    "none_lr3_ls0_d3": _head("none", label_smoothing=0.0, dropout=0.3),
    "bilstm_lr3_ls0": _head("lstm", bidirectional=True, label_smoothing=0.0),
    # Round 4 (4 inner folds): seed ensembles, ``ensemble`` heads of different seeds whose
    # probabilities are averaged, against the seed spread of a single head.
    "lstm_lr3_x3": _head("lstm", ensemble=3),
    "lstm_lr3_x5": _head("lstm", ensemble=5),
    "gru_lr3_ls0_x3": _head("gru", label_smoothing=0.0, ensemble=3),
    # Round 5 (4 and 2 inner folds): the head's probabilities averaged with a linear probe's
    # (a logistic regression on the statistics, which has one optimum whatever the seed).
    "lstm_lr3_lin30": _head("lstm", linear_share=0.3, probe_features="embedding"),
    "lstm_lr3_lin50": _head("lstm", linear_share=0.5, probe_features="embedding"),
    "lstm_lr3_lin70": _head("lstm", linear_share=0.7, probe_features="embedding"),
    # Round 6 (4 and 2 inner folds): the probe reads musicnn's wider pooled features (the 1506
    # max and mean over each patch's frames, before the penultimate block), alone or beside the
    # embeddings; blended here, outside the head (``probe_reads``), at the same share.
    "lstm_lr3_lin50_pooled": _head("lstm", linear_share=0.5, probe_reads="pooled"),
    "lstm_lr3_lin50_both": _head("lstm", linear_share=0.5, probe_reads="both"),
    # The last one as the product builds it (the probe inside the head): the default since.
    "lstm_lr3_lin50_both_head": _head("lstm", linear_share=0.5, probe_features="embedding_and_pooled"),
}
ENSEMBLE_SEED_STRIDE = 1000  # member j of seed s trains with seed s * stride + j


def tuning_features(data: str, cache: str) -> dict[str, Any]:
    """Patch embeddings of the tuning clips (cached), with genres and clip numbers."""
    listed = list_clips(data)
    tuning, _check = tuning_check_split(listed)
    names = [os.path.basename(listed[i][0]) for i in tuning]
    if os.path.exists(cache):
        stored = np.load(cache, allow_pickle=False)
        if list(stored["names"]) == names:
            return {key: stored[key] for key in stored.files}
    import tensorflow as tf

    from musicrec.models import audio_files, features, genre_baseline
    from musicrec.models.genre.pretrained import PretrainedHParams
    from musicrec.models.genre.train_pretrained import frontend_models

    params = features.AudioFeatureParams()   # the classical baseline's own features (22 050 Hz)
    from musicrec.models.genre.musicnn import FEATURE_PARAMS

    embedder, _ = frontend_models(PretrainedHParams(linear_share=0.0))   # the 200-wide embeddings
    pooler, _ = frontend_models(PretrainedHParams(finetune_penultimate=True))
    embeddings, pooled, baseline, lengths = [], [], [], []
    for count, index in enumerate(tuning, start=1):
        path = listed[index][0]
        segments = features.segment(features.log_mel(audio_files.load_audio(path, FEATURE_PARAMS),
                                                     FEATURE_PARAMS), FEATURE_PARAMS)
        embeddings.append(np.asarray(embedder(tf.constant(segments))))
        pooled.append(np.asarray(pooler(tf.constant(segments))))
        baseline.append(genre_baseline.clip_vector(genre_baseline.frame_features_from_waveform(
            audio_files.load_audio(path, params), params)))
        lengths.append(segments.shape[0])
        print(f"\rtuning clips {count}/{len(tuning)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    offsets = np.cumsum([0, *lengths])
    result = {"names": np.array(names), "genres": np.array([listed[i][1] for i in tuning]),
              "numbers": np.array([listed[i][2] for i in tuning]), "offsets": offsets,
              "embeddings": np.concatenate(embeddings), "pooled": np.concatenate(pooled),
              "baseline": np.stack(baseline)}
    np.savez(cache, **result)
    return result


def inner_folds(genres: np.ndarray, numbers: np.ndarray, k: int) -> list[list[int]]:
    """Test indices of each inner fold: per genre, contiguous blocks of clip numbers."""
    folds: list[list[int]] = [[] for _ in range(k)]
    for genre in sorted(set(genres)):
        members = sorted(np.flatnonzero(genres == genre), key=lambda i: numbers[i])
        for fold, block in enumerate(np.array_split(np.array(members), k)):
            folds[fold].extend(int(i) for i in block)
    return folds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--cache", default="/tmp/musicrec_genre_tuning_features.npz",
                        help="where the tuning clips' embeddings are kept between runs")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    names = [name for name in args.candidates.split(",") if name]
    seeds = [int(seed) for seed in args.seeds.split(",")]

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from musicrec.models.genre.pretrained import PretrainedHParams, clip_statistics
    from musicrec.models.genre.train_pretrained import fit_head
    from musicrec.models.genre_baseline import ClassicalGenreBaseline

    data = tuning_features(args.data, args.cache)
    genres, numbers, offsets = data["genres"], data["numbers"], data["offsets"]
    labels = sorted(set(genres))
    y = np.array([labels.index(g) for g in genres])
    clips = {kind: [data[kind][offsets[i]:offsets[i + 1]] for i in range(len(genres))]
             for kind in ("embeddings", "pooled")}
    folds = inner_folds(genres, numbers, args.folds)
    started = time.perf_counter()

    def score(predict) -> list[float]:
        accuracies = []
        for test in folds:
            train = [i for i in range(len(y)) if i not in set(test)]
            accuracies.append(float(np.mean(predict(train, test) == y[test])))
        return accuracies

    def logistic(train, test):
        statistics = clip_statistics(clips["embeddings"])
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        return model.fit(statistics[train], y[train]).predict(statistics[test])

    def probe_probabilities(train, test, reads):
        """The linear probe of the head, on other features: standardised as the head does."""
        from musicrec.models.genre.linear_probe import fit_linear_probe
        from musicrec.models.genre.pretrained import fixed_normalization

        parts = ["embeddings", "pooled"] if reads == "both" else [reads]
        statistics = np.concatenate([clip_statistics(clips[part]) for part in parts], axis=1)
        normalise = fixed_normalization(statistics[train], "statistics")
        kernel, bias = fit_linear_probe(np.asarray(normalise(statistics[train])), y[train], len(labels))
        logits = np.asarray(normalise(statistics[test])) @ kernel + bias
        logits = np.exp(logits - logits.max(axis=1, keepdims=True))
        return logits / logits.sum(axis=1, keepdims=True)

    def classical(train, test):
        return ClassicalGenreBaseline().fit(data["baseline"][train], y[train]).predict(
            data["baseline"][test])

    summary: dict[str, Any] = {"embedding_statistics_logistic": score(logistic),
                               "classical_baseline": score(classical)}
    for name in names:
        overrides = dict(CANDIDATES[name])
        members = int(overrides.pop("ensemble", 1))
        probe_reads = overrides.pop("probe_reads", None)
        outside_share = overrides.pop("linear_share", 0.0) if probe_reads else 0.0
        hparams = PretrainedHParams.from_dict(overrides)
        per_seed = []
        for seed in seeds:
            def head(train, test, seed=seed):
                from musicrec.models.genre.train_pretrained import frontend_models

                kind = "pooled" if hparams.reads_pooled else "embeddings"
                penultimate = frontend_models(hparams)[1] if hparams.reads_pooled else None
                from musicrec.models.genre.pretrained import pad_clips

                padded, mask = pad_clips([clips[kind][i] for i in test])
                probabilities = 0.0
                for member in range(members):
                    member_seed = seed if members == 1 else seed * ENSEMBLE_SEED_STRIDE + member
                    model, _history, _monitor = fit_head([clips[kind][i] for i in train], y[train],
                                                         len(labels), hparams, seed=member_seed,
                                                         penultimate=penultimate)
                    probabilities = probabilities + np.asarray(
                        model({"patch_features": padded, "patch_mask": mask}, training=False)[0])
                if probe_reads:
                    probabilities = ((1 - outside_share) * probabilities / members
                                     + outside_share * probe_probabilities(train, test, probe_reads))
                return probabilities.argmax(axis=1)

            per_seed.append(score(head))
        summary[name] = {"per_seed_folds": per_seed,
                         "mean": float(np.mean(per_seed)),
                         "seed_means": [float(np.mean(s)) for s in per_seed]}
        print(f"{name}: {summary[name]['mean']:.3f} (seeds {summary[name]['seed_means']})",
              file=sys.stderr, flush=True)
    payload = {"data": os.path.abspath(args.data), "part": "tuning clips only",
               "clips": len(y), "folds": args.folds, "seeds": seeds,
               "candidates": {name: CANDIDATES[name] for name in names}, "summary": summary,
               "wall_seconds": time.perf_counter() - started}
    result = write_result(args.out, NAME, payload)
    parts = ", ".join(f"{name} {summary[name]['mean']:.3f}" for name in names)
    print(f"{NAME}: {len(y)} tuning clips, {args.folds} inner folds, seeds {seeds}: {parts}; "
          f"embedding-statistics logistic {np.mean(summary['embedding_statistics_logistic']):.3f}, "
          f"classical {np.mean(summary['classical_baseline']):.3f}; "
          f"{short_machine(result['machine'])}, load {result['machine']['load_average_1_5_15']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
