"""The musicrec pipeline: components wired by their declared outputs.

    audio  ─► audio_example_gen ─► trainer[genre] ─► evaluator[genre] ─► pusher[genre]
    logs   ─► playlog_example_gen ─► trainer[next_track] ─► evaluator[next_track]
                                  ─► final_fit[next_track] ─► pusher[next_track]

``final_fit`` (``next_track_model.final_fit``, on by default) refits the
blessed candidate's recipe on every split, so the pushed model knows the
newest plays; the evaluator's verdict still decides whether anything is pushed.

With both inputs and ``cold_start.enabled``, the next-track branch gains a
stage that appends tracks with audio but no plays (docs/cold_start.md):

    trainer[next_track] + trainer[genre] + audio examples ─► cold_start ─► evaluator[next_track]
    final_fit[next_track] + trainer[genre] + audio examples ─► cold_start_final ─► pusher[next_track]

With ``bulk_inference.jobs`` in the config, ``bulk_inferrer`` nodes follow the
pushers (docs/batch.md): ``tag`` after pusher[genre] over the audio input,
``recommend`` and ``embeddings`` after pusher[next_track] over the play logs.

Either branch runs alone when only its input is given. Inputs organised in
``span=<id>`` folders are narrowed to the spans the config's ``spans`` policy
picks (:mod:`musicrec.pipeline.spans`); the ExampleGens get the chosen
folders and their outputs record the span ids. The Trainer's ``base_model``
(warm start) and the Evaluator's ``baseline_model`` are resolved from ML
Metadata when they run: the latest blessed model of the same kind.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

from musicrec.components import (audio_example_gen, bulk_inferrer, cold_start, evaluator, final_fit,
                                 playlog_example_gen, pusher, trainer)
from musicrec.components.base import Artifact
from musicrec.components.model_kinds import kind
from musicrec.pipeline.config import feature_params
from musicrec.pipeline.metadata import MetadataStore
from musicrec.pipeline.runner import Node, Pipeline, Resolver
from musicrec.pipeline.spans import select_spans
from musicrec.serving.wire import serving_base

PIPELINE_NAME = "musicrec"


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


# Builds the stage that extends a trained model (the cold-start extension), given the
# node whose model it extends and the new node's id.
Extension = Callable[[Node, str], Node]


def _cold_start_extension(config: Mapping[str, Any], genre_train: Node,
                          audio_gen: Node) -> Extension:
    section = config["cold_start"]
    eval_plays = os.path.abspath(section["eval_plays"]) if section["eval_plays"] else None

    def extend(next_track_train: Node, node_id: str) -> Node:
        return Node(node_id, cold_start.SPEC,
                    inputs={"examples": next_track_train.inputs["examples"],
                            "model": next_track_train.outputs["model"],
                            "genre_model": genre_train.outputs["model"],
                            "audio_examples": audio_gen.outputs[_examples_output(audio_gen)]},
                    params={"ridge_alphas": list(section["ridge_alphas"]), "eval_plays": eval_plays,
                            "warm_norm": section["warm_norm"]},
                    data_paths=[eval_plays] if eval_plays else [])
    return extend


def _model_branch(model_kind: str, examples_node: Node, config: Mapping[str, Any],
                  workdir: str, extension: Extension | None = None) -> list[Node]:
    """Trainer → [extension] → Evaluator → [final fit → [extension]] → Pusher for one model kind."""
    section = config[f"{model_kind}_model"]
    # Trainer and Evaluator import the model code by a name held in a string (model_kinds),
    # which the fingerprint's import walk cannot follow: it is named here.
    model_code = [kind(model_kind).train_module, kind(model_kind).evaluate_module]
    examples = examples_node.outputs[_examples_output(examples_node)]
    train = Node(f"trainer_{model_kind}", trainer.spec(model_kind),
                 inputs={"examples": examples},
                 params={"kind": model_kind, "hparams": section["hparams"], "seed": config["seed"],
                         **({"features": feature_params(config).to_dict(),
                             "frontend": section["frontend"]} if model_kind == "genre" else {})},
                 resolvers=({"base_model": latest_blessed_base_model(model_kind)}
                            if section["warm_start"] else {}),
                 code_modules=model_code)
    # The evaluator scores the extended model when there is an extension.
    nodes = [train] + ([extension(train, "cold_start")] if extension else [])
    evaluate = Node(f"evaluator_{model_kind}", evaluator.spec(model_kind),
                    inputs={"examples": examples, "model": nodes[-1].outputs["model"]},
                    params={"kind": model_kind, **{k: v for k, v in section.items()
                                                   if k not in ("hparams", "warm_start", "final_fit", "frontend")}},
                    resolvers={"baseline_model": latest_blessed_baseline(model_kind)},
                    code_modules=model_code)
    nodes.append(evaluate)
    pushed = nodes[-2]
    if section.get("final_fit"):
        refit = Node(f"final_fit_{model_kind}", final_fit.spec(model_kind),
                     inputs={"examples": examples, "model": train.outputs["model"],
                             "evaluation": evaluate.outputs["evaluation"]},
                     params={"kind": model_kind, "hparams": section["hparams"], "seed": config["seed"]},
                     code_modules=model_code)
        nodes.append(refit)
        pushed = refit
        if extension:
            pushed = extension(refit, "cold_start_final")
            nodes.append(pushed)
    push = Node(f"pusher_{model_kind}", pusher.SPEC,
                inputs={"model": pushed.outputs["model"], "evaluation": evaluate.outputs["evaluation"]},
                params={"serving_base": serving_base(workdir), "model_name": model_kind,
                        **config["pusher"]})
    return [*nodes, push]


def _job_data(params: Mapping[str, Any]) -> Resolver:
    """The bulk_inferrer's ``data`` input: the paths its job reads, as an ``ExternalData`` artifact."""
    def resolve(store: MetadataStore, inputs: Mapping[str, Artifact]) -> Artifact | None:
        return bulk_inferrer.data_artifact(params)
    return resolve


def _bulk_inference_nodes(config: Mapping[str, Any], pushers: Mapping[str, Node],
                          job_inputs: Mapping[str, Mapping[str, Any]]) -> list[Node]:
    """One ``bulk_inferrer_<job>`` node per configured job whose model branch is in this pipeline.

    ``pushers``: model name → its pusher node; ``job_inputs``: job → the params naming what it reads.
    """
    section = config["bulk_inference"]
    settings = {"tag": {"top_genres": section["top_genres"]},
                "recommend": {"top_n": section["top_n"], "exclude": section["exclude"]},
                "embeddings": {}}
    nodes = []
    for job in section["jobs"]:
        model_name = bulk_inferrer.MODEL_FOR_JOB[job]
        if model_name not in pushers or job not in job_inputs:
            continue
        params = {"job": job, **job_inputs[job], **settings[job], "beam_args": config["beam_args"],
                  **({"num_shards": section["num_shards"]} if job != "embeddings" else {})}
        nodes.append(Node(f"bulk_inferrer_{job}", bulk_inferrer.SPEC,
                          inputs={f"{model_name}_model": pushers[model_name].outputs["pushed_model"]},
                          params=params, data_paths=bulk_inferrer.job_data_paths(params),
                          resolvers={"data": _job_data(params)}))
    return nodes


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

    With audio, play logs and ``config["cold_start"]["enabled"]``, a
    ``cold_start`` stage sits between ``trainer_next_track`` and
    ``evaluator_next_track``; with one input alone it is left out.

    Raises:
        ValueError: no input, or a spanned audio tree with a multi-span policy.
    """
    if not (audio_dir or metadata_csv or playlog_paths):
        raise ValueError("give audio (a folder or a metadata CSV), play logs, or both")
    spans = config["spans"]
    nodes: list[Node] = []
    extension: Extension | None = None
    pushers: dict[str, Node] = {}
    job_inputs: dict[str, dict[str, Any]] = {}
    if audio_dir or metadata_csv:
        audio = config["audio"]
        audio_spans = select_spans([audio_dir] if audio_dir else [], "latest")
        if audio_dir and audio_spans.span_ids and spans["policy"] != "latest":
            raise ValueError(f"spans.policy {spans['policy']!r} needs several audio trees; the "
                             "audio ExampleGen reads one: use policy 'latest' for spanned audio")
        resolved_audio_dir = audio_spans.paths[0] if audio_dir else None
        audio_gen = Node("audio_example_gen", audio_example_gen.SPEC, params={
            "audio_dir": resolved_audio_dir, "metadata_csv": metadata_csv,
            "feature_params": feature_params(config).to_dict(),
            "split_fractions": {
                "train": 1.0 - audio["eval_fraction"] - audio["test_fraction"],
                "eval": audio["eval_fraction"], "test": audio["test_fraction"]},
            "num_shards": audio["num_shards"], "baseline_vectors": audio["baseline_vectors"],
            "beam_args": config["beam_args"]},
            data_paths=[p for p in (resolved_audio_dir, metadata_csv) if p],
            output_properties=_span_properties(audio_spans.span_ids))
        genre_branch = _model_branch("genre", audio_gen, config, workdir)
        nodes += [audio_gen, *genre_branch]
        pushers["genre"] = genre_branch[-1]
        # The tagging job reads the feature parameters stored with the model it runs.
        job_inputs["tag"] = {"audio_dir": resolved_audio_dir, "metadata_csv": metadata_csv}
        if config["cold_start"]["enabled"]:
            extension = _cold_start_extension(config, genre_branch[0], audio_gen)
    if playlog_paths:
        logs = config["playlogs"]
        selection = select_spans(list(playlog_paths), spans["policy"], spans["window"])
        log_gen = Node("playlog_example_gen", playlog_example_gen.SPEC, params={
            "playlog_paths": selection.paths, **logs, "beam_args": config["beam_args"]},
            data_paths=selection.paths, output_properties=_span_properties(selection.span_ids))
        next_track_branch = _model_branch("next_track", log_gen, config, workdir, extension)
        nodes += [log_gen, *next_track_branch]
        pushers["next_track"] = next_track_branch[-1]
        job_inputs["recommend"] = {"playlog_paths": selection.paths, "playlog_format": logs["format"],
                                   "session_gap_seconds": logs["session_gap_seconds"]}
        job_inputs["embeddings"] = {}
    nodes += _bulk_inference_nodes(config, pushers, job_inputs)
    return Pipeline(PIPELINE_NAME, os.path.join(workdir, "runs"), nodes,
                    metadata=config.get("metadata"), write_report=config.get("report", True))
