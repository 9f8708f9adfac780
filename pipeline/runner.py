"""A local runner: executes a pipeline's components in dependency order.

Each component's outputs are written under ``<run_dir>/<node>/.tmp-<output>``
and renamed to ``<run_dir>/<node>/<output>`` only when the component
succeeds, so a crash never leaves a half-written artifact where the next stage
or the server would read it. ``<run_dir>/run.json`` records every
component's state, timing and artifacts as the run goes.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import shutil
import time
from typing import Any, Iterable, Mapping

from musicrec.components.base import Artifact, ComponentSpec, write_json_atomic

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class OutputRef:
    """Names one output of one node; inputs are wired to these."""

    node_id: str
    output_name: str


@dataclasses.dataclass
class Node:
    """One component instance in a pipeline."""

    id: str
    spec: ComponentSpec
    inputs: Mapping[str, OutputRef] = dataclasses.field(default_factory=dict)
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def outputs(self) -> dict[str, OutputRef]:
        return {name: OutputRef(self.id, name) for name in self.spec.outputs}


@dataclasses.dataclass
class Pipeline:
    name: str
    root: str
    nodes: list[Node]

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

    def artifact(self, node_id: str, output_name: str) -> Artifact:
        return self.artifacts[OutputRef(node_id, output_name)]


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


class LocalRunner:
    """Runs every node of a pipeline in this process, one after another."""

    def run(self, pipeline: Pipeline, run_id: str | None = None) -> RunResult:
        run_id = run_id or new_run_id()
        run_dir = os.path.join(pipeline.root, run_id)
        os.makedirs(run_dir, exist_ok=True)
        record: dict[str, Any] = {"pipeline": pipeline.name, "run_id": run_id, "state": "running",
                                  "started": time.time(), "components": {}}
        artifacts: dict[OutputRef, Artifact] = {}
        record_path = os.path.join(run_dir, "run.json")
        for index, node in enumerate(pipeline.ordered(), start=1):
            log.info("[%d/%d] %s (%s)", index, len(pipeline.nodes), node.id, node.spec.name)
            entry = {"component": node.spec.name, "order": index, "state": "running",
                     "started": time.time()}
            record["components"][node.id] = entry
            write_json_atomic(record_path, record)
            try:
                outputs = self._execute(node, run_dir, artifacts)
            except Exception as exc:
                entry.update(state="failed", error=f"{type(exc).__name__}: {exc}",
                             seconds=round(time.time() - entry["started"], 3))
                record["state"] = "failed"
                write_json_atomic(record_path, record)
                raise PipelineRunError(f"component {node.id} failed: {exc}") from exc
            for name, artifact in outputs.items():
                artifacts[OutputRef(node.id, name)] = artifact
            entry.update(state="complete", seconds=round(time.time() - entry["started"], 3),
                         outputs={name: dataclasses.asdict(a) for name, a in outputs.items()})
            write_json_atomic(record_path, record)
            log.info("[%d/%d] %s done in %.1f s", index, len(pipeline.nodes), node.id, entry["seconds"])
        record.update(state="complete", finished=time.time())
        write_json_atomic(record_path, record)
        return RunResult(run_id, run_dir, artifacts)

    @staticmethod
    def _execute(node: Node, run_dir: str, artifacts: Mapping[OutputRef, Artifact]) -> dict[str, Artifact]:
        inputs = {name: artifacts[ref] for name, ref in node.inputs.items()}
        node.spec.check_inputs(inputs)
        node_dir = os.path.join(run_dir, node.id)
        staged: dict[str, Artifact] = {}
        for name, type_name in node.spec.outputs.items():
            tmp_uri = os.path.join(node_dir, f".tmp-{name}")
            shutil.rmtree(tmp_uri, ignore_errors=True)
            os.makedirs(tmp_uri)
            staged[name] = Artifact(type_name, tmp_uri)
        node.spec.executor(inputs, staged, node.params)
        published: dict[str, Artifact] = {}
        for name, artifact in staged.items():
            final_uri = os.path.join(node_dir, name)
            shutil.rmtree(final_uri, ignore_errors=True)
            os.replace(artifact.uri, final_uri)
            published[name] = Artifact(artifact.type_name, final_uri, artifact.properties)
        return published


def describe(nodes: Iterable[Node]) -> str:
    """One line per node: ``id (component) <- inputs``; for logs and docs."""
    lines = []
    for node in nodes:
        sources = ", ".join(f"{r.node_id}.{r.output_name}" for r in node.inputs.values())
        lines.append(f"{node.id} ({node.spec.name})" + (f" <- {sources}" if sources else ""))
    return "\n".join(lines)
