"""The import graph of every ``musicrec`` module follows docs/architecture.md's layer table and has no cycles.

The graph is read from the source, imports inside functions included, with
the walker the cache fingerprints use (:mod:`musicrec.pipeline.fingerprints`).
The layer table below is the one the doc shows ("Packages"); change both together.
"""
import os
import subprocess
import sys

from musicrec.pipeline.fingerprints import module_file, module_imports, package_folders

# Layer of a module: its installed package (``musicrec.models`` → "models"), the
# standard-library leaf ``musicrec.atomic``, or "cli" for the rest of ``musicrec``.
LAYER_PACKAGES = ("pipeline", "components", "models", "serving")

# Layer → what it may import: whole layers, or single modules by name. Arrows
# inside a layer are always allowed (cycles are tested separately).
ALLOWED_IMPORTS = {
    "cli": {"pipeline", "components", "models", "serving", "atomic"},
    "pipeline": {"components", "models", "atomic", "musicrec.serving.wire"},
    "components": {"models", "atomic", "musicrec.serving.wire", "musicrec.serving.publish"},
    "models": {"atomic"},
    "serving": {"atomic"},
    "atomic": set(),
}

# Inside serving, the client side never loads the server: only the wire
# contract, the tensor codec and the error type.
CLIENT_MODULES = ("musicrec.serving.client", "musicrec.serving.rest_client")
CLIENT_MAY_IMPORT = {"musicrec.serving.wire", "musicrec.serving.tensor_proto", "musicrec.serving.errors"}


def layer(module: str) -> str:
    parts = module.split(".")
    if module == "musicrec.atomic":
        return "atomic"
    if len(parts) > 1 and parts[1] in LAYER_PACKAGES:
        return parts[1]
    return "cli"


def all_modules() -> list[str]:
    """Every ``musicrec`` module with a source file under the installed package folders, sorted."""
    modules = set()
    for package, folder in package_folders().items():
        for root, dirs, files in os.walk(folder):
            dirs[:] = [name for name in dirs if not name.startswith((".", "__"))]
            for name in files:
                if not name.endswith(".py"):
                    continue
                parts = os.path.relpath(os.path.join(root, name), folder)[:-len(".py")].split(os.sep)
                module = ".".join([package, *(parts[:-1] if parts[-1] == "__init__" else parts)])
                # A folder that is another installed package is walked under its own name.
                if module_file(module) == os.path.join(root, name):
                    modules.add(module)
    return sorted(modules)


def import_graph() -> dict[str, set[str]]:
    """Module → the ``musicrec`` modules it imports.

    A package that is imported only because one of its submodules is (its
    ``__init__`` runs first) is left out: the submodule is the real arrow.
    """
    graph = {}
    for module in all_modules():
        targets = set(module_imports(module))
        graph[module] = {target for target in targets
                         if not any(other.startswith(target + ".") for other in targets)
                         and not module.startswith(target + ".")}
    return graph


def _allowed(source: str, target: str) -> bool:
    if source in CLIENT_MODULES and layer(target) == "serving":
        return target in CLIENT_MAY_IMPORT
    source_layer = layer(source)
    return (layer(target) == source_layer or layer(target) in ALLOWED_IMPORTS[source_layer]
            or target in ALLOWED_IMPORTS[source_layer])


def test_the_graph_covers_every_package_and_sees_imports_inside_functions():
    graph = import_graph()
    assert {layer(module) for module in graph} == {"cli", "atomic", *LAYER_PACKAGES}
    # Imported by models/genre/evaluate.py inside functions only.
    assert "musicrec.models.genre_baseline" in graph["musicrec.models.genre.evaluate"]


def test_every_import_is_allowed_by_the_layer_table():
    graph = import_graph()
    forbidden = [f"{source} ({layer(source)}) -> {target} ({layer(target)})"
                 for source, targets in sorted(graph.items()) for target in sorted(targets)
                 if not _allowed(source, target)]
    assert not forbidden, "imports the layer table (docs/architecture.md) forbids:\n" + "\n".join(forbidden)


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module (or a self-import), sorted."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = lowlink[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in graph:
                    continue
                if successor not in index:
                    index[successor] = lowlink[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    advanced = True
                    break
                if successor in on_stack:
                    lowlink[node] = min(lowlink[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[node])
            if lowlink[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    components.append(sorted(component))
    return sorted(components)


def cycle_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One import cycle through the component's first module: ``[a, b, ..., a]`` (breadth-first, shortest)."""
    members, start = set(component), component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & members):
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if successor not in previous:
                    previous[successor] = node
                    following.append(successor)
        frontier = following
    raise AssertionError(f"{component} is no cycle")


def test_the_cycle_finder_reports_a_real_path():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert strongly_connected_components(graph) == [["a", "b", "c"], ["e"]]
    assert cycle_path(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert cycle_path(graph, ["e"]) == ["e", "e"]


def test_there_are_no_import_cycles():
    graph = import_graph()
    short = lambda module: module.removeprefix("musicrec.")  # noqa: E731
    cycles = [f"{' -> '.join(map(short, cycle_path(graph, component)))}"
              f"   (modules in this cycle: {', '.join(map(short, component))})"
              for component in strongly_connected_components(graph)]
    assert not cycles, "import cycles (one line each: a path, then every module of its strongly connected " \
        "component; imports inside functions included):\n" + "\n".join(cycles)


def test_hyperparameters_load_without_tensorflow():
    # Settings are read where no model is built (pipeline/config.py checks NextTrackHParams): no TensorFlow.
    probe = ("import sys; import musicrec.models.genre.hparams, musicrec.models.next_track.hparams; "
             "print(sorted({'tensorflow', 'keras'} & set(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
