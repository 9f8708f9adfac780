"""The musicrec pipeline: components wired by their declared outputs.

    audio  ─► audio_example_gen ─► trainer[genre] ─► evaluator[genre] ─► pusher[genre]
    logs   ─► playlog_example_gen ─► trainer[next_track] ─► evaluator[next_track] ─► pusher[next_track]

Either branch runs alone when only its input is given.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from musicrec.components import (audio_example_gen, evaluator, playlog_example_gen, pusher,
                                 trainer)
from musicrec.pipeline.runner import Node, Pipeline

PIPELINE_NAME = "musicrec"


def serving_base(workdir: str) -> str:
    """Where pushed models go: ``<workdir>/serving/<model_name>/<version>``."""
    return os.path.join(workdir, "serving")


def _model_branch(model_kind: str, examples_node: Node, config: Mapping[str, Any],
                  workdir: str) -> list[Node]:
    section = config[f"{model_kind}_model"]
    train = Node(f"trainer_{model_kind}", trainer.spec(model_kind),
                 inputs={"examples": examples_node.outputs[_examples_output(examples_node)]},
                 params={"kind": model_kind, "hparams": section["hparams"], "seed": config["seed"],
                         "features": config["audio"]["features"] if model_kind == "genre" else None})
    evaluate = Node(f"evaluator_{model_kind}", evaluator.spec(model_kind),
                    inputs={"examples": train.inputs["examples"], "model": train.outputs["model"]},
                    params={"kind": model_kind,
                            **{k: v for k, v in section.items() if k != "hparams"}})
    push = Node(f"pusher_{model_kind}", pusher.SPEC,
                inputs={"model": train.outputs["model"], "evaluation": evaluate.outputs["evaluation"]},
                params={"serving_base": serving_base(workdir), "model_name": model_kind})
    return [train, evaluate, push]


def _examples_output(node: Node) -> str:
    (name,) = node.spec.outputs
    return name


def create_pipeline(config: Mapping[str, Any], workdir: str, *, audio_dir: str | None = None,
                    metadata_csv: str | None = None,
                    playlog_paths: Sequence[str] | None = None) -> Pipeline:
    """Wires the pipeline for the inputs given.

    Args:
        config: a validated config (``musicrec.pipeline.config.make_config``).
        workdir: runs go to ``<workdir>/runs/<run_id>``, pushed models to
            ``<workdir>/serving``.
        audio_dir: folder-per-genre audio tree (GTZAN layout).
        metadata_csv: alternative to ``audio_dir``: ``path,genre[,artist][,track_id]``.
        playlog_paths: play-log files or folders.
    """
    if not (audio_dir or metadata_csv or playlog_paths):
        raise ValueError("give audio (a folder or a metadata CSV), play logs, or both")
    nodes: list[Node] = []
    if audio_dir or metadata_csv:
        audio = config["audio"]
        audio_gen = Node("audio_example_gen", audio_example_gen.SPEC, params={
            "audio_dir": audio_dir, "metadata_csv": metadata_csv, "feature_params": audio["features"],
            "split_fractions": {
                "train": 1.0 - audio["eval_fraction"] - audio["test_fraction"],
                "eval": audio["eval_fraction"], "test": audio["test_fraction"]},
            "num_shards": audio["num_shards"], "beam_args": config["beam_args"]})
        nodes += [audio_gen, *_model_branch("genre", audio_gen, config, workdir)]
    if playlog_paths:
        logs = config["playlogs"]
        log_gen = Node("playlog_example_gen", playlog_example_gen.SPEC, params={
            "playlog_paths": list(playlog_paths), **logs, "beam_args": config["beam_args"]})
        nodes += [log_gen, *_model_branch("next_track", log_gen, config, workdir)]
    return Pipeline(PIPELINE_NAME, os.path.join(workdir, "runs"), nodes)
