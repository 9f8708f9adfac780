"""Trainer: runs a model's ``run_fn`` on an examples artifact.

Inputs: ``examples`` (AudioExamples or Sessions, by model kind) and,
optionally, ``base_model``: the latest blessed model of the same kind, which
the runner resolves from ML Metadata, to warm-start from.
Outputs: ``model`` (Model): ``serving/`` (SavedModel) and ``train_metrics.json``.

Warm start is handed to the model code as ``TrainArgs.warm_start_dir`` (the
base model's folder, holding its checkpoint); the model's ``warm_start``
property records where it started from.
"""
from __future__ import annotations

from typing import Any, Mapping

from musicrec.components.base import Artifact, ComponentSpec, given_params
from musicrec.components.model_kinds import kind, split_files
from musicrec.models.features import AudioFeatureParams
from musicrec.models.train_args import TrainArgs


def spec(model_kind: str) -> ComponentSpec:
    """The Trainer's declaration for one model kind ("genre" or "next_track")."""
    return ComponentSpec(name=f"trainer[{model_kind}]",
                         inputs={"examples": kind(model_kind).examples_type, "base_model": "Model"},
                         outputs={"model": "Model"}, executor=run,
                         optional_inputs=frozenset({"base_model"}))


def run(inputs: Mapping[str, Artifact], outputs: Mapping[str, Artifact],
        params: Mapping[str, Any]) -> None:
    """Trains. Params: ``kind``, ``hparams`` (dict), ``features`` (dict) and ``frontend``
    (genre only), ``seed``."""
    model_kind = kind(params["kind"])
    examples = inputs["examples"]
    train_files = split_files(examples, "train")
    if not train_files:
        raise ValueError(f"no training shards under {examples.uri}/Split-train")
    features = params.get("features")
    base_model = inputs.get("base_model")
    args = TrainArgs(
        train_files=train_files, eval_files=split_files(examples, "eval"),
        examples_dir=examples.uri, model_dir=outputs["model"].uri,
        hparams=dict(params.get("hparams") or {}),
        feature_params=AudioFeatureParams.from_dict(features) if features else None,
        **({"frontend": params["frontend"]} if params.get("frontend") else {}),
        **given_params(params, seed=int), **warm_start_args(base_model))
    metrics = model_kind.run_fn()(args)
    outputs["model"].properties.update(
        kind=model_kind.name, train_metrics=_scalars(metrics),
        **({"warm_start": f"from {base_model.uri}", "warm_start_dir": base_model.uri} if base_model else {}))


def warm_start_args(base_model: Artifact | None) -> dict[str, Any]:
    """The ``TrainArgs`` fields that warm-start from ``base_model`` (none without one)."""
    return {"warm_start_dir": base_model.uri} if base_model is not None else {}


def _scalars(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level numbers of a metrics dict, for the run record."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
