"""Evaluator: scores the exported SavedModel on the test split and decides blessing.

Inputs: ``examples`` (the same artifact the model trained on), ``model`` and,
optionally, ``baseline_model``: the latest blessed model of the same kind,
which the runner resolves from ML Metadata.
Outputs: ``evaluation`` (ModelEvaluation): ``metrics.json`` with the model's
and the baselines' metrics and the blessing decision with its reason; for
genre also the classical baseline fitted and scored on the same split, side
by side with the model (``classical_baseline``, ``side_by_side``),
``confusion_matrix.png`` / ``baseline_confusion_matrix.png``, and
``report.html``, a page showing both side by side with those plots.

Blessing: the kind's fixed thresholds (beat chance / the popularity
baseline) and, when a previous blessed model exists, the candidate's
comparison metric (track accuracy for genre, MRR@20 for next-track) must not
be below the previous model's, measured on the same test data, by more than
``baseline_tolerance``. A previous genre model that reads other features than
the examples (another front end) cannot be measured on them: the thresholds
then decide alone, and ``metrics.json`` says why (``baseline_model.not_compared``).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

from musicrec.atomic import write_text_atomic
from musicrec.components.base import Artifact, ComponentSpec, write_json_atomic
from musicrec.components.model_kinds import ModelKind, compare_with_baseline, kind, split_files

logger = logging.getLogger(__name__)


def spec(model_kind: str) -> ComponentSpec:
    return ComponentSpec(name=f"evaluator[{model_kind}]",
                         inputs={"examples": kind(model_kind).examples_type, "model": "Model",
                                 "baseline_model": "Model"},
                         outputs={"evaluation": "ModelEvaluation"}, executor=run,
                         optional_inputs=frozenset({"baseline_model"}))


def run(inputs: Mapping[str, Artifact], outputs: Mapping[str, Artifact],
        params: Mapping[str, Any]) -> None:
    """Evaluates.

    Params: ``kind``, the kind's blessing thresholds, ``baseline_tolerance``
    (absolute, in the comparison metric's units; default 0) and, for
    next-track, ``evaluation_max_sessions`` (0: every test session).
    """
    model_kind = kind(params["kind"])
    examples, model = inputs["examples"], inputs["model"]
    max_sessions = int(params.get("evaluation_max_sessions", 0))
    metrics = evaluate_model(model_kind, model, examples, outputs["evaluation"].uri,
                             max_sessions=max_sessions)
    blessed, reason = model_kind.blessing_rule(metrics, params)
    report: dict[str, Any] = {"kind": model_kind.name, "metrics": metrics}
    if model_kind.name == "genre":
        report.update(genre_classical_baseline(examples, metrics, outputs["evaluation"].uri))
        write_genre_report(outputs["evaluation"].uri, metrics, report.get("classical_baseline"))
    blessing: dict[str, Any] = {"blessed": blessed, "reason": reason,
                                "rule": "thresholds", "candidate_model": model.uri}
    baseline = inputs.get("baseline_model")
    not_comparable = baseline is not None and incomparable_baseline(model_kind, baseline, examples)
    if not_comparable:
        # A model that reads other features cannot be scored on these examples (a switch of
        # genre_model.frontend, say): the thresholds alone decide, and the record says why.
        logger.warning("previous blessed %s model not compared: %s", model_kind.name, not_comparable)
        report["baseline_model"] = {"uri": baseline.uri, "not_compared": not_comparable}
        blessing.update(reason=f"{reason}; previous blessed model not compared: {not_comparable}")
        baseline = None
    if baseline is not None:
        baseline_metrics = evaluate_model(model_kind, baseline, examples, max_sessions=max_sessions)
        passed, comparison, numbers = compare_with_baseline(
            model_kind, metrics, baseline_metrics, float(params.get("baseline_tolerance", 0.0)))
        report["baseline_model"] = {"uri": baseline.uri, "metrics": baseline_metrics}
        blessed = blessed and passed
        blessing.update(blessed=blessed, rule="thresholds and previous blessed model",
                        reason=f"{reason}; {comparison}", comparison=numbers,
                        baseline_model=baseline.uri)
    report["blessing"] = blessing
    write_json_atomic(outputs["evaluation"].path("metrics.json"), report)
    outputs["evaluation"].properties.update(
        kind=model_kind.name, blessed=blessing["blessed"], reason=blessing["reason"],
        metric=model_kind.comparison_metric, value=model_kind.comparison_value(metrics),
        **({"baseline_value": blessing["comparison"]["baseline"], "baseline_model": baseline.uri}
           if baseline is not None else {}))


def incomparable_baseline(model_kind: ModelKind, baseline: Artifact, examples: Artifact) -> str:
    """Why the previous blessed model cannot be scored on ``examples``; ``""`` when it can.

    A genre model reads the features stored with it (``assets.extra``); they
    must be those the examples were made with (their manifest).
    """
    if model_kind.name != "genre":
        return ""
    from musicrec.models.genre.signatures import ModelFeaturesMissing, read_model_features

    try:
        frontend, params = read_model_features(os.path.join(baseline.uri, "serving"))
    except ModelFeaturesMissing:
        return "it predates the feature parameters stored with genre models"
    with open(os.path.join(examples.uri, "manifest.json"), encoding="utf-8") as handle:
        made_with = json.load(handle).get("feature_params") or {}
    if params.to_dict() != made_with:
        return (f"it reads other features ({frontend} front end, {params.n_mels} mel bands at "
                f"{params.sample_rate} Hz) than these examples were made with")
    return ""


def evaluate_model(model_kind: ModelKind, model: Artifact, examples: Artifact,
                   output_dir: str | None = None, max_sessions: int = 0) -> dict[str, Any]:
    """The kind's offline metrics of ``model``'s SavedModel on ``examples``' test split.

    ``output_dir``, when given, receives the kind's plots (PNG) next to
    ``metrics.json``; the previous blessed model's evaluation writes none.
    ``max_sessions`` (next-track only): score a stable sample of at most that
    many test sessions, the same for every model (0: all).
    """
    test_files = split_files(examples, "test")
    if not test_files:
        section = "playlogs" if model_kind.name == "next_track" else "audio"
        raise ValueError(f"the test split is empty (no shards under {examples.uri}/Split-test): give "
                         f"more input, or raise {section}.test_fraction")
    saved_model_dir = os.path.join(model.uri, "serving")
    evaluate = model_kind.evaluate_fn()
    if model_kind.name == "next_track":
        from musicrec.models.next_track.evaluate import NoTestCasesError

        try:
            metrics = evaluate(saved_model_dir, test_files, split_files(examples, "train"), examples.uri,
                               output_dir=output_dir, max_sessions=max_sessions,
                               history_files=[path for split in ("train", "eval", "test")
                                              for path in split_files(examples, split)])
        except NoTestCasesError as exc:
            raise ValueError(f"{exc}. The test split is the last playlogs.test_fraction of each "
                             f"listener's time span: give listeners more plays over a longer time, "
                             f"or raise playlogs.test_fraction") from None
        # A cold-start model (components/cold_start.py) also carries held-out cold-track cases.
        from musicrec.models.next_track.cold_start import evaluate_extended

        cold_start = evaluate_extended(model.uri, metrics["model"])
        return {**metrics, "cold_start": cold_start} if cold_start else metrics
    return evaluate(saved_model_dir, test_files, examples.uri, output_dir=output_dir)


# Scores shown side by side for the Keras genre model and the classical baseline.
SIDE_BY_SIDE = ("track_accuracy", "macro_f1")


def genre_classical_baseline(examples: Artifact, metrics: Mapping[str, Any],
                             output_dir: str) -> dict[str, Any]:
    """The classical genre baseline on the same split, and the side-by-side table.

    It is fitted on the examples' train split and scored on their test split
    (the split the Keras model is scored on), from the clip vectors ingestion
    computed from the audio, or the log-mel segments for examples without
    them (see ``musicrec.models.genre.evaluate.evaluate_classical_baseline``).

    Returns:
        ``{"classical_baseline": metrics, "side_by_side": {score: {"model":
        x, "classical_baseline": y}}}`` for ``metrics.json``.
    """
    from musicrec.models.features import AudioFeatureParams
    from musicrec.models.genre.evaluate import evaluate_classical_baseline

    try:
        with open(os.path.join(examples.uri, "manifest.json"), encoding="utf-8") as handle:
            feature_params = json.load(handle).get("feature_params") or {}
        baseline = evaluate_classical_baseline(
            split_files(examples, "train"), split_files(examples, "test"), examples.uri,
            AudioFeatureParams.from_dict(feature_params), output_dir=output_dir)
    except (OSError, ValueError) as exc:
        # The baseline informs people and never blocks blessing: a train split of
        # one genre, say, leaves the model's own evaluation standing, with the reason.
        logger.warning("genre classical baseline not computed: %s", exc)
        return {"classical_baseline": {"error": f"{type(exc).__name__}: {exc}"}}
    return {"classical_baseline": baseline,
            "side_by_side": {score: {"model": metrics[score], "classical_baseline": baseline[score]}
                             for score in SIDE_BY_SIDE}}


def write_genre_report(output_dir: str, metrics: Mapping[str, Any],
                       baseline: Mapping[str, Any] | None) -> str:
    """Writes ``<output_dir>/report.html`` (model and classical baseline side by side); returns its path."""
    from musicrec.models.genre.evaluate import BASELINE_CONFUSION_MATRIX_FILE, CONFUSION_MATRIX_FILE
    from musicrec.models.genre.report import REPORT_FILE, render_evaluation_report

    images = {caption: name for caption, name in (
        ("Keras model, track level", CONFUSION_MATRIX_FILE),
        ("classical baseline, track level", BASELINE_CONFUSION_MATRIX_FILE))
        if os.path.exists(os.path.join(output_dir, name))}
    path = os.path.join(output_dir, REPORT_FILE)
    write_text_atomic(path, render_evaluation_report(metrics, baseline, images))
    return path


def is_blessed(evaluation: Artifact) -> bool:
    return bool(evaluation.properties.get("blessed"))
