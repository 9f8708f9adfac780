"""Input spans: data organised as ``<input>/span=<id>/...`` (for example ``span=2026-11-24``).

An ExampleGen reads the latest span, a rolling window of the newest N spans,
or all of them (config ``spans.policy`` and ``spans.window``). Span ids sort
as integers when they are all digits, else as text (ISO dates sort by time).
An input without ``span=`` folders is one unnamed span: read as a whole.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

SPAN_PREFIX = "span="
POLICIES = ("latest", "window", "all")


@dataclasses.dataclass(frozen=True)
class SpanSelection:
    """The folders an ExampleGen reads and the span ids they hold (empty when unspanned)."""

    paths: list[str]
    span_ids: list[str]


def list_spans(path: str) -> list[tuple[str, str]]:
    """``(span id, folder)`` of every ``span=<id>`` folder directly under ``path``, oldest first."""
    if "://" in path or not os.path.isdir(path):
        return []
    spans = [(name[len(SPAN_PREFIX):], os.path.join(path, name)) for name in os.listdir(path)
             if name.startswith(SPAN_PREFIX) and os.path.isdir(os.path.join(path, name))]
    numeric = all(span_id.isdigit() for span_id, _ in spans)
    return sorted(spans, key=lambda s: (int(s[0]), s[0]) if numeric else (0, s[0]))


def select_spans(paths: Sequence[str], policy: str = "latest", window: int = 1) -> SpanSelection:
    """Resolves each input path to the span folders the policy picks.

    Args:
        paths: input files or folders; folders with ``span=`` subfolders are spanned.
        policy: ``latest`` (the newest span), ``window`` (the newest ``window``
            spans) or ``all``.
        window: spans in a rolling window, at least 1.

    Raises:
        ValueError: unknown policy or a window below 1.
    """
    if policy not in POLICIES:
        raise ValueError(f"spans.policy must be one of {POLICIES}, got {policy!r}")
    if window < 1:
        raise ValueError(f"spans.window must be at least 1, got {window}")
    chosen_paths: list[str] = []
    chosen_ids: list[str] = []
    for path in paths:
        spans = list_spans(path)
        if not spans:
            chosen_paths.append(path)
            continue
        keep = {"latest": spans[-1:], "window": spans[-window:], "all": spans}[policy]
        chosen_paths += [folder for _, folder in keep]
        chosen_ids += [span_id for span_id, _ in keep if span_id not in chosen_ids]
    return SpanSelection(chosen_paths, chosen_ids)
