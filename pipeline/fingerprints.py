"""Cache keys: what a component execution depends on, hashed.

An execution's fingerprint covers the component's name, its parameters, its
input artifacts (by URI: a URI names one immutable published artifact), the
source code the component runs (its executor's module and the ``musicrec``
modules it imports: new code reruns it) and, for ExampleGens, the input files themselves (path, size,
modification time), so new or changed data invalidates the cache.

Remote inputs (``gs://...``) cannot be listed cheaply here: a node reading
them is never served from the cache (:func:`cacheable`).
"""
from __future__ import annotations

import functools
import glob
import hashlib
import importlib
import json
import os
import types
from typing import Any, Iterable, Mapping

from musicrec.components.base import Artifact

# Bump when executors change what they write for the same inputs, so old
# cached outputs are not reused.
FINGERPRINT_VERSION = 1


def file_stats(paths: Iterable[str]) -> list[tuple[str, int, int]]:
    """``(absolute path, size in bytes, mtime in ns)`` of every file under ``paths``, sorted.

    Folders are walked recursively; hidden files (``.name``) are skipped, as
    the readers skip them. A missing path is listed with size and mtime -1 so
    its later appearance changes the fingerprint.
    """
    stats: list[tuple[str, int, int]] = []
    for pattern in paths:
        if "://" in pattern:  # remote URIs: only the name is known here
            stats.append((pattern, -1, -1))
            continue
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        stats += [(pattern, -1, -1)] if not matches else []
        for path in matches:
            stats += _local_stats(os.path.abspath(path))
    return sorted(stats)


def _local_stats(path: str) -> list[tuple[str, int, int]]:
    """Stats of one local file, or of every visible file below one folder."""
    if os.path.isfile(path):
        info = os.stat(path)
        return [(path, info.st_size, info.st_mtime_ns)]
    if not os.path.isdir(path):
        return [(path, -1, -1)]
    stats = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                full = os.path.join(root, name)
                info = os.stat(full)
                stats.append((full, info.st_size, info.st_mtime_ns))
    return stats


def cacheable(data_paths: Iterable[str]) -> bool:
    """False when a data path is remote, so its changes cannot be seen here."""
    return not any("://" in path for path in data_paths)


def module_closure(module_names: Iterable[str]) -> list[str]:
    """The ``musicrec.*`` modules reachable from ``module_names`` through module-level imports, sorted.

    Follows every module-level name that is a ``musicrec`` module or was
    defined in one (``from musicrec.x import f``). Imports made inside
    functions are not seen: name those modules explicitly.
    """
    seen: set[str] = set()
    stack = [name for name in module_names if name.startswith("musicrec.")]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for value in vars(importlib.import_module(name)).values():
            dependency = (value.__name__ if isinstance(value, types.ModuleType)
                          else getattr(value, "__module__", None))
            if isinstance(dependency, str) and dependency.startswith("musicrec.") \
                    and dependency not in seen:
                stack.append(dependency)
    return sorted(seen)


@functools.lru_cache(maxsize=None)
def _source_digest(module_name: str) -> str:
    """SHA-256 of one module's source, once per process (the code it runs)."""
    path = getattr(importlib.import_module(module_name), "__file__", None)
    if not path:
        return ""
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def code_fingerprint(module_names: Iterable[str]) -> dict[str, str]:
    """Module name → source digest for the closure of ``module_names``.

    Only the code a component runs counts, so an edit to one component does
    not invalidate the others' caches.
    """
    return {name: _source_digest(name) for name in module_closure(module_names)}


def fingerprint(component: str, params: Mapping[str, Any], inputs: Mapping[str, Artifact],
                data_paths: Iterable[str] = (), code_modules: Iterable[str] = ()) -> str:
    """The hex SHA-256 of everything an execution depends on.

    ``code_modules``: the executor's module and any module it loads lazily
    (a model kind's train and evaluate modules); their import closure is hashed.
    """
    payload = {
        "version": FINGERPRINT_VERSION,
        "component": component,
        "code": code_fingerprint(code_modules),
        "params": params,
        "inputs": {name: [a.type_name, a.uri] for name, a in sorted(inputs.items())},
        "data": file_stats(data_paths),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
