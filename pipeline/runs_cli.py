"""What ``musicrec runs``, ``musicrec runs show ID``, ``musicrec config show`` and
``musicrec schedule`` print and do; ``musicrec/cli.py`` only parses flags.

Every function takes parsed values and returns text (or, for the schedule,
the runs made), so the commands are testable without a shell.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any, Callable, Mapping

from musicrec.pipeline.config import dump_config, load_config
from musicrec.pipeline.runner import RUN_RECORD, read_run_record


def runs_root(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "runs")


def _when(seconds: float | None) -> str:
    if not seconds:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def run_records(workdir: str) -> list[dict[str, Any]]:
    """Every run record under ``<workdir>/runs``, oldest first."""
    root = runs_root(workdir)
    if not os.path.isdir(root):
        return []
    records = [read_run_record(os.path.join(root, name)) for name in sorted(os.listdir(root))
               if os.path.isfile(os.path.join(root, name, RUN_RECORD))]
    return [r for r in records if r]


def _pushes(record: Mapping[str, Any]) -> list[str]:
    pushed = []
    for entry in record.get("components", {}).values():
        for artifact in (entry.get("outputs") or {}).values():
            props = artifact.get("properties", {})
            if artifact.get("type_name") == "PushedModel" and props.get("pushed") \
                    and entry.get("state") == "complete":
                pushed.append(f"{props.get('model_name')} v{props.get('version')}")
    return pushed


def list_runs(workdir: str) -> str:
    """``musicrec runs --workdir W``: one line per run (id, state, start, seconds, executed/cached, pushes)."""
    records = run_records(workdir)
    if not records:
        return f"no runs under {runs_root(workdir)}"
    lines = [f"{'run id':<24} {'state':<9} {'started (UTC)':<19} {'seconds':>8}  "
             f"{'ran':>3} {'cached':>6}  pushed"]
    for record in records:
        states = [c.get("state") for c in record.get("components", {}).values()]
        seconds = (record.get("finished") or 0) - (record.get("started") or 0)
        lines.append(f"{record['run_id']:<24} {record.get('state', '?'):<9} "
                     f"{_when(record.get('started')):<19} "
                     f"{(f'{seconds:.1f}' if record.get('finished') else '-'):>8}  "
                     f"{states.count('complete'):>3} {states.count('cached'):>6}  "
                     f"{', '.join(_pushes(record)) or '-'}")
    return "\n".join(lines)


def _summarise_properties(props: Mapping[str, Any]) -> str:
    """Scalar properties (and spans, and the trainer's final metrics) as ``k=v`` pairs."""
    shown = {k: v for k, v in props.items() if not isinstance(v, (dict, list)) or k == "spans"}
    for name, value in (props.get("train_metrics") or {}).items():
        shown[f"train.{name}"] = round(value, 4) if isinstance(value, float) else value
    return ", ".join(f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in sorted(shown.items()))


def _store(workdir: str, metadata: Mapping[str, Any] | None):
    from musicrec.pipeline import metadata as md

    return md.MetadataStore(md.connection_config(metadata, runs_root(workdir)))


def show_run(workdir: str, run_id: str, metadata: Mapping[str, Any] | None = None) -> str:
    """``musicrec runs show ID``: each component's state, timing, artifacts, metrics and lineage.

    Raises:
        LookupError: no such run.
    """
    run_dir = os.path.join(runs_root(workdir), run_id)
    record = read_run_record(run_dir)
    if record is None:
        known = ", ".join(r["run_id"] for r in run_records(workdir)[-5:]) or "none"
        raise LookupError(f"no run {run_id!r} under {runs_root(workdir)} (latest: {known})")
    lines = [f"run {run_id}: {record.get('state')}, started {_when(record.get('started'))} UTC"
             + (f", resumed {record['resumed']}x" if record.get("resumed") else "")
             + (", no cache" if record.get("no_cache") else "")]
    components = sorted(record.get("components", {}).items(), key=lambda kv: kv[1].get("order", 0))
    for node_id, entry in components:
        note = ""
        if entry.get("cached_from_execution"):
            note = f" (cache hit: reused execution {entry['cached_from_execution']})"
        lines.append(f"  {node_id} [{entry.get('component')}]: {entry.get('state')}"
                     f" in {entry.get('seconds', '-')} s{note}")
        if entry.get("error"):
            lines.append(f"    error: {entry['error']}")
        for name, uri in (entry.get("inputs") or {}).items():
            lines.append(f"    in  {name}: {uri}")
        for name, artifact in (entry.get("outputs") or {}).items():
            lines.append(f"    out {name} ({artifact['type_name']}): {artifact['uri']}")
            summary = _summarise_properties(artifact.get("properties", {}))
            if summary:
                lines.append(f"        {summary}")
    lineage = _lineage_lines(workdir, record, metadata)
    if lineage:
        lines += ["  lineage:", *lineage]
    if record.get("report"):
        lines.append(f"  report: {record['report']}")
    return "\n".join(lines)


def _lineage_lines(workdir: str, record: Mapping[str, Any],
                   metadata: Mapping[str, Any] | None) -> list[str]:
    from musicrec.pipeline import metadata as md

    pushed = []
    for entry in record.get("components", {}).values():
        for artifact in (entry.get("outputs") or {}).values():
            props = artifact.get("properties", {})
            if artifact.get("type_name") == "PushedModel" and props.get("pushed"):
                pushed.append((props["model_name"], int(props["version"])))
    if not pushed:
        return []
    store = _store(workdir, metadata)
    lines = []
    for model_name, version in pushed:
        try:
            answer = md.lineage_of_version(store, model_name, version)
        except LookupError as exc:
            lines.append(f"    {model_name} v{version}: {exc}")
            continue
        lines.append(f"    {model_name} v{version} <- model {answer['model']} (run {answer['run_id']}) "
                     f"<- examples {answer['examples']} <- spans "
                     f"{', '.join(answer['spans']) or 'unspanned input'}")
    return lines


def show_config(config_path: str | None) -> str:
    """``musicrec config show [--config FILE]``: the effective config as YAML (defaults merged)."""
    header = ("# effective configuration: defaults from musicrec/pipeline/config.py"
              + (f" overridden by {config_path}" if config_path else "") + "\n")
    return header + dump_config(load_config(config_path))


def schedule(run_once: Callable[[], Any], *, every: str | None, cron: str | None,
             max_runs: int | None, workdir: str) -> int:
    """``musicrec schedule``: runs ``run_once`` on the schedule, logging to ``<workdir>/runs/schedule.jsonl``.

    Returns the exit code: 0 when every run succeeded, 1 when any failed
    (only reached with ``max_runs``).
    """
    from musicrec.pipeline.schedule import run_on_schedule

    os.makedirs(runs_root(workdir), exist_ok=True)
    history = run_on_schedule(run_once, every=every, cron=cron, max_runs=max_runs,
                              log_path=os.path.join(runs_root(workdir), "schedule.jsonl"))
    return 0 if all(run.ok for run in history) else 1
