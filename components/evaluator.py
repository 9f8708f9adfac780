"""Evaluator: scores the exported SavedModel on the test split and decides blessing.

Inputs: ``examples`` (the same artifact the model trained on), ``model`` and,
optionally, ``baseline_model``: the latest blessed model of the same kind,
which the runner resolves from ML Metadata.
Outputs: ``evaluation`` (ModelEvaluation): ``metrics.json`` with the model's
and the baselines' metrics and the blessing decision with its reason.

Blessing: the kind's fixed thresholds (beat chance / the popularity
baseline) and, when a previous blessed model exists, the candidate's
comparison metric (track accuracy for genre, MRR@20 for next-track) must not
be below the previous model's, measured on the same test data, by more than
``baseline_tolerance``.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from musicrec.components.base import Artifact, ComponentSpec, write_json_atomic
from musicrec.components.model_kinds import ModelKind, compare_with_baseline, kind, split_files


def spec(model_kind: str) -> ComponentSpec:
    return ComponentSpec(name=f"evaluator[{model_kind}]",
                         inputs={"examples": kind(model_kind).examples_type, "model": "Model",
                                 "baseline_model": "Model"},
                         outputs={"evaluation": "ModelEvaluation"}, executor=run,
                         optional_inputs=frozenset({"baseline_model"}))


def run(inputs: Mapping[str, Artifact], outputs: Mapping[str, Artifact],
        params: Mapping[str, Any]) -> None:
    """Evaluates.

    Params: ``kind``, the kind's blessing thresholds and ``baseline_tolerance``
    (absolute, in the comparison metric's units; default 0).
    """
    model_kind = kind(params["kind"])
    examples, model = inputs["examples"], inputs["model"]
    metrics = evaluate_model(model_kind, model, examples, outputs["evaluation"].uri)
    blessed, reason = model_kind.blessing_rule(metrics, params)
    report: dict[str, Any] = {"kind": model_kind.name, "metrics": metrics}
    blessing: dict[str, Any] = {"blessed": blessed, "reason": reason,
                                "rule": "thresholds", "candidate_model": model.uri}
    baseline = inputs.get("baseline_model")
    if baseline is not None:
        baseline_metrics = evaluate_model(model_kind, baseline, examples)
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


def evaluate_model(model_kind: ModelKind, model: Artifact, examples: Artifact,
                   output_dir: str | None = None) -> dict[str, Any]:
    """The kind's offline metrics of ``model``'s SavedModel on ``examples``' test split.

    ``output_dir``, when given, receives the kind's plots (PNG) next to
    ``metrics.json``; the previous blessed model's evaluation writes none.
    """
    test_files = split_files(examples, "test")
    if not test_files:
        raise ValueError(f"no test shards under {examples.uri}/Split-test")
    saved_model_dir = os.path.join(model.uri, "serving")
    evaluate = model_kind.evaluate_fn()
    if model_kind.name == "next_track":
        return evaluate(saved_model_dir, test_files, split_files(examples, "train"), examples.uri,
                        output_dir=output_dir)
    metrics = evaluate(saved_model_dir, test_files, examples.uri, output_dir=output_dir)
    if "confusion_matrix" not in metrics:
        metrics["confusion_matrix"] = genre_confusion_matrix(saved_model_dir, test_files,
                                                             len(metrics["labels"]))
    return metrics


def genre_confusion_matrix(saved_model_dir: str, test_files: list[str], n_labels: int) -> list[list[int]]:
    """Track-level confusion counts ``[n_labels][n_labels]``: rows true label, columns predicted.

    A track's prediction is the argmax of its mean segment probabilities, as
    in the genre evaluation's track accuracy.
    """
    import tensorflow as tf

    from musicrec.models.genre.data import iterate_segments
    from musicrec.models.genre.evaluate import predict_track

    signature_fn = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    n_mels = int(signature_fn.structured_input_signature[1]["log_mel"].shape[-1])
    segments: dict[str, list] = {}
    labels: dict[str, int] = {}
    for log_mel, label, track_id in iterate_segments(test_files, n_mels):
        segments.setdefault(track_id, []).append(log_mel)
        labels[track_id] = label
    matrix = [[0] * n_labels for _ in range(n_labels)]
    for track_id, track_segments in segments.items():
        predicted = int(predict_track(signature_fn, track_segments).argmax())
        matrix[labels[track_id]][predicted] += 1
    return matrix


def is_blessed(evaluation: Artifact) -> bool:
    return bool(evaluation.properties.get("blessed"))
