"""A self-contained HTML report per run: ``<run_dir>/report.html``.

Sections: components (state, timing, cache hits), data statistics (each
ExampleGen's manifest and the spans it read), training curves (inline SVG,
so the file needs no plotting library and no network), evaluation (genre
per-class accuracy and confusion matrix when the evaluator reports one;
next-track metrics against the baselines), the blessing decision and the
push. Everything is read from the run record and the artifacts it names.
"""
from __future__ import annotations

import html
import json
import os
from typing import Any, Mapping, Sequence

from musicrec.atomic import write_text_atomic

REPORT_FILENAME = "report.html"
_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return _esc(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; floats shown with 4 decimals."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_number(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def svg_lines(series: Mapping[str, Sequence[float]], width: int = 420, height: int = 220,
              title: str = "") -> str:
    """An inline SVG line chart of per-epoch values (x: epoch, 1-based; y: value)."""
    series = {name: [float(v) for v in values] for name, values in series.items() if values}
    if not series:
        return ""
    values = [v for vs in series.values() for v in vs]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    epochs = max(len(vs) for vs in series.values())
    left, right, top, bottom = 50, 10, 20, 30
    plot_w, plot_h = width - left - right, height - top - bottom

    def point(i: int, v: float) -> str:
        x = left + (plot_w * i / max(epochs - 1, 1))
        y = top + plot_h * (1 - (v - low) / span)
        return f"{x:.1f},{y:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 18 * len(series)}">',
             f'<text x="{left}" y="14" font-size="12">{_esc(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
             f'<text x="2" y="{top + 10}" font-size="10">{high:.3g}</text>',
             f'<text x="2" y="{top + plot_h}" font-size="10">{low:.3g}</text>',
             f'<text x="{left}" y="{top + plot_h + 14}" font-size="10">epoch 1</text>',
             f'<text x="{left + plot_w - 40}" y="{top + plot_h + 14}" font-size="10">epoch {epochs}</text>']
    for n, (name, vs) in enumerate(sorted(series.items())):
        colour = _COLOURS[n % len(_COLOURS)]
        points = " ".join(point(i, v) for i, v in enumerate(vs))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        parts.append(f'<text x="{left}" y="{height + 14 + 18 * n}" font-size="11" fill="{colour}">'
                     f'{_esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _outputs_by_type(record: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """``(node id, artifact type, artifact fields)`` for every output in the record, in run order."""
    found = []
    components = sorted(record.get("components", {}).items(), key=lambda kv: kv[1].get("order", 0))
    for node_id, entry in components:
        for artifact in (entry.get("outputs") or {}).values():
            found.append((node_id, artifact["type_name"], artifact))
    return found


def _components_section(record: Mapping[str, Any]) -> str:
    rows = []
    for node_id, entry in sorted(record.get("components", {}).items(),
                                 key=lambda kv: kv[1].get("order", 0)):
        note = entry.get("error") or (f"reused execution {entry['cached_from_execution']}"
                                      if entry.get("cached_from_execution") else "")
        rows.append([node_id, entry.get("state"), entry.get("seconds", ""), note])
    return "<h2>Components</h2>" + table(["component", "state", "seconds", "note"], rows)


def _data_section(node_id: str, artifact: Mapping[str, Any]) -> str:
    manifest = _read_json(os.path.join(artifact["uri"], "manifest.json")) or {}
    props = artifact.get("properties", {})
    spans = props.get("spans") or []
    rows = [[key, json.dumps(value) if isinstance(value, (dict, list)) else value]
            for key, value in sorted(manifest.items())
            if not isinstance(value, dict) or len(json.dumps(value)) < 400]
    return (f"<h3>{_esc(node_id)} ({_esc(artifact['type_name'])})</h3>"
            f"<p>spans: {_esc(', '.join(spans) or 'unspanned input')}</p>"
            + table(["statistic", "value"], rows))


def _training_section(node_id: str, artifact: Mapping[str, Any]) -> str:
    metrics = _read_json(os.path.join(artifact["uri"], "train_metrics.json")) or {}
    history = metrics.get("history") or {}
    losses = {k: v for k, v in history.items() if "loss" in k}
    others = {k: v for k, v in history.items() if "loss" not in k}
    charts = svg_lines(losses, title="loss") + svg_lines(others, title="metrics")
    warm = artifact.get("properties", {}).get("warm_start")
    return (f"<h3>{_esc(node_id)}</h3>" + (f"<p>warm start: {_esc(warm)}</p>" if warm else "")
            + (charts or "<p>no training history</p>"))


def _confusion_table(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> str:
    rows = [[labels[i], *row] for i, row in enumerate(matrix)]
    return "<p>rows: true genre, columns: predicted</p>" + table(["true \\ predicted", *labels], rows)


def _evaluation_section(node_id: str, artifact: Mapping[str, Any]) -> str:
    report = _read_json(os.path.join(artifact["uri"], "metrics.json")) or {}
    metrics = report.get("metrics", {})
    blessing = report.get("blessing", {})
    parts = [f"<h3>{_esc(node_id)}</h3>"]
    if report.get("kind") == "genre":
        parts.append(table(["metric", "value"], [[k, metrics.get(k)] for k in (
            "track_accuracy", "segment_accuracy", "chance_accuracy", "majority_class_accuracy",
            "n_tracks", "n_segments")]))
        per_class = metrics.get("per_class_accuracy") or {}
        parts.append(table(["genre", "track accuracy", "tracks"],
                           [[g, a, (metrics.get("tracks_per_class") or {}).get(g)]
                            for g, a in per_class.items()]))
        if metrics.get("confusion_matrix"):
            parts.append(_confusion_table(metrics["confusion_matrix"], metrics.get("labels", [])))
        else:
            parts.append("<p>no confusion matrix in this evaluation</p>")
    elif report.get("kind") == "next_track":
        recommenders = {"model": metrics.get("model", {}), **{
            f"baseline: {name}": values for name, values in (metrics.get("baselines") or {}).items()}}
        keys = sorted({k for values in recommenders.values() for k in values
                       if isinstance(values.get(k), (int, float))},
                      key=lambda k: (k.split("@")[0], int(k.split("@")[1]) if "@" in k else 0))
        parts.append(table(["recommender", *keys],
                           [[name, *[values.get(k, "") for k in keys]]
                            for name, values in recommenders.items()]))
    baseline = report.get("baseline_model")
    if baseline:
        parts.append(f"<p>previous blessed model: {_esc(baseline.get('uri'))}</p>")
    verdict = "BLESSED" if blessing.get("blessed") else "NOT blessed"
    parts.append(f"<p class='decision'><b>{verdict}</b>: {_esc(blessing.get('reason', ''))}</p>")
    return "".join(parts)


def _push_section(node_id: str, artifact: Mapping[str, Any]) -> str:
    push = artifact.get("properties", {})
    if push.get("pushed"):
        text = f"pushed {push.get('model_name')} version {push.get('version')} to {push.get('path')}"
    else:
        text = f"did not push {push.get('model_name')}: {push.get('reason')}"
    return f"<p>{_esc(node_id)}: {_esc(text)}</p>"


def render(record: Mapping[str, Any]) -> str:
    """The report's HTML for a run record (``run.json``)."""
    sections = {"data": [], "training": [], "evaluation": [], "push": []}
    for node_id, type_name, artifact in _outputs_by_type(record):
        if type_name in ("AudioExamples", "Sessions"):
            sections["data"].append(_data_section(node_id, artifact))
        elif type_name == "Model":
            sections["training"].append(_training_section(node_id, artifact))
        elif type_name == "ModelEvaluation":
            sections["evaluation"].append(_evaluation_section(node_id, artifact))
        elif type_name == "PushedModel":
            sections["push"].append(_push_section(node_id, artifact))
    titles = {"data": "Data statistics", "training": "Training curves",
              "evaluation": "Evaluation and blessing", "push": "Push"}
    body = "".join(f"<h2>{titles[k]}</h2>" + "".join(v) for k, v in sections.items() if v)
    style = ("body{font-family:sans-serif;max-width:960px;margin:2em auto}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
             "padding:2px 6px;font-size:13px}.decision{font-size:15px}")
    title = f"musicrec run {record.get('run_id')}"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{style}</style></head><body><h1>{_esc(title)}</h1>"
            f"<p>state: <b>{_esc(record.get('state'))}</b></p>"
            + _components_section(record) + body + "</body></html>")


def write_report(run_dir: str, record: Mapping[str, Any]) -> str:
    """Writes ``<run_dir>/report.html`` atomically; returns its path."""
    path = os.path.join(run_dir, REPORT_FILENAME)
    write_text_atomic(path, render(record))
    return path
