"""Pusher: publishes a blessed SavedModel as a new TF Serving version.

Inputs: ``model``, ``evaluation``.
Outputs: ``pushed_model`` (PushedModel): ``push.json`` (pushed or not, why, where,
which versions were pruned, whether a warmup request was written).

A push, in order:

1. copy the SavedModel to ``<serving_base>/<model_name>/.tmp-<version>``;
2. write one warmup request (``assets.extra/tf_serving_warmup_requests``, the
   PredictionLog TFRecord TF Serving replays on load), built from the
   ``serving_default`` signature with a batch of one zero / empty-string input,
   and check it by loading the copy exactly as the local server does; a
   request the model rejects is dropped (and the reason recorded) rather than
   shipped, because TF Serving refuses to load a version whose warmup fails;
3. rename the copy to ``<serving_base>/<model_name>/<version>``: TF Serving
   ignores folders whose name is not an integer, so a server polling the base
   path never loads half a model;
4. delete all but the newest ``keep_versions`` versions (each is first renamed
   to a non-integer name, so a server never sees a half-deleted version);
5. rewrite ``<serving_base>/models.config`` (a ModelServerConfig text proto
   listing every model under ``serving_base``) atomically.

Steps 2 and 5 are the serving side's (:mod:`musicrec.serving.publish`: the
warmup format, the loader that replays it, the config writer), so both ends
share one definition.
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Mapping

from musicrec.components.base import Artifact, ComponentSpec, write_json_atomic
from musicrec.components.evaluator import is_blessed
from musicrec.serving.wire import list_versions

LOGGER = logging.getLogger(__name__)

DEFAULT_KEEP_VERSIONS = 5


def prune_versions(model_base: str, keep_versions: int) -> list[int]:
    """Delete all but the newest ``keep_versions`` versions; return those deleted."""
    if keep_versions < 1:
        raise ValueError(f"keep_versions must be >= 1, got {keep_versions}")
    doomed = list_versions(model_base)[:-keep_versions]
    for version in doomed:
        # Renamed first: a server polling the folder sees the version vanish
        # at once instead of a half-deleted one.
        graveyard = os.path.join(model_base, f".deleting-{version}")
        os.rename(os.path.join(model_base, str(version)), graveyard)
        shutil.rmtree(graveyard)
    return doomed


def push(saved_model_dir: str, model_base: str, warmup: bool = False) -> tuple[int, str]:
    """Copies a SavedModel in as the next version; returns ``(version, path)``.

    With ``warmup`` a verified warmup request is added (see
    :func:`musicrec.serving.publish.add_warmup_request`); one the model fails
    is logged and left out.
    """
    version, final, _ = _push(saved_model_dir, model_base, warmup)
    return version, final


def _push(saved_model_dir: str, model_base: str, warmup: bool) -> tuple[int, str, str | None]:
    """``push`` that also returns why no warmup was written (None when one was)."""
    if not os.path.isfile(os.path.join(saved_model_dir, "saved_model.pb")):
        raise FileNotFoundError(f"no saved_model.pb in {saved_model_dir}")
    os.makedirs(model_base, exist_ok=True)
    version = (list_versions(model_base) or [0])[-1] + 1
    staging = os.path.join(model_base, f".tmp-{version}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(saved_model_dir, staging)
    reason: str | None = "disabled"
    if warmup:
        from musicrec.serving.publish import add_warmup_request

        reason = add_warmup_request(staging, os.path.basename(os.path.normpath(model_base)))
        if reason is not None:
            LOGGER.warning("no warmup request for %s: %s", staging, reason)
    final = os.path.join(model_base, str(version))
    os.rename(staging, final)
    return version, final, reason


def run(inputs: Mapping[str, Artifact], outputs: Mapping[str, Artifact],
        params: Mapping[str, Any]) -> None:
    """Pushes when blessed, prunes old versions and rewrites ``models.config``.

    Params: ``serving_base``, ``model_name``, ``keep_versions`` (default 5),
    ``warmup`` (default True).
    """
    model, evaluation = inputs["model"], inputs["evaluation"]
    keep_versions = int(params.get("keep_versions", DEFAULT_KEEP_VERSIONS))
    if keep_versions < 1:
        raise ValueError(f"pusher param keep_versions must be >= 1, got {keep_versions}")
    serving_base = params["serving_base"]
    model_base = os.path.join(serving_base, params["model_name"])
    record: dict[str, Any] = {"model_name": params["model_name"], "model_base_path": model_base}
    if is_blessed(evaluation):
        from musicrec.serving.publish import write_serving_config

        version, path, warmup_reason = _push(os.path.join(model.uri, "serving"), model_base,
                                             warmup=bool(params.get("warmup", True)))
        pruned = prune_versions(model_base, keep_versions)
        config_path = write_serving_config(serving_base)
        record.update(pushed=True, version=version, path=path, warmup=warmup_reason is None,
                      pruned_versions=pruned, models_config=config_path)
        if warmup_reason is not None:
            record["warmup_skipped_reason"] = warmup_reason
    else:
        record.update(pushed=False, reason=f"not blessed: {evaluation.properties.get('reason')}")
    write_json_atomic(outputs["pushed_model"].path("push.json"), record)
    outputs["pushed_model"].properties.update(record)


SPEC = ComponentSpec(name="pusher", inputs={"model": "Model", "evaluation": "ModelEvaluation"},
                     outputs={"pushed_model": "PushedModel"}, executor=run)
