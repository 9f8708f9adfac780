"""Pusher: publishes a blessed SavedModel as a new TF Serving version.

Inputs: ``model``, ``evaluation``.
Outputs: ``pushed_model`` (PushedModel): ``push.json`` (pushed or not, why, where).

The copy goes to ``<serving_base>/<model_name>/.tmp-<version>`` and is renamed
to ``<serving_base>/<model_name>/<version>``: TF Serving ignores folders whose
name is not an integer, so a server polling the base path never loads half a
model.
"""
from __future__ import annotations

import os
import shutil
from typing import Any, Mapping

from musicrec.components.base import Artifact, ComponentSpec, write_json_atomic
from musicrec.components.evaluator import is_blessed

def existing_versions(model_base: str) -> list[int]:
    """Integer version folders under ``model_base``, ascending."""
    if not os.path.isdir(model_base):
        return []
    return sorted(int(name) for name in os.listdir(model_base)
                  if name.isdigit() and os.path.isdir(os.path.join(model_base, name)))


def push(saved_model_dir: str, model_base: str) -> tuple[int, str]:
    """Copies a SavedModel in as the next version; returns ``(version, path)``."""
    if not os.path.isfile(os.path.join(saved_model_dir, "saved_model.pb")):
        raise FileNotFoundError(f"no saved_model.pb in {saved_model_dir}")
    os.makedirs(model_base, exist_ok=True)
    version = (existing_versions(model_base) or [0])[-1] + 1
    staging = os.path.join(model_base, f".tmp-{version}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(saved_model_dir, staging)
    final = os.path.join(model_base, str(version))
    os.rename(staging, final)
    return version, final


def run(inputs: Mapping[str, Artifact], outputs: Mapping[str, Artifact],
        params: Mapping[str, Any]) -> None:
    """Pushes when blessed. Params: ``serving_base``, ``model_name``."""
    model, evaluation = inputs["model"], inputs["evaluation"]
    model_base = os.path.join(params["serving_base"], params["model_name"])
    record: dict[str, Any] = {"model_name": params["model_name"], "model_base_path": model_base}
    if is_blessed(evaluation):
        version, path = push(os.path.join(model.uri, "serving"), model_base)
        record.update(pushed=True, version=version, path=path)
    else:
        record.update(pushed=False, reason=f"not blessed: {evaluation.properties.get('reason')}")
    write_json_atomic(outputs["pushed_model"].path("push.json"), record)
    outputs["pushed_model"].properties.update(record)


SPEC = ComponentSpec(name="pusher", inputs={"model": "Model", "evaluation": "ModelEvaluation"},
                     outputs={"pushed_model": "PushedModel"}, executor=run)
