"""Final fit: the blessed candidate's recipe, refitted on every split, is what gets pushed.

Inputs: ``examples`` (what the candidate trained on), ``model`` (the
candidate the Evaluator scored), ``evaluation`` (its verdict).
Outputs: ``model`` (Model): laid out as the Trainer's, ``serving/`` and
``train_metrics.json``, plus ``final_fit.json`` (what was done and why).

The Evaluator needs a test split the candidate never saw, so the candidate
misses the newest sessions: the test period is the most recent one. Once the
candidate is blessed, this stage trains the same model (same hyperparameters,
seed and warm start) on the train, eval and test splits together, for the
epochs early stopping chose for the candidate (``best_epoch``), with no
validation left to stop on. A candidate that was not blessed is not refitted:
the stage records why and the Pusher pushes nothing.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Mapping

from musicrec.components.base import Artifact, ComponentSpec, given_params, write_json_atomic
from musicrec.components.evaluator import is_blessed
from musicrec.components.model_kinds import kind, split_files
from musicrec.components.trainer import warm_start_args
from musicrec.models.train_args import TrainArgs

log = logging.getLogger(__name__)

RECORD_FILENAME = "final_fit.json"


def spec(model_kind: str) -> ComponentSpec:
    return ComponentSpec(name=f"final_fit[{model_kind}]",
                         inputs={"examples": kind(model_kind).examples_type, "model": "Model",
                                 "evaluation": "ModelEvaluation"},
                         outputs={"model": "Model"}, executor=run)


def run(inputs: Mapping[str, Artifact], outputs: Mapping[str, Artifact],
        params: Mapping[str, Any]) -> None:
    """Refits when blessed. Params: ``kind``, ``hparams``, ``seed``."""
    model_kind = kind(params["kind"])
    examples, candidate, output = inputs["examples"], inputs["model"], outputs["model"]
    record: dict[str, Any] = {"candidate": candidate.uri}
    if not is_blessed(inputs["evaluation"]):
        record.update(refitted=False, reason="the candidate was not blessed: nothing to push")
    else:
        with open(candidate.path("train_metrics.json"), encoding="utf-8") as handle:
            epochs = max(int(json.load(handle)["best_epoch"]), 1)
        files = [path for split in ("train", "eval", "test") for path in split_files(examples, split)]
        log.info("final fit: %d epochs on %d shards (train, eval and test)", epochs, len(files))
        base_model = candidate.properties.get("warm_start_dir")
        args = TrainArgs(train_files=files, eval_files=[], examples_dir=examples.uri, model_dir=output.uri,
                         hparams={**dict(params.get("hparams") or {}), "epochs": epochs,
                                  "validation_share": 0.0},
                         **given_params(params, seed=int),
                         **warm_start_args(Artifact("Model", base_model) if base_model else None))
        metrics = model_kind.run_fn()(args)
        record.update(refitted=True, epochs=epochs, splits=["train", "eval", "test"],
                      train_seconds=metrics.get("train_seconds"))
        output.properties.update(kind=model_kind.name, final_fit=True, epochs=epochs)
    write_json_atomic(output.path(RECORD_FILENAME), record)
    output.properties.update(refitted=record["refitted"])
