"""A local runner: executes a pipeline's components in dependency order.

Each component's outputs are written under ``<run_dir>/<node>/.tmp-<output>``
and renamed to ``<run_dir>/<node>/<output>`` only when the component
succeeds, so a crash never leaves a half-written artifact where the next stage
or the server would read it. ``<run_dir>/run.json`` records every
component's state, timing, fingerprint and artifacts as the run goes.

Around that:

- ML Metadata records every execution, artifact and event
  (:mod:`musicrec.pipeline.metadata`).
- Caching: a component whose fingerprint (:mod:`musicrec.pipeline.fingerprints`)
  matches a COMPLETE earlier execution is not run; that execution's outputs
  are reused and the hit is recorded as a CACHED execution.
  ``LocalRunner(no_cache=True)`` runs everything.
- Crash safety: a run whose process died (its ``run.json`` still says
  ``running`` when the lock is free) is resumed under the same run id. The
  components it finished are cache hits on their own executions (unless the
  config or data changed since), so work restarts at the first unfinished
  component.
- One run per pipeline root (:mod:`musicrec.pipeline.lock`).
- A self-contained HTML report per run (:mod:`musicrec.pipeline.report`).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from musicrec.components.base import Artifact, ComponentSpec, write_json_atomic
from musicrec.pipeline import metadata as mlmd_store
from musicrec.pipeline.fingerprints import cacheable, fingerprint
from musicrec.pipeline.lock import pipeline_lock

log = logging.getLogger(__name__)

RUN_RECORD = "run.json"

# Resolves an optional input from ML Metadata at run time, given the node's
# other inputs; returns None when there is nothing to resolve (first run).
Resolver = Callable[[mlmd_store.MetadataStore, Mapping[str, Artifact]], Optional[Artifact]]


@dataclasses.dataclass(frozen=True)
class OutputRef:
    """Names one output of one node; inputs are wired to these."""

    node_id: str
    output_name: str


@dataclasses.dataclass
class Node:
    """One component instance in a pipeline.

    Attributes:
        data_paths: files or folders the component reads from outside the
            pipeline (ExampleGens); their paths, sizes and mtimes are part of
            the cache fingerprint.
        output_properties: added to every output artifact's properties (the
            spans an ExampleGen read, for lineage).
        resolvers: optional inputs resolved from ML Metadata when the node
            runs (the latest blessed model as the Evaluator's baseline).
        code_modules: modules the executor loads lazily (by name), whose
            source is part of the cache fingerprint with the executor's own.
    """

    id: str
    spec: ComponentSpec
    inputs: Mapping[str, OutputRef] = dataclasses.field(default_factory=dict)
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data_paths: Sequence[str] = ()
    output_properties: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    resolvers: Mapping[str, Resolver] = dataclasses.field(default_factory=dict)
    code_modules: Sequence[str] = ()

    @property
    def outputs(self) -> dict[str, OutputRef]:
        return {name: OutputRef(self.id, name) for name in self.spec.outputs}


@dataclasses.dataclass
class Pipeline:
    """Named nodes under a root (``<workdir>/runs``).

    ``metadata`` is the config's ``metadata`` section (``None``: SQLite under
    ``root``; see :func:`musicrec.pipeline.metadata.connection_config`).
    """

    name: str
    root: str
    nodes: list[Node]
    metadata: Optional[Mapping[str, Any]] = None
    write_report: bool = True

    def ordered(self) -> list[Node]:
        """Nodes in dependency order; raises ``ValueError`` on cycles or dangling inputs."""
        by_id = {node.id: node for node in self.nodes}
        if len(by_id) != len(self.nodes):
            raise ValueError("pipeline node ids must be unique")
        ordered: list[Node] = []
        state: dict[str, str] = {}

        def visit(node: Node) -> None:
            if state.get(node.id) == "done":
                return
            if state.get(node.id) == "visiting":
                raise ValueError(f"pipeline has a cycle through {node.id}")
            state[node.id] = "visiting"
            for ref in node.inputs.values():
                if ref.node_id not in by_id:
                    raise ValueError(f"{node.id} reads from unknown node {ref.node_id}")
                if ref.output_name not in by_id[ref.node_id].spec.outputs:
                    raise ValueError(f"{node.id} reads unknown output {ref.node_id}.{ref.output_name}")
                visit(by_id[ref.node_id])
            state[node.id] = "done"
            ordered.append(node)

        for node in self.nodes:
            visit(node)
        return ordered


class PipelineRunError(RuntimeError):
    """A component failed; the message names it."""


@dataclasses.dataclass
class RunResult:
    run_id: str
    run_dir: str
    artifacts: dict[OutputRef, Artifact]
    # node id -> "complete" (executed now) or "cached" (outputs reused).
    states: dict[str, str] = dataclasses.field(default_factory=dict)
    report_path: Optional[str] = None

    def artifact(self, node_id: str, output_name: str) -> Artifact:
        return self.artifacts[OutputRef(node_id, output_name)]

    def executed(self) -> list[str]:
        """Node ids whose executor ran in this run (not cached, not resumed)."""
        return [node_id for node_id, state in self.states.items() if state == "complete"]


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def read_run_record(run_dir: str) -> dict[str, Any] | None:
    path = os.path.join(run_dir, RUN_RECORD)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def interrupted_run(root: str, pipeline_name: str) -> str | None:
    """The newest run under ``root`` still marked ``running``; call while holding the lock."""
    if not os.path.isdir(root):
        return None
    for run_id in sorted(os.listdir(root), reverse=True):
        record = read_run_record(os.path.join(root, run_id))
        if record and record.get("pipeline") == pipeline_name and record.get("state") == "running":
            return run_id
    return None


class LocalRunner:
    """Runs every node of a pipeline in this process, one after another.

    Args:
        no_cache: run every component even when a cached execution matches.
        resume: continue an interrupted run (same run id) instead of starting
            a new one, when no ``run_id`` is given.
        report: write ``<run_dir>/report.html`` when the run ends.
    """

    def __init__(self, no_cache: bool = False, resume: bool = True, report: bool = True):
        self.no_cache = no_cache
        self.resume = resume
        self.report = report

    def run(self, pipeline: Pipeline, run_id: str | None = None) -> RunResult:
        """Runs the pipeline; raises ``PipelineLockedError`` when another run holds the root."""
        ordered = pipeline.ordered()
        with pipeline_lock(pipeline.root):
            store = mlmd_store.MetadataStore(
                mlmd_store.connection_config(pipeline.metadata, pipeline.root))
            cancelled = store.cancel_interrupted(pipeline.root)
            if cancelled:
                log.warning("marked %d interrupted execution(s) as CANCELED", len(cancelled))
            if run_id is None and self.resume:
                run_id = interrupted_run(pipeline.root, pipeline.name)
                if run_id:
                    log.info("resuming interrupted run %s", run_id)
            return self._run(pipeline, ordered, store, run_id or new_run_id())

    def _run(self, pipeline: Pipeline, ordered: list[Node], store: mlmd_store.MetadataStore,
             run_id: str) -> RunResult:
        run_dir = os.path.join(pipeline.root, run_id)
        os.makedirs(run_dir, exist_ok=True)
        record_path = os.path.join(run_dir, RUN_RECORD)
        previous = read_run_record(run_dir) or {}
        record: dict[str, Any] = {"pipeline": pipeline.name, "run_id": run_id, "state": "running",
                                  "started": previous.get("started", time.time()),
                                  "no_cache": self.no_cache, "components": {}}
        if previous:
            record["resumed"] = previous.get("resumed", 0) + 1
        contexts = store.run_contexts(pipeline.name, pipeline.root, run_id)
        result = RunResult(run_id, run_dir, {})
        try:
            for index, node in enumerate(ordered, start=1):
                self._run_node(pipeline, node, index, len(ordered), store, contexts, record,
                               record_path, result)
            record.update(state="complete", finished=time.time())
        except Exception:
            record.update(state="failed", finished=time.time())
            raise
        finally:
            # A KeyboardInterrupt or kill leaves "running", so the next run resumes this one.
            if record["state"] != "running":
                write_json_atomic(record_path, record)
                if pipeline.write_report:
                    result.report_path = self._write_report(run_dir, record)
                if result.report_path:
                    record["report"] = result.report_path
                write_json_atomic(record_path, record)
        return result

    def _run_node(self, pipeline: Pipeline, node: Node, index: int, total: int,
                  store: mlmd_store.MetadataStore, contexts: list[int], record: dict[str, Any],
                  record_path: str, result: RunResult) -> None:
        log.info("[%d/%d] %s (%s)", index, total, node.id, node.spec.name)
        entry: dict[str, Any] = {"component": node.spec.name, "order": index, "state": "running",
                                 "started": time.time()}
        record["components"][node.id] = entry
        write_json_atomic(record_path, record)
        execution_id = None
        try:
            inputs = {name: result.artifacts[ref] for name, ref in node.inputs.items()}
            for name, resolve in node.resolvers.items():
                resolved = resolve(store, inputs)
                if resolved is not None:
                    inputs[name] = resolved
            node.spec.check_inputs(inputs)
            key = fingerprint(node.spec.name, node.params, inputs, node.data_paths,
                              [node.spec.executor.__module__, *node.code_modules])
            entry.update(fingerprint=key, inputs={name: a.uri for name, a in inputs.items()})
            execution_id = store.start_execution(node.spec.name, node.id, record["run_id"],
                                                 pipeline.root, key, node.params, inputs, contexts)
            entry["execution_id"] = execution_id
            write_json_atomic(record_path, record)
            use_cache = not self.no_cache and cacheable(node.data_paths)
            cached = store.find_cached(node.spec.name, key) if use_cache else None
            if cached is not None and cached[0] != execution_id:
                source_id, outputs = cached
                store.finish_execution(execution_id, mlmd_store.State.CACHED, outputs, contexts,
                                       cached_from=source_id)
                entry.update(state="cached", cached_from_execution=source_id)
                log.info("[%d/%d] %s: cache hit (execution %d)", index, total, node.id, source_id)
            else:
                outputs = self._execute(node, os.path.dirname(record_path), inputs)
                store.finish_execution(execution_id, mlmd_store.State.COMPLETE, outputs, contexts)
                entry["state"] = "complete"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            entry.update(state="failed", error=error, seconds=round(time.time() - entry["started"], 3))
            record["state"] = "failed"
            if execution_id is not None:
                store.finish_execution(execution_id, mlmd_store.State.FAILED, error=error)
            write_json_atomic(record_path, record)
            raise PipelineRunError(f"component {node.id} failed: {exc}") from exc
        for name, artifact in outputs.items():
            result.artifacts[OutputRef(node.id, name)] = artifact
        result.states[node.id] = entry["state"]
        entry.update(seconds=round(time.time() - entry["started"], 3),
                     outputs={name: dataclasses.asdict(a) for name, a in outputs.items()})
        write_json_atomic(record_path, record)
        log.info("[%d/%d] %s %s in %.1f s", index, total, node.id, entry["state"], entry["seconds"])

    @staticmethod
    def _execute(node: Node, run_dir: str, inputs: Mapping[str, Artifact]) -> dict[str, Artifact]:
        node_dir = os.path.join(run_dir, node.id)
        staged: dict[str, Artifact] = {}
        for name, type_name in node.spec.outputs.items():
            tmp_uri = os.path.join(node_dir, f".tmp-{name}")
            shutil.rmtree(tmp_uri, ignore_errors=True)
            os.makedirs(tmp_uri)
            staged[name] = Artifact(type_name, tmp_uri, dict(node.output_properties))
        node.spec.executor(inputs, staged, node.params)
        published: dict[str, Artifact] = {}
        for name, artifact in staged.items():
            final_uri = os.path.join(node_dir, name)
            shutil.rmtree(final_uri, ignore_errors=True)
            os.replace(artifact.uri, final_uri)
            published[name] = Artifact(artifact.type_name, final_uri, artifact.properties)
        return published

    def _write_report(self, run_dir: str, record: Mapping[str, Any]) -> str | None:
        if not self.report:
            return None
        from musicrec.pipeline.report import write_report

        try:
            return write_report(run_dir, record)
        except Exception:  # a report must never fail the run it describes
            log.warning("could not write the run report", exc_info=True)
            return None


def describe(nodes: Iterable[Node]) -> str:
    """One line per node: ``id (component) <- inputs``; for logs and docs."""
    lines = []
    for node in nodes:
        sources = ", ".join(f"{r.node_id}.{r.output_name}" for r in node.inputs.values())
        lines.append(f"{node.id} ({node.spec.name})" + (f" <- {sources}" if sources else ""))
    return "\n".join(lines)
