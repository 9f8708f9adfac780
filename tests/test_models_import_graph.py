"""The import graph of ``models/``: one-way dependencies, read from the source (no import runs).

Imports inside functions count as much as module-level ones: a function-level
import that closes a cycle only hides it from the interpreter until the
function runs, and from ``pipeline.fingerprints.module_closure``.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS_DIR = os.path.join(REPO_ROOT, "models")
PACKAGE = "musicrec.models"


def _module_files() -> dict[str, str]:
    """``musicrec.models.*`` module name → path of its source, for every ``.py`` under ``models/``."""
    modules = {}
    for root, dirs, files in os.walk(MODELS_DIR):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            parts = os.path.relpath(os.path.join(root, name), MODELS_DIR)[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([PACKAGE, *parts])] = os.path.join(root, name)
    return modules


def _imported_modules(path: str, known: set[str]) -> set[str]:
    """The ``musicrec.models`` modules ``path`` imports anywhere in its body (functions included).

    ``from package import name`` counts as an import of ``package.name`` when
    that is a module, else of ``package``.
    """
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), filename=path)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                imported.add(submodule if submodule in known else node.module)
    return {name for name in imported if name in known}


def import_graph() -> dict[str, set[str]]:
    """Module → the ``musicrec.models`` modules it imports (package ``__init__`` files are nodes too)."""
    modules = _module_files()
    return {name: _imported_modules(path, set(modules)) - {name} for name, path in modules.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted; sorted."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for neighbour in sorted(graph[node]):
            if neighbour not in index:
                visit(neighbour)
                lowlink[node] = min(lowlink[node], lowlink[neighbour])
            elif neighbour in on_stack:
                lowlink[node] = min(lowlink[node], index[neighbour])
        if lowlink[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def test_the_scan_sees_function_level_imports_and_reports_a_cycle(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("import os\n\n\ndef later():\n"
                      "    from musicrec.models.next_track import serving\n"
                      "    from musicrec.models.export import check_signature\n")
    known = {"musicrec.models.next_track.serving", "musicrec.models.export", "musicrec.models.features"}
    assert _imported_modules(str(source), known) == {"musicrec.models.next_track.serving",
                                                     "musicrec.models.export"}
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_models_have_no_import_cycles():
    assert import_cycles(import_graph()) == []


def _imports_of_folder(folder: str) -> list[tuple[str, str]]:
    """``(source path relative to the repository, imported module)`` for every import under ``folder``."""
    found = []
    for root, dirs, files in os.walk(os.path.join(REPO_ROOT, folder)):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(root, name)
            with open(path, encoding="utf-8") as handle:
                tree = ast.parse(handle.read(), filename=path)
            for node in ast.walk(tree):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                found += [(os.path.relpath(path, REPO_ROOT), imported) for imported in names]
    return found


def test_models_import_no_pipeline_component_cli_or_serving_code():
    upward = [(path, name) for path, name in _imports_of_folder("models")
              if name.startswith(("musicrec.pipeline", "musicrec.components", "musicrec.serving"))]
    assert upward == []


def test_serving_reads_saved_models_and_never_imports_training_code():
    imports = _imports_of_folder("serving")
    assert any(name.startswith("musicrec.serving.") for _, name in imports)  # the scan reads the folder
    assert [(path, name) for path, name in imports if name.startswith("musicrec.models")] == []


def test_hyperparameters_load_without_tensorflow():
    # Settings are read where no model is built (pipeline/config.py checks NextTrackHParams): no TensorFlow.
    probe = ("import sys; import musicrec.models.genre.hparams, musicrec.models.next_track.hparams; "
             "print(sorted({'tensorflow', 'keras'} & set(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
