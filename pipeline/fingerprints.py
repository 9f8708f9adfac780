"""Cache keys: what a component execution depends on, hashed.

An execution's fingerprint covers the component's name, its parameters, its
input artifacts (by URI: a URI names one immutable published artifact), the
source code the component runs (its executor's module and the ``musicrec``
modules it imports, inside functions too: new code reruns it) and, for
ExampleGens, the input files themselves (path, size, modification time), so
new or changed data invalidates the cache.

Remote inputs (``gs://...``) cannot be listed cheaply here: a node reading
them is never served from the cache (:func:`cacheable`).
"""
from __future__ import annotations

import ast
import functools
import glob
import hashlib
import importlib.util
import json
import os
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


# The packages setup.py installs from their own folders (``musicrec.pipeline`` is
# ``pipeline/``, ...); every other ``musicrec`` module lies below one of them.
SOURCE_PACKAGES = ("musicrec", "musicrec.pipeline", "musicrec.components", "musicrec.models",
                   "musicrec.serving")


@functools.lru_cache(maxsize=None)
def package_folders() -> dict[str, str]:
    """Package name → the folder it is installed from, for :data:`SOURCE_PACKAGES`.

    Read from the installed packages (setup.py's ``package_dir`` map), so an
    editable and a regular install both resolve; only ``musicrec``'s own
    ``__init__`` runs to find them.
    """
    folders = {}
    for package in SOURCE_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(f"{package} is not installed as a package")
        folders[package] = list(spec.submodule_search_locations)[0]
    return folders


def module_file(module_name: str) -> str | None:
    """The source file of a ``musicrec`` module (a package's ``__init__.py``), or None.

    None for anything that is not a module below :func:`package_folders`: a
    name defined in a module (``musicrec.x.f``) or a module outside ``musicrec``.
    """
    folders = package_folders()
    parts = module_name.split(".")
    for length in range(len(parts), 0, -1):
        folder = folders.get(".".join(parts[:length]))
        if folder is None:
            continue
        base = os.path.join(folder, *parts[length:])
        for candidate in (os.path.join(base, "__init__.py"), base + ".py"):
            if os.path.isfile(candidate):
                return candidate
        return None
    return None


def _imported_names(tree: ast.AST, module_name: str, is_package: bool) -> set[str]:
    """Every module name an ``import`` anywhere in ``tree`` may load (inside functions too).

    ``from x import y`` yields both ``x`` and ``x.y`` (``y`` may be a
    submodule); relative imports are resolved against ``module_name``.
    Imports under ``if TYPE_CHECKING:`` count too: an over-wide closure only
    costs a needless rerun, a narrow one a stale cache.
    """
    package = module_name if is_package else module_name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _with_parent_packages(module_name: str) -> list[str]:
    """``a.b.c`` → ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages' ``__init__``."""
    parts = module_name.split(".")
    return [".".join(parts[:length]) for length in range(1, len(parts) + 1)]


@functools.lru_cache(maxsize=None)
def _read_module(module_name: str, path: str) -> tuple[str, frozenset[str]]:
    """One module's source digest (SHA-256 hex) and the ``musicrec`` modules it imports.

    Read once per process: the digest is of the code this process runs.
    """
    with open(path, "rb") as handle:
        source = handle.read()
    tree = ast.parse(source, filename=path)
    is_package = os.path.basename(path) == "__init__.py"
    imports = {candidate for name in _imported_names(tree, module_name, is_package)
               for candidate in _with_parent_packages(name)
               if candidate.split(".")[0] == "musicrec" and module_file(candidate)}
    imports.discard(module_name)
    return hashlib.sha256(source).hexdigest(), frozenset(imports)


def module_imports(module_name: str) -> frozenset[str]:
    """The ``musicrec`` modules ``module_name``'s source imports, anywhere in its code.

    Includes the packages whose ``__init__`` such an import runs. Empty for a
    name that is no ``musicrec`` source module.
    """
    path = module_file(module_name)
    return _read_module(module_name, path)[1] if path else frozenset()


def module_closure(module_names: Iterable[str]) -> list[str]:
    """The ``musicrec`` modules reachable from ``module_names`` through imports, sorted.

    Walks each module's source (:func:`module_imports`), so imports made
    inside functions count as well as module-level ones. A module loaded by a
    name held in a string (``importlib.import_module(kind.train_module)``)
    cannot be seen: name it in ``module_names``.
    """
    seen: set[str] = set()
    stack = [name for name in module_names if module_file(name)]
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(module_imports(name) - seen)
    return sorted(seen)


def _source_digest(module_name: str) -> str:
    """SHA-256 of one module's source, once per process (the code it runs)."""
    path = module_file(module_name)
    return _read_module(module_name, path)[0] if path else ""


def code_fingerprint(module_names: Iterable[str]) -> dict[str, str]:
    """Module name → source digest for the closure of ``module_names``.

    Only the code a component runs counts, so an edit to one component does
    not invalidate the others' caches.
    """
    return {name: _source_digest(name) for name in module_closure(module_names)}


def fingerprint(component: str, params: Mapping[str, Any], inputs: Mapping[str, Artifact],
                data_paths: Iterable[str] = (), code_modules: Iterable[str] = ()) -> str:
    """The hex SHA-256 of everything an execution depends on.

    ``code_modules``: the executor's module and any module it loads by a name
    held in a string (a model kind's train and evaluate modules); their import
    closure (:func:`module_closure`) is hashed.
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
