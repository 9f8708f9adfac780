"""The musicrec pipeline: components wired by their declared outputs.

    audio  ─► audio_example_gen ─► trainer[genre] ─► evaluator[genre] ─► pusher[genre]
    logs   ─► playlog_example_gen ─► trainer[next_track] ─► evaluator[next_track] ─► pusher[next_track]

Either branch runs alone when only its input is given. Inputs organised in
``span=<id>`` folders are narrowed to the spans the config's ``spans`` policy
picks (:mod:`musicrec.pipeline.spans`); the ExampleGens get the chosen
folders and their outputs record the span ids. The Trainer's ``base_model``
(warm start) and the Evaluator's ``baseline_model`` are resolved from ML
Metadata when they run: the latest blessed model of the same kind.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from musicrec.components import (audio_example_gen, evaluator, playlog_example_gen, pusher,
                                 trainer)
from musicrec.components.base import Artifact
from musicrec.components.model_kinds import kind
from musicrec.pipeline.metadata import MetadataStore
from musicrec.pipeline.runner import Node, Pipeline, Resolver
from musicrec.pipeline.spans import select_spans

PIPELINE_NAME = "musicrec"


def serving_base(workdir: str) -> str:
    """Where pushed models go: ``<workdir>/serving/<model_name>/<version>``."""
    return os.path.join(workdir, "serving")


def latest_blessed_baseline(model_kind: str) -> Resolver:
    """Evaluator baseline: the latest blessed model of the kind, other than the candidate."""
    def resolve(store: MetadataStore, inputs: Mapping[str, Artifact]) -> Artifact | None:
        return store.latest_blessed_model(model_kind, exclude_uris=[inputs["model"].uri])
    return resolve


def latest_blessed_base_model(model_kind: str) -> Resolver:
    """Trainer warm start: the latest blessed model of the kind trained on other examples.

    Excluding models trained on the current examples keeps an unchanged rerun
    a cache hit (it resolves what the first run resolved: nothing).
    """
    def resolve(store: MetadataStore, inputs: Mapping[str, Artifact]) -> Artifact | None:
        return store.latest_blessed_model(model_kind, exclude_trained_on=[inputs["examples"].uri])
    return resolve


def _model_branch(model_kind: str, examples_node: Node, config: Mapping[str, Any],
                  workdir: str) -> list[Node]:
    section = config[f"{model_kind}_model"]
    # Trainer and Evaluator import the model code by name (model_kinds).
    model_code = [kind(model_kind).train_module, kind(model_kind).evaluate_module]
    train = Node(f"trainer_{model_kind}", trainer.spec(model_kind),
                 inputs={"examples": examples_node.outputs[_examples_output(examples_node)]},
                 params={"kind": model_kind, "hparams": section["hparams"], "seed": config["seed"],
                         "features": config["audio"]["features"] if model_kind == "genre" else None},
                 resolvers=({"base_model": latest_blessed_base_model(model_kind)}
                            if section["warm_start"] else {}),
                 code_modules=model_code)
    evaluate = Node(f"evaluator_{model_kind}", evaluator.spec(model_kind),
                    inputs={"examples": train.inputs["examples"], "model": train.outputs["model"]},
                    params={"kind": model_kind,
                            **{k: v for k, v in section.items() if k not in ("hparams", "warm_start")}},
                    resolvers={"baseline_model": latest_blessed_baseline(model_kind)},
                    code_modules=model_code)
    push = Node(f"pusher_{model_kind}", pusher.SPEC,
                inputs={"model": train.outputs["model"], "evaluation": evaluate.outputs["evaluation"]},
                params={"serving_base": serving_base(workdir), "model_name": model_kind,
                        **config["pusher"]})
    return [train, evaluate, push]


def _examples_output(node: Node) -> str:
    (name,) = node.spec.outputs
    return name


def _span_properties(span_ids: Sequence[str]) -> dict[str, Any]:
    return {"spans": list(span_ids), "span": span_ids[-1]} if span_ids else {"spans": []}


def create_pipeline(config: Mapping[str, Any], workdir: str, *, audio_dir: str | None = None,
                    metadata_csv: str | None = None,
                    playlog_paths: Sequence[str] | None = None) -> Pipeline:
    """Wires the pipeline for the inputs given.

    Args:
        config: a validated config (``musicrec.pipeline.config.make_config``).
        workdir: runs go to ``<workdir>/runs/<run_id>``, pushed models to
            ``<workdir>/serving``, ML Metadata to ``<workdir>/runs/metadata.sqlite``.
        audio_dir: folder-per-genre audio tree (GTZAN layout), or a folder of
            ``span=<id>`` folders each holding one (only the ``latest`` span
            policy applies to audio: the audio ExampleGen reads one tree).
        metadata_csv: alternative to ``audio_dir``: ``path,genre[,artist][,track_id]``.
        playlog_paths: play-log files or folders (folders may hold ``span=<id>`` folders).

    Raises:
        ValueError: no input, or a spanned audio tree with a multi-span policy.
    """
    if not (audio_dir or metadata_csv or playlog_paths):
        raise ValueError("give audio (a folder or a metadata CSV), play logs, or both")
    spans = config["spans"]
    nodes: list[Node] = []
    if audio_dir or metadata_csv:
        audio = config["audio"]
        audio_spans = select_spans([audio_dir] if audio_dir else [], "latest")
        if audio_dir and audio_spans.span_ids and spans["policy"] != "latest":
            raise ValueError(f"spans.policy {spans['policy']!r} needs several audio trees; the "
                             "audio ExampleGen reads one: use policy 'latest' for spanned audio")
        resolved_audio_dir = audio_spans.paths[0] if audio_dir else None
        audio_gen = Node("audio_example_gen", audio_example_gen.SPEC, params={
            "audio_dir": resolved_audio_dir, "metadata_csv": metadata_csv,
            "feature_params": audio["features"],
            "split_fractions": {
                "train": 1.0 - audio["eval_fraction"] - audio["test_fraction"],
                "eval": audio["eval_fraction"], "test": audio["test_fraction"]},
            "num_shards": audio["num_shards"], "beam_args": config["beam_args"]},
            data_paths=[p for p in (resolved_audio_dir, metadata_csv) if p],
            output_properties=_span_properties(audio_spans.span_ids))
        nodes += [audio_gen, *_model_branch("genre", audio_gen, config, workdir)]
    if playlog_paths:
        logs = config["playlogs"]
        selection = select_spans(list(playlog_paths), spans["policy"], spans["window"])
        log_gen = Node("playlog_example_gen", playlog_example_gen.SPEC, params={
            "playlog_paths": selection.paths, **logs, "beam_args": config["beam_args"]},
            data_paths=selection.paths, output_properties=_span_properties(selection.span_ids))
        nodes += [log_gen, *_model_branch("next_track", log_gen, config, workdir)]
    return Pipeline(PIPELINE_NAME, os.path.join(workdir, "runs"), nodes,
                    metadata=config.get("metadata"), write_report=config.get("report", True))
