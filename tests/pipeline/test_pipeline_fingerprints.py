"""The code part of a stage's cache key: every ``musicrec`` module its code imports, inside functions too."""
import os
import shutil
import textwrap

from musicrec.components.base import ComponentSpec
from musicrec.pipeline import fingerprints
from musicrec.pipeline.config import make_config
from musicrec.pipeline.pipeline import create_pipeline
from musicrec.pipeline.runner import LocalRunner, Node, Pipeline

# Cold start needs a next-track scorer that ranks the whole catalogue (pipeline/config.py).
CONFIG_WITH_EVERY_STAGE = {"cold_start": {"enabled": True},
                           "next_track_model": {"hparams": {"neural_scores": True, "scorer": "gates"}},
                           "bulk_inference": {"jobs": ["tag", "recommend", "embeddings"]}}


def _stage_code(tmp_path) -> dict[str, list[str]]:
    """Node id → the modules the runner fingerprints for it (executor's module first)."""
    pipeline = create_pipeline(make_config(CONFIG_WITH_EVERY_STAGE), str(tmp_path / "work"),
                               audio_dir=str(tmp_path / "audio"), playlog_paths=[str(tmp_path / "logs")])
    return {node.id: [node.spec.executor.__module__, *node.code_modules] for node in pipeline.nodes}


def test_a_stage_closure_holds_the_modules_its_code_imports_inside_functions(tmp_path):
    stages = {node_id: set(fingerprints.module_closure(modules))
              for node_id, modules in _stage_code(tmp_path).items()}
    # The evaluator and genre.evaluate import these inside functions only.
    assert {"musicrec.models.genre_baseline", "musicrec.models.genre.report"} <= stages["evaluator_genre"]
    assert {"musicrec.serving.warmup", "musicrec.serving.servables",
            "musicrec.serving.config"} <= stages["pusher_genre"]
    # What the pipeline used to list by hand for these stages is found by the walk.
    assert {"musicrec.models.next_track.cold_start", "musicrec.models.next_track.train",
            "musicrec.models.next_track.evaluate", "musicrec.models.genre.evaluate"} <= stages["cold_start"]
    assert "musicrec.models.next_track.cold_start" in stages["evaluator_next_track"]
    for job in ("tag", "recommend", "embeddings"):
        assert {"musicrec.components.inference_jobs",
                "musicrec.components.inference_handler"} <= stages[f"bulk_inferrer_{job}"]
    # Still only what the stage runs.
    assert "musicrec.components.audio_example_gen" not in stages["evaluator_genre"]
    assert "musicrec.serving.server" not in stages["pusher_genre"]


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(textwrap.dedent(text))


def test_the_walk_resolves_relative_submodule_and_nested_imports(tmp_path, monkeypatch):
    roots = {package: str(tmp_path / package) for package in fingerprints.SOURCE_PACKAGES}
    for folder in roots.values():
        _write(os.path.join(folder, "__init__.py"), "")
    models = roots["musicrec.models"]
    _write(os.path.join(models, "entry.py"), """
        def run():
            from . import sibling
            from .pkg.leaf import value
            import musicrec.serving.far
            from musicrec.models.pkg import other
            return sibling, value, musicrec.serving.far, other
        """)
    _write(os.path.join(models, "pkg", "__init__.py"), "from ..deep import deep_value\n")
    for name in ("sibling.py", "deep.py", "unused.py", os.path.join("pkg", "leaf.py"),
                 os.path.join("pkg", "other.py")):
        _write(os.path.join(models, name), "")
    _write(os.path.join(roots["musicrec.serving"], "far.py"), "")
    monkeypatch.setattr(fingerprints, "package_folders", lambda: roots)

    assert fingerprints.module_closure(["musicrec.models.entry", "numpy"]) == [
        "musicrec", "musicrec.models", "musicrec.models.deep", "musicrec.models.entry",
        "musicrec.models.pkg", "musicrec.models.pkg.leaf", "musicrec.models.pkg.other",
        "musicrec.models.sibling", "musicrec.serving", "musicrec.serving.far"]


def _toy_stage(inputs, outputs, params):
    with open(outputs["out"].path("value.txt"), "w") as handle:
        handle.write("x")


TOY_STAGE = ComponentSpec("toy_genre_evaluator", {}, {"out": "Text"}, _toy_stage)


def _source_copy(destination, edit: str | None = None) -> dict[str, str]:
    """Copies the installed ``musicrec`` source folders; ``edit``: a file (relative) that gets one more line."""
    folders = {}
    for package, folder in fingerprints.package_folders().items():
        folders[package] = os.path.join(destination, package)
        shutil.copytree(folder, folders[package], ignore=shutil.ignore_patterns("__pycache__"))
    if edit:
        with open(os.path.join(destination, edit), "a") as handle:
            handle.write("\n# an edit\n")
    return folders


def test_editing_a_module_imported_only_inside_a_function_reruns_the_stage(tmp_path, monkeypatch):
    """The genre evaluator's own code, run under a toy executor against copies of the source tree.

    ``models/genre_baseline.py`` is imported by ``models/genre/evaluate.py``
    inside functions only; editing it must miss the cache, while editing a
    module the stage never imports must not.
    """
    code = _stage_code(tmp_path)["evaluator_genre"]
    trees = {"unchanged": _source_copy(tmp_path / "unchanged"),
             "baseline edited": _source_copy(tmp_path / "edited",
                                             os.path.join("musicrec.models", "genre_baseline.py")),
             "unrelated edited": _source_copy(tmp_path / "unrelated",
                                              os.path.join("musicrec.components", "audio_example_gen.py"))}
    states = []
    for run, tree in [("first", "unchanged"), ("again", "unchanged"), ("edited", "baseline edited"),
                      ("unrelated", "unrelated edited")]:
        monkeypatch.setattr(fingerprints, "package_folders", lambda folders=trees[tree]: folders)
        node = Node("evaluator_genre", TOY_STAGE, code_modules=code)
        result = LocalRunner(report=False).run(Pipeline("p", str(tmp_path / "runs"), [node]), run_id=run)
        states.append(result.states["evaluator_genre"])
    # "complete": the executor ran; "cached": an earlier execution's outputs were reused.
    assert states == ["complete", "cached", "complete", "cached"]

