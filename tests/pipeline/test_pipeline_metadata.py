"""ML Metadata recording, caching, locking, spans and reports on tiny in-process components."""
import json
import os
import subprocess
import sys

import pytest

from musicrec.components.base import ComponentSpec
from musicrec.pipeline import metadata as md
from musicrec.pipeline.lock import PipelineLockedError, pipeline_lock
from musicrec.pipeline.runner import LocalRunner, Node, Pipeline, PipelineRunError
from musicrec.pipeline.spans import list_spans, select_spans

CALLS = []


def _gen(inputs, outputs, params):
    CALLS.append(params["name"])
    text = "".join(open(os.path.join(p, f)).read() for p in params["paths"]
                   for f in sorted(os.listdir(p)))
    with open(outputs["out"].path("value.txt"), "w") as handle:
        handle.write(text)


def _upper(inputs, outputs, params):
    CALLS.append(params["name"])
    if params.get("fail"):
        raise RuntimeError("boom")
    with open(outputs["out"].path("value.txt"), "w") as handle:
        handle.write(open(inputs["in"].path("value.txt")).read().upper())


GEN = ComponentSpec("gen", {}, {"out": "Text"}, _gen)
UPPER = ComponentSpec("upper", {"in": "Text"}, {"out": "Text"}, _upper)


def _pipeline(root, data_dir, policy="latest", fail=False):
    selection = select_spans([str(data_dir)], policy, 2)
    gen = Node("gen", GEN, params={"name": "gen", "paths": selection.paths},
               data_paths=selection.paths,
               output_properties={"spans": selection.span_ids})
    upper = Node("upper", UPPER, inputs={"in": gen.outputs["out"]},
                 params={"name": "upper", "fail": fail})
    return Pipeline("p", str(root), [gen, upper])


def _add_span(data_dir, span, text):
    folder = data_dir / f"span={span}"
    folder.mkdir(parents=True)
    (folder / "part.txt").write_text(text)


def _store(root):
    return md.MetadataStore(md.connection_config(None, str(root)))


def test_records_executions_artifacts_and_lineage_in_mlmd(tmp_path):
    _add_span(tmp_path / "data", "2026-11-23", "a")
    result = LocalRunner().run(_pipeline(tmp_path / "runs", tmp_path / "data"), run_id="r1")
    assert os.path.isfile(tmp_path / "runs" / "metadata.sqlite")
    store = _store(tmp_path / "runs")
    executions = store.executions("r1")
    assert [store.execution_type_name(e) for e in executions] == ["gen", "upper"]
    assert all(e.last_known_state == md.State.COMPLETE for e in executions)
    props = md.properties_of(executions[1])
    assert props["node_id"] == "upper" and json.loads(props["parameters"])["name"] == "upper"
    assert props["finished"] >= props["started"]
    out = result.artifact("upper", "out")
    upstream = store.upstream(out.mlmd_id)
    assert [(name, a.type_name, a.properties.get("spans")) for name, a in upstream] == [
        ("in", "Text", ["2026-11-23"])]
    contexts = store.store.get_contexts_by_execution(executions[0].id)
    assert {c.name for c in contexts} == {"p", "p.r1"}


def test_unchanged_inputs_hit_the_cache_and_a_new_span_misses_it(tmp_path):
    data = tmp_path / "data"
    _add_span(data, "2026-11-23", "a")
    CALLS.clear()
    first = LocalRunner().run(_pipeline(tmp_path / "runs", data), run_id="r1")
    second = LocalRunner().run(_pipeline(tmp_path / "runs", data), run_id="r2")
    assert CALLS == ["gen", "upper"]
    assert second.states == {"gen": "cached", "upper": "cached"}
    assert second.artifact("upper", "out").uri == first.artifact("upper", "out").uri
    store = _store(tmp_path / "runs")
    assert [e.last_known_state for e in store.executions("r2")] == [md.State.CACHED] * 2
    record = json.load(open(tmp_path / "runs" / "r2" / "run.json"))
    assert record["components"]["gen"]["state"] == "cached"

    _add_span(data, "2026-11-24", "b")
    third = LocalRunner().run(_pipeline(tmp_path / "runs", data), run_id="r3")
    assert third.executed() == ["gen", "upper"]
    assert open(third.artifact("upper", "out").path("value.txt")).read() == "B"
    assert third.artifact("gen", "out").properties["spans"] == ["2026-11-24"]
    window = LocalRunner().run(_pipeline(tmp_path / "runs", data, policy="window"), run_id="r4")
    assert open(window.artifact("upper", "out").path("value.txt")).read() == "AB"

    forced = LocalRunner(no_cache=True).run(_pipeline(tmp_path / "runs", data), run_id="r5")
    assert forced.executed() == ["gen", "upper"]


def test_a_failed_run_is_recorded_and_the_next_run_resumes_from_the_failure(tmp_path):
    data = tmp_path / "data"
    _add_span(data, "1", "a")
    CALLS.clear()
    with pytest.raises(PipelineRunError):
        LocalRunner().run(_pipeline(tmp_path / "runs", data, fail=True), run_id="r1")
    store = _store(tmp_path / "runs")
    states = [e.last_known_state for e in store.executions("r1")]
    assert states == [md.State.COMPLETE, md.State.FAILED]
    result = LocalRunner().run(_pipeline(tmp_path / "runs", data))
    assert CALLS == ["gen", "upper", "upper"]
    assert result.states == {"gen": "cached", "upper": "complete"}


def test_an_interrupted_run_resumes_under_its_own_id_from_its_first_unfinished_component(tmp_path):
    data = tmp_path / "data"
    _add_span(data, "1", "a")
    root = tmp_path / "runs"

    def killed(inputs, outputs, params):
        with open(outputs["out"].path("value.txt"), "w") as handle:
            handle.write("half")
        raise KeyboardInterrupt  # as a kill: nothing after this line runs in the process

    pipeline = _pipeline(root, data)
    pipeline.nodes[1].spec = ComponentSpec("upper", {"in": "Text"}, {"out": "Text"}, killed)
    with pytest.raises(KeyboardInterrupt):
        LocalRunner().run(pipeline, run_id="r1")
    record = json.load(open(root / "r1" / "run.json"))
    assert record["state"] == "running" and record["components"]["upper"]["state"] == "running"
    assert not os.path.exists(root / "r1" / "upper" / "out")  # nothing half-written published

    CALLS.clear()
    resumed = LocalRunner().run(_pipeline(root, data))
    assert resumed.run_id == "r1"
    assert CALLS == ["upper"]  # gen finished before the "kill": not run again
    assert resumed.states == {"gen": "cached", "upper": "complete"}
    assert open(resumed.artifact("upper", "out").path("value.txt")).read() == "A"
    record = json.load(open(root / "r1" / "run.json"))
    assert record["state"] == "complete" and record["resumed"] == 1
    states = [e.last_known_state for e in _store(root).executions("r1")]
    assert states == [md.State.COMPLETE, md.State.CANCELED, md.State.CACHED, md.State.COMPLETE]


def test_a_second_run_on_a_locked_root_fails_with_a_clear_message(tmp_path):
    root = tmp_path / "runs"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from musicrec.pipeline.lock import pipeline_lock\n"
        f"with pipeline_lock({str(root)!r}):\n print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        _add_span(tmp_path / "data", "1", "a")
        with pytest.raises(PipelineLockedError, match=rf"another run is already using pipeline root "
                                                      rf"{root} \(pid {holder.pid}"):
            LocalRunner().run(_pipeline(root, tmp_path / "data"))
    finally:
        holder.kill()
        holder.wait()
    with pipeline_lock(str(root)):  # released when its holder died
        pass


def test_spans_sort_numerically_or_as_dates_and_unspanned_inputs_pass_through(tmp_path):
    for name in ("span=10", "span=9", "other"):
        (tmp_path / "n" / name).mkdir(parents=True)
    assert [s for s, _ in list_spans(str(tmp_path / "n"))] == ["9", "10"]
    selection = select_spans([str(tmp_path / "n"), "plain.csv"], "window", 5)
    assert selection.span_ids == ["9", "10"]
    assert selection.paths[-1] == "plain.csv"
    with pytest.raises(ValueError, match="policy"):
        select_spans([], "newest")


def test_each_run_writes_a_self_contained_report(tmp_path):
    _add_span(tmp_path / "data", "1", "a")
    result = LocalRunner().run(_pipeline(tmp_path / "runs", tmp_path / "data"), run_id="r1")
    text = open(result.report_path).read()
    assert result.report_path == str(tmp_path / "runs" / "r1" / "report.html")
    assert "<h2>Components</h2>" in text and "upper" in text
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")


def test_fingerprints_see_new_and_changed_files_including_globs(tmp_path):
    from musicrec.pipeline.fingerprints import cacheable, fingerprint

    (tmp_path / "a.csv").write_text("x")
    def glob_key():
        return fingerprint("gen", {}, {}, [str(tmp_path / "*.csv")])

    def dir_key():
        return fingerprint("gen", {}, {}, [str(tmp_path)])
    before = glob_key(), dir_key()
    assert before == (glob_key(), dir_key())
    (tmp_path / "b.csv").write_text("y")
    after_new = glob_key(), dir_key()
    assert after_new[0] != before[0] and after_new[1] != before[1]
    (tmp_path / "b.csv").write_text("yy")
    assert glob_key() != after_new[0]
    assert fingerprint("gen", {"p": 1}, {}, []) != fingerprint("gen", {"p": 2}, {}, [])
    assert not cacheable(["gs://bucket/logs"]) and cacheable([str(tmp_path)])


def test_the_code_fingerprint_covers_only_the_modules_a_component_runs():
    from musicrec.pipeline.fingerprints import module_closure

    closure = module_closure(["musicrec.components.playlog_example_gen"])
    assert {"musicrec.components.playlog_example_gen", "musicrec.components.playlog_readers",
            "musicrec.components.base"} <= set(closure)
    assert "musicrec.components.audio_example_gen" not in closure
    trainer = module_closure(["musicrec.components.trainer", "musicrec.models.next_track.train"])
    assert "musicrec.models.next_track.model" in trainer
    assert "musicrec.models.genre.model" not in trainer
