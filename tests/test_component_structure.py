"""How components depend on each other, and how executors pass their params on."""
from __future__ import annotations

import ast
import pathlib

from musicrec.components.base import given_params

COMPONENTS = pathlib.Path(__file__).resolve().parent.parent / "components"


def component_imports(path: pathlib.Path) -> set[str]:
    """The ``musicrec.components`` modules a file imports anywhere in it (function-level imports too)."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[2] for alias in node.names
                         if alias.name.startswith("musicrec.components.")}
        elif isinstance(node, ast.ImportFrom) and node.module == "musicrec.components":
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("musicrec.components."):
            imported.add(node.module.split(".")[2])
    return imported - {path.stem}


def test_no_component_module_imports_one_that_imports_it_back():
    graph = {path.stem: component_imports(path) for path in COMPONENTS.glob("*.py")}
    assert graph["bulk_inferrer"] and graph["playlog_example_gen"]  # the scan sees imports

    def cycle_from(start: str, module: str, path: list[str]) -> list[str] | None:
        for imported in sorted(graph.get(module, ())):
            if imported == start:
                return path + [imported]
            if imported not in path:
                found = cycle_from(start, imported, path + [imported])
                if found:
                    return found
        return None

    cycles = [cycle for module in sorted(graph) if (cycle := cycle_from(module, module, [module]))]
    assert cycles == []


def test_given_params_leaves_out_what_params_leave_out_so_the_callee_default_applies():
    params = {"seed": "3", "exclude": None, "unrelated": 1}
    assert given_params(params, "exclude", seed=int, batch_size=int) == {"seed": 3, "exclude": None}
    assert given_params({}, "exclude", seed=int) == {}
