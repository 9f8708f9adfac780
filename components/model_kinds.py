"""The two model kinds musicrec trains, and what each stage needs to know of them.

Trainer, Evaluator and Pusher are generic; this table ties a kind to its
examples type, its model code in ``musicrec.models`` and its blessing rule.
"""
from __future__ import annotations

import dataclasses
import glob
import importlib
import os
from typing import Any, Callable, Mapping

from musicrec.components.base import Artifact

# Blessing thresholds for an evaluator whose params leave one out (the pipeline passes its
# config's genre_model and next_track_model settings).
DEFAULT_MIN_ACCURACY_OVER_CHANCE = 1.5
DEFAULT_MUST_BEAT_BASELINES = True
DEFAULT_BASELINE_TOLERANCE_SHARE = 0.0
DEFAULT_BASELINE_METRICS = ("hr@20", "mrr@20")


@dataclasses.dataclass(frozen=True)
class ModelKind:
    name: str
    examples_type: str
    train_module: str
    evaluate_module: str
    # (metrics, params) -> (blessed, reason)
    blessing_rule: Callable[[Mapping[str, Any], Mapping[str, Any]], tuple[bool, str]]
    # The metric a candidate is compared on against the previous blessed
    # model (higher is better): its name and how to read it from metrics.
    comparison_metric: str = ""
    comparison_value: Callable[[Mapping[str, Any]], float] = lambda metrics: float("nan")

    def run_fn(self) -> Callable:
        return importlib.import_module(self.train_module).run_fn

    def evaluate_fn(self) -> Callable:
        return importlib.import_module(self.evaluate_module).evaluate


def _bless_genre(metrics: Mapping[str, Any], params: Mapping[str, Any]) -> tuple[bool, str]:
    factor = float(params.get("min_accuracy_over_chance", DEFAULT_MIN_ACCURACY_OVER_CHANCE))
    accuracy, chance = metrics["track_accuracy"], metrics["chance_accuracy"]
    needed = min(1.0, factor * chance)
    if accuracy >= needed:
        return True, f"track accuracy {accuracy:.3f} >= {factor} x chance ({needed:.3f})"
    return False, f"track accuracy {accuracy:.3f} < {factor} x chance ({needed:.3f})"


def _bless_next_track(metrics: Mapping[str, Any], params: Mapping[str, Any]) -> tuple[bool, str]:
    """At least as good as the best simple baseline on each of ``baseline_metrics``.

    ``baseline_tolerance_share`` lets the candidate fall that share below the
    best baseline's figure (0.02: 2 %); the reason names the baseline that
    beat it and by how much.
    """
    if not params.get("must_beat_baselines", DEFAULT_MUST_BEAT_BASELINES) or not metrics["baselines"]:
        return True, "no baseline check configured"
    tolerance = float(params.get("baseline_tolerance_share", DEFAULT_BASELINE_TOLERANCE_SHARE))
    verdicts, losses = [], []
    for metric in params.get("baseline_metrics", DEFAULT_BASELINE_METRICS):
        name = max(metrics["baselines"], key=lambda baseline: metrics["baselines"][baseline][metric])
        ours, theirs = metrics["model"][metric], metrics["baselines"][name][metric]
        change = (ours / theirs - 1.0) if theirs else float("inf")
        text = f"{metric.upper()} {ours:.4f} vs best baseline {name} {theirs:.4f} ({change:+.1%})"
        verdicts.append(text)
        if ours < theirs * (1.0 - tolerance):
            losses.append(text)
    if losses:
        return False, f"below the best baseline: {'; '.join(losses)} (tolerance {tolerance:.1%})"
    return True, f"at least as good as the best baselines: {'; '.join(verdicts)}"


KINDS: dict[str, ModelKind] = {
    "genre": ModelKind("genre", "AudioExamples", "musicrec.models.genre.train",
                       "musicrec.models.genre.evaluate", _bless_genre,
                       "track accuracy", lambda metrics: float(metrics["track_accuracy"])),
    "next_track": ModelKind("next_track", "Sessions", "musicrec.models.next_track.train",
                            "musicrec.models.next_track.evaluate", _bless_next_track,
                            "MRR@20", lambda metrics: float(metrics["model"]["mrr@20"])),
}


def compare_with_baseline(model_kind: ModelKind, candidate: Mapping[str, Any],
                          baseline: Mapping[str, Any], tolerance: float) -> tuple[bool, str, dict]:
    """Is the candidate not worse than the previous blessed model beyond ``tolerance``?

    Both metric dicts come from the same evaluation data. Returns
    ``(passed, reason, numbers)`` with ``numbers`` = ``{"metric", "candidate",
    "baseline", "tolerance"}`` for the run record.
    """
    ours, theirs = model_kind.comparison_value(candidate), model_kind.comparison_value(baseline)
    numbers = {"metric": model_kind.comparison_metric, "candidate": ours, "baseline": theirs,
               "tolerance": tolerance}
    name = model_kind.comparison_metric
    if ours >= theirs - tolerance:
        return True, f"{name} {ours:.4f} >= previous blessed model's {theirs:.4f} - {tolerance}", numbers
    return False, f"{name} {ours:.4f} < previous blessed model's {theirs:.4f} - {tolerance}", numbers


def kind(name: str) -> ModelKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model kind {name!r}; known: {sorted(KINDS)}") from None


def split_files(examples: Artifact, split: str) -> list[str]:
    """The GZIP TFRecord shards of one split of an examples artifact, sorted."""
    return sorted(glob.glob(os.path.join(examples.uri, f"Split-{split}", "*.tfrecord.gz")))
