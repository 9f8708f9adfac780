"""The command line's one convention: a module per command, help from its docstring, no import cycles."""
import ast
import pathlib
import subprocess
import sys
import types

import pytest

from musicrec import cli

MUSICREC_DIR = pathlib.Path(cli.__file__).parent

# What `musicrec --help` has said for each command since before the commands had a module each.
HELP = {
    "demo": "the whole job on generated data",
    "generate-data": "write the synthetic demo dataset",
    "run": "run the pipeline on your own audio and play logs",
    "schedule": "run the pipeline repeatedly, in the foreground",
    "runs": "list runs, or show one run's stages and lineage",
    "config": "show the effective configuration",
    "serve": "serve pushed models over TF Serving's gRPC and REST APIs",
    "classify": "genre of audio files, from the server",
    "recommend": "next tracks for a session, from the server",
    "playlist": "continue seed tracks into a playlist, from the server",
    "batch": "batch inference with Beam RunInference over pushed models",
}


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_is_a_module_with_help_arguments_and_run(name):
    module = cli.command_module(name)
    assert module.__name__ == f"musicrec.{name.replace('-', '_')}_command"
    assert callable(module.add_arguments) and callable(module.run)
    assert module.__doc__.startswith(f"``musicrec {name}")
    assert cli.command_help(module) == HELP[name]


def test_the_top_level_help_lists_every_command_in_order(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps long help lines
    assert list(cli.COMMANDS) == list(HELP)
    assert "{" + ",".join(HELP) + "}" in text
    for name, help_text in HELP.items():
        assert f" {name} {help_text} " in text


def test_a_docstring_without_the_usage_prefix_is_refused():
    module = types.ModuleType("musicrec.nameless_command", "Does something.")
    with pytest.raises(ValueError, match="must open with"):
        cli.command_help(module)


def test_building_the_parser_imports_no_tensorflow():
    """``musicrec --help`` stays fast: command modules import heavy libraries only when they run."""
    probe = ("import sys; from musicrec import cli; cli.build_parser(); "
             "print(sorted(m for m in ('tensorflow', 'apache_beam', 'grpc', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def imported_musicrec_modules(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The ``musicrec.<name>`` modules of ``modules`` that ``path`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found & modules


def test_the_musicrec_modules_import_each_other_without_a_cycle():
    paths = {f"musicrec.{path.stem}": path for path in MUSICREC_DIR.glob("*.py") if path.stem != "__init__"}
    imports = {name: imported_musicrec_modules(path, set(paths)) - {name} for name, path in paths.items()}
    done, in_progress = set(), []

    def visit(name):
        if name in in_progress:
            pytest.fail("import cycle: " + " -> ".join(in_progress[in_progress.index(name):] + [name]))
        if name in done:
            return
        in_progress.append(name)
        for imported in sorted(imports[name]):
            visit(imported)
        in_progress.pop()
        done.add(name)

    for name in sorted(imports):
        visit(name)
