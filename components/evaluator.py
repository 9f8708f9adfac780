"""Evaluator: scores the exported SavedModel on the test split and decides blessing.

Inputs: ``examples`` (the same artifact the model trained on), ``model``.
Outputs: ``evaluation`` (ModelEvaluation): ``metrics.json`` with the model's
and the baselines' metrics and the blessing decision with its reason.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from musicrec.components.base import Artifact, ComponentSpec, write_json_atomic
from musicrec.components.model_kinds import kind, split_files


def spec(model_kind: str) -> ComponentSpec:
    return ComponentSpec(name=f"evaluator[{model_kind}]",
                         inputs={"examples": kind(model_kind).examples_type, "model": "Model"},
                         outputs={"evaluation": "ModelEvaluation"}, executor=run)


def run(inputs: Mapping[str, Artifact], outputs: Mapping[str, Artifact],
        params: Mapping[str, Any]) -> None:
    """Evaluates. Params: ``kind`` and the kind's blessing thresholds."""
    model_kind = kind(params["kind"])
    examples, model = inputs["examples"], inputs["model"]
    test_files = split_files(examples, "test")
    if not test_files:
        raise ValueError(f"no test shards under {examples.uri}/Split-test")
    saved_model_dir = os.path.join(model.uri, "serving")
    evaluate = model_kind.evaluate_fn()
    if model_kind.name == "next_track":
        metrics = evaluate(saved_model_dir, test_files, split_files(examples, "train"), examples.uri)
    else:
        metrics = evaluate(saved_model_dir, test_files, examples.uri)
    blessed, reason = model_kind.blessing_rule(metrics, params)
    report = {"kind": model_kind.name, "metrics": metrics,
              "blessing": {"blessed": blessed, "reason": reason}}
    write_json_atomic(outputs["evaluation"].path("metrics.json"), report)
    outputs["evaluation"].properties.update(kind=model_kind.name, blessed=blessed, reason=reason)


def is_blessed(evaluation: Artifact) -> bool:
    return bool(evaluation.properties.get("blessed"))
