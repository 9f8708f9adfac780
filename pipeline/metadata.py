"""ML Metadata (MLMD) for pipeline runs: artifacts, executions, events, contexts.

Every component run is an MLMD execution (type = the component's name, e.g.
``trainer[genre]``) with custom properties ``node_id``, ``run_id``,
``pipeline_root``, ``fingerprint``, ``parameters`` (JSON), ``started`` and
``finished`` (Unix seconds) and, on failure, ``error``. Its inputs and
outputs are MLMD artifacts (type = ``Artifact.type_name``, ``uri``, the
artifact's ``properties`` as custom properties) linked by INPUT / OUTPUT
events whose path is the input or output name. Executions belong to two
contexts: the pipeline (``pipeline``, by name) and the run (``pipeline_run``,
by run id).

A cache hit is an execution in state CACHED whose OUTPUT events point at the
artifacts of the earlier COMPLETE execution it reuses, so lineage stays one
graph.

The store is SQLite at ``<pipeline root>/metadata.sqlite`` by default; see
:func:`connection_config` for MySQL.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Iterable, Mapping

from google.protobuf import json_format, struct_pb2
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from musicrec.components.base import Artifact

SQLITE_FILENAME = "metadata.sqlite"
PIPELINE_CONTEXT = "pipeline"
RUN_CONTEXT = "pipeline_run"
State = mlmd.Execution.State


def connection_config(section: Mapping[str, Any] | None, pipeline_root: str) -> mlmd.ConnectionConfig:
    """The MLMD connection for a config's ``metadata`` section.

    ``{"sqlite_path": None, "mysql": None}`` (the default) gives SQLite at
    ``<pipeline_root>/metadata.sqlite``. ``mysql`` is a mapping with ``host``,
    ``port`` (default 3306), ``database``, ``user`` and ``password_env`` (the
    name of the environment variable holding the password, so that no secret
    lives in the config file).
    """
    section = dict(section or {})
    config = mlmd.ConnectionConfig()
    mysql = section.get("mysql")
    if mysql:
        unknown = set(mysql) - {"host", "port", "database", "user", "password_env"}
        if unknown or not mysql.get("host") or not mysql.get("database"):
            raise ValueError(f"metadata.mysql needs host and database (and optionally port, user, "
                             f"password_env); unknown keys: {sorted(unknown)}")
        config.mysql.host = str(mysql["host"])
        config.mysql.port = int(mysql.get("port", 3306))
        config.mysql.database = str(mysql["database"])
        config.mysql.user = str(mysql.get("user", ""))
        if mysql.get("password_env"):
            config.mysql.password = os.environ.get(str(mysql["password_env"]), "")
        return config
    path = section.get("sqlite_path") or os.path.join(pipeline_root, SQLITE_FILENAME)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    config.sqlite.filename_uri = os.path.abspath(path)
    config.sqlite.connection_mode = mlmd.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return config


def _to_value(value: Any, target: mlmd.Value) -> None:
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    else:
        # Lists, dicts and None round-trip through a Struct holding {"v": value}.
        struct = struct_pb2.Struct()
        struct.update({"v": json.loads(json.dumps(value, default=str))})
        target.struct_value.CopyFrom(struct)


def _from_value(value: mlmd.Value) -> Any:
    which = value.WhichOneof("value")
    if which == "struct_value":
        return json_format.MessageToDict(value.struct_value).get("v")
    return getattr(value, which) if which else None


def properties_of(proto) -> dict[str, Any]:
    """An MLMD artifact's or execution's custom properties as plain Python values."""
    return {key: _from_value(value) for key, value in proto.custom_properties.items()}


class MetadataStore:
    """A thin, typed layer over ``ml_metadata``'s ``MetadataStore`` for the runner."""

    def __init__(self, config: mlmd.ConnectionConfig):
        self.store = metadata_store.MetadataStore(config)
        self._type_ids: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------ types and contexts

    def _type_id(self, kind: str, name: str) -> int:
        key = (kind, name)
        if key not in self._type_ids:
            if kind == "artifact":
                self._type_ids[key] = self.store.put_artifact_type(mlmd.ArtifactType(name=name))
            elif kind == "execution":
                self._type_ids[key] = self.store.put_execution_type(mlmd.ExecutionType(name=name))
            else:
                self._type_ids[key] = self.store.put_context_type(mlmd.ContextType(name=name))
        return self._type_ids[key]

    def _context(self, type_name: str, name: str, properties: Mapping[str, Any] = {}) -> int:
        existing = self.store.get_context_by_type_and_name(type_name, name)
        if existing is not None:
            return existing.id
        context = mlmd.Context(type_id=self._type_id("context", type_name), name=name)
        for key, value in properties.items():
            _to_value(value, context.custom_properties[key])
        return self.store.put_contexts([context])[0]

    def run_contexts(self, pipeline_name: str, pipeline_root: str, run_id: str) -> list[int]:
        """The pipeline's and this run's context ids, created when new."""
        pipeline_id = self._context(PIPELINE_CONTEXT, pipeline_name, {"pipeline_root": pipeline_root})
        run_context_id = self._context(RUN_CONTEXT, f"{pipeline_name}.{run_id}",
                                       {"run_id": run_id, "pipeline_root": pipeline_root})
        return [pipeline_id, run_context_id]

    # ------------------------------------------------------------------ artifacts

    def put_artifact(self, artifact: Artifact) -> int:
        """Registers (or updates) ``artifact``; sets and returns its ``mlmd_id``."""
        proto = mlmd.Artifact(type_id=self._type_id("artifact", artifact.type_name),
                              uri=artifact.uri, state=mlmd.Artifact.LIVE)
        if artifact.mlmd_id is not None:
            proto.id = artifact.mlmd_id
        for key, value in artifact.properties.items():
            _to_value(value, proto.custom_properties[key])
        artifact.mlmd_id = self.store.put_artifacts([proto])[0]
        return artifact.mlmd_id

    def artifact(self, artifact_id: int) -> Artifact:
        (proto,) = self.store.get_artifacts_by_id([artifact_id])
        (type_,) = self.store.get_artifact_types_by_id([proto.type_id])
        return Artifact(type_.name, proto.uri, properties_of(proto), mlmd_id=proto.id)

    # ------------------------------------------------------------------ executions

    def start_execution(self, component: str, node_id: str, run_id: str, pipeline_root: str,
                        fingerprint: str, parameters: Mapping[str, Any],
                        inputs: Mapping[str, Artifact], contexts: Iterable[int]) -> int:
        """Records a RUNNING execution with its INPUT events; returns its id."""
        execution = mlmd.Execution(type_id=self._type_id("execution", component),
                                   last_known_state=State.RUNNING)
        for key, value in {"node_id": node_id, "run_id": run_id, "pipeline_root": pipeline_root,
                           "fingerprint": fingerprint, "started": time.time(),
                           "parameters": json.dumps(parameters, sort_keys=True, default=str)}.items():
            _to_value(value, execution.custom_properties[key])
        events = [(self._artifact_proto(a), self._event(mlmd.Event.INPUT, name))
                  for name, a in inputs.items()]
        execution_id, artifact_ids, _ = self.store.put_execution(
            execution, events, self._contexts(contexts), reuse_context_if_already_exist=True)
        for artifact, artifact_id in zip(inputs.values(), artifact_ids):
            artifact.mlmd_id = artifact_id
        return execution_id

    def finish_execution(self, execution_id: int, state: int, outputs: Mapping[str, Artifact] = {},
                         contexts: Iterable[int] = (), **properties: Any) -> None:
        """Sets the final state (COMPLETE, CACHED, FAILED, CANCELED) and records OUTPUT events.

        Outputs without an ``mlmd_id`` are registered as new artifacts; a
        cache hit passes the reused artifacts, which keep theirs.
        """
        (execution,) = self.store.get_executions_by_id([execution_id])
        execution.last_known_state = state
        for key, value in {"finished": time.time(), **properties}.items():
            _to_value(value, execution.custom_properties[key])
        for artifact in outputs.values():
            if artifact.mlmd_id is None:
                self.put_artifact(artifact)
        events = [(self._artifact_proto(a), self._event(mlmd.Event.OUTPUT, name))
                  for name, a in outputs.items()]
        self.store.put_execution(execution, events, self._contexts(contexts),
                                 reuse_context_if_already_exist=True)

    def _contexts(self, context_ids: Iterable[int]) -> list[mlmd.Context]:
        context_ids = list(context_ids)
        return list(self.store.get_contexts_by_id(context_ids)) if context_ids else []

    @staticmethod
    def _event(event_type: int, name: str) -> mlmd.Event:
        event = mlmd.Event(type=event_type)
        event.path.steps.add().key = name
        return event

    def _artifact_proto(self, artifact: Artifact) -> mlmd.Artifact:
        if artifact.mlmd_id is not None:
            (proto,) = self.store.get_artifacts_by_id([artifact.mlmd_id])
            return proto
        self.put_artifact(artifact)
        (proto,) = self.store.get_artifacts_by_id([artifact.mlmd_id])
        return proto

    def cancel_interrupted(self, pipeline_root: str) -> list[int]:
        """Marks this root's RUNNING executions CANCELED (their process died); returns their ids.

        Call only while holding the root's lock, so no live run owns them.
        """
        stale = [e for e in self.store.get_executions()
                 if e.last_known_state == State.RUNNING
                 and properties_of(e).get("pipeline_root") == pipeline_root]
        for execution in stale:
            execution.last_known_state = State.CANCELED
            _to_value("interrupted: the process running it stopped before it finished",
                      execution.custom_properties["error"])
        if stale:
            self.store.put_executions(stale)
        return [e.id for e in stale]

    # ------------------------------------------------------------------ queries

    def io(self, execution_id: int) -> tuple[dict[str, Artifact], dict[str, Artifact]]:
        """``(inputs, outputs)`` of an execution, by event path name."""
        inputs: dict[str, Artifact] = {}
        outputs: dict[str, Artifact] = {}
        for event in self.store.get_events_by_execution_ids([execution_id]):
            name = event.path.steps[0].key if event.path.steps else str(event.artifact_id)
            if event.type == mlmd.Event.INPUT:
                inputs[name] = self.artifact(event.artifact_id)
            elif event.type == mlmd.Event.OUTPUT:
                outputs[name] = self.artifact(event.artifact_id)
        return inputs, outputs

    def find_cached(self, component: str, fingerprint: str) -> tuple[int, dict[str, Artifact]] | None:
        """The newest COMPLETE execution of ``component`` with ``fingerprint`` whose outputs still exist.

        Returns ``(execution_id, outputs)`` or ``None``.
        """
        try:
            executions = self.store.get_executions_by_type(component)
        except Exception:  # the type is not registered yet: nothing ran
            return None
        for execution in sorted(executions, key=lambda e: e.id, reverse=True):
            if (execution.last_known_state != State.COMPLETE
                    or properties_of(execution).get("fingerprint") != fingerprint):
                continue
            _, outputs = self.io(execution.id)
            if outputs and all(os.path.exists(a.uri) for a in outputs.values()):
                return execution.id, outputs
        return None

    def producer(self, artifact_id: int) -> int | None:
        """The execution that first output the artifact (not a cache hit reusing it)."""
        producers = [e.execution_id for e in self.store.get_events_by_artifact_ids([artifact_id])
                     if e.type == mlmd.Event.OUTPUT]
        return min(producers) if producers else None

    def executions(self, run_id: str | None = None) -> list[mlmd.Execution]:
        executions = self.store.get_executions()
        if run_id is not None:
            executions = [e for e in executions if properties_of(e).get("run_id") == run_id]
        return sorted(executions, key=lambda e: e.id)

    def execution_type_name(self, execution: mlmd.Execution) -> str:
        (type_,) = self.store.get_execution_types_by_id([execution.type_id])
        return type_.name

    def latest_blessed_model(self, model_kind: str, *, exclude_uris: Iterable[str] = (),
                             exclude_trained_on: Iterable[str] = ()) -> Artifact | None:
        """The Model of the newest blessing evaluation of ``model_kind``: the one that was pushed.

        That is the final fit's model when one followed the evaluation (it is
        what serves), else the evaluated model.

        Args:
            model_kind: ``genre`` or ``next_track``.
            exclude_uris: skip these models (the candidate itself).
            exclude_trained_on: skip models trained on these examples URIs, so
                an unchanged rerun resolves what the first run resolved and
                stays a cache hit.
        """
        exclude_uris, exclude_trained_on = set(exclude_uris), set(exclude_trained_on)
        try:
            evaluations = self.store.get_artifacts_by_type("ModelEvaluation")
        except Exception:
            return None
        for evaluation in sorted(evaluations, key=lambda a: a.id, reverse=True):
            props = properties_of(evaluation)
            if props.get("kind") != model_kind or not props.get("blessed"):
                continue
            execution_id = self.producer(evaluation.id)
            if execution_id is None:
                continue
            inputs, _ = self.io(execution_id)
            model = inputs.get("model")
            if model is None or model.uri in exclude_uris or not os.path.isdir(model.uri):
                continue
            trainer_id = self.producer(model.mlmd_id)
            trained_on = self.io(trainer_id)[0].get("examples") if trainer_id else None
            if trained_on is not None and trained_on.uri in exclude_trained_on:
                continue
            return self._refit_of(evaluation.id) or model
        return None

    def _refit_of(self, evaluation_id: int) -> Artifact | None:
        """The model a final fit made after this blessed evaluation (what was pushed), if any."""
        consumers = sorted({e.execution_id for e in self.store.get_events_by_artifact_ids([evaluation_id])
                            if e.type == mlmd.Event.INPUT})
        for execution_id in consumers:
            refit = self.io(execution_id)[1].get("model")
            if refit is not None and refit.properties.get("refitted") and os.path.isdir(refit.uri):
                return refit
        return None

    def upstream(self, artifact_id: int) -> list[tuple[str, Artifact]]:
        """Every artifact the given one was derived from, nearest first, as ``(input name, artifact)``."""
        seen, order, frontier = {artifact_id}, [], [artifact_id]
        while frontier:
            current = frontier.pop(0)
            execution_id = self.producer(current)
            if execution_id is None:
                continue
            inputs, _ = self.io(execution_id)
            for name, artifact in inputs.items():
                if artifact.mlmd_id not in seen:
                    seen.add(artifact.mlmd_id)
                    order.append((name, artifact))
                    frontier.append(artifact.mlmd_id)
        return order

    def pushed_model(self, model_name: str, version: int) -> Artifact | None:
        """The PushedModel artifact that published ``<model_name>/<version>``."""
        try:
            pushed = self.store.get_artifacts_by_type("PushedModel")
        except Exception:
            return None
        for proto in pushed:
            props = properties_of(proto)
            if props.get("model_name") == model_name and props.get("pushed") \
                    and props.get("version") == version:
                return self.artifact(proto.id)
        return None


EXAMPLES_TYPES = ("AudioExamples", "Sessions")


def lineage_of_version(store: MetadataStore, model_name: str, version: int) -> dict[str, Any]:
    """Answers "which data span and which model produced serving version V".

    Returns ``{"model_name", "version", "pushed_model": uri, "model": uri,
    "examples": uri, "spans": [span ids], "run_id": the run that trained the
    model}``. Raises ``LookupError`` when no run pushed that version.
    """
    pushed = store.pushed_model(model_name, version)
    if pushed is None:
        raise LookupError(f"no pushed {model_name} version {version} in the metadata store")
    answer: dict[str, Any] = {"model_name": model_name, "version": version,
                              "pushed_model": pushed.uri, "model": None, "examples": None,
                              "spans": [], "run_id": None}
    for name, artifact in store.upstream(pushed.mlmd_id):
        if artifact.type_name == "Model" and answer["model"] is None:
            answer["model"] = artifact.uri
            trainer_id = store.producer(artifact.mlmd_id)
            if trainer_id is not None:
                (execution,) = store.store.get_executions_by_id([trainer_id])
                answer["run_id"] = properties_of(execution).get("run_id")
        if artifact.type_name in EXAMPLES_TYPES and answer["examples"] is None:
            answer["examples"] = artifact.uri
            answer["spans"] = list(artifact.properties.get("spans") or [])
    return answer
