"""The genre evaluation's own HTML page: the Keras model and the classical baseline side by side.

The evaluator writes it as ``report.html`` next to ``metrics.json`` and the
confusion-matrix PNGs in the evaluation artifact, which it links by relative
path (open the folder, open the page). Self-contained otherwise: no
scripts, no network.
"""
from __future__ import annotations

import html
from typing import Any, Mapping

REPORT_FILE = "report.html"

# Rows of the side-by-side table: (label, key in the model's metrics, key in the baseline's).
_SCORES = (("track accuracy", "track_accuracy", "track_accuracy"),
           ("macro-F1 (track level)", "macro_f1", "macro_f1"),
           ("segment accuracy", "segment_accuracy", None),
           ("test tracks", "n_tracks", "n_tracks"))


def _cell(value: Any) -> str:
    if value is None:
        return "<td>–</td>"
    if isinstance(value, float):
        return f"<td>{value:.3f}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_evaluation_report(metrics: Mapping[str, Any], baseline: Mapping[str, Any] | None,
                             images: Mapping[str, str]) -> str:
    """The HTML page.

    Args:
        metrics: the Keras model's scores (:func:`musicrec.models.genre.evaluate.evaluate`).
        baseline: the classical baseline's scores
            (:func:`~musicrec.models.genre.evaluate.evaluate_classical_baseline`),
            or ``{"error": reason}`` / ``None`` when it was not computed.
        images: ``{caption: file name}`` of PNGs beside the page.

    Returns:
        The page as a string.
    """
    scored = baseline is not None and "error" not in baseline
    parts = ["<h1>Genre evaluation</h1>", "<h2>Keras model and classical baseline, same test split</h2>"]
    if scored:
        parts.append(_table(
            ["score", "Keras model", "classical baseline"],
            [[label, metrics.get(model_key), baseline.get(base_key) if base_key else None]
             for label, model_key, base_key in _SCORES]))
        parts.append(f"<p>baseline: {html.escape(str(baseline.get('model', '')))} on "
                     f"{html.escape(str(baseline.get('features', '')))}</p>")
    else:
        reason = (baseline or {}).get("error", "not run")
        parts.append(f"<p>classical baseline not computed: {html.escape(str(reason))}</p>")
        parts.append(_table(["score", "Keras model"],
                            [[label, metrics.get(key)] for label, key, _ in _SCORES]))
    parts.append("<h2>Per genre (track level)</h2>")
    header = ["genre", "support", "model precision", "model recall"]
    if scored:
        header += ["baseline precision", "baseline recall"]
    rows = []
    for genre, scores in (metrics.get("per_class") or {}).items():
        row = [genre, scores.get("support"), scores.get("precision"), scores.get("recall")]
        if scored:
            theirs = (baseline.get("per_class") or {}).get(genre, {})
            row += [theirs.get("precision"), theirs.get("recall")]
        rows.append(row)
    parts.append(_table(header, rows))
    for caption, file_name in images.items():
        parts.append(f"<figure><img src='{html.escape(file_name)}' alt='{html.escape(caption)}' "
                     f"width='480'><figcaption>{html.escape(caption)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:960px;margin:2em auto}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
             "padding:2px 6px;font-size:13px}figure{display:inline-block}")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Genre evaluation</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


__all__ = ["REPORT_FILE", "render_evaluation_report"]
