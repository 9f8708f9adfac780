"""Retraining on generated play logs: crash and resume, lock, caching, spans, blessing, lineage.

One module-scoped workdir carries a sequence of runs of the next-track
branch (the audio branch shares all of this machinery and costs more time):

1. a run in a child process, killed during training while a second run is
   refused by the lock, then resumed in this process (span A);
2. an unchanged rerun: every component is a cache hit;
3. span B arrives: ingestion and training run again; the evaluator compares
   against the version-1 model;
4. a deliberately degraded candidate (learning rate ~0 and no warm start: an untrained model)
   is not blessed and the serving versions stay as they were.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from musicrec import demo_data
from musicrec.serving.wire import list_versions
from musicrec.demo import TINY_OVERRIDES
from musicrec.pipeline import metadata as md
from musicrec.pipeline.config import make_config
from musicrec.pipeline.lock import PipelineLockedError
from musicrec.pipeline.pipeline import create_pipeline
from musicrec.pipeline.runner import LocalRunner

pytestmark = pytest.mark.timeout(600)

SPAN_A, SPAN_B = "2026-01-10", "2026-01-25"
OVERRIDES = {"seed": 3, "spans": {"policy": "all"},
             "next_track_model": {**TINY_OVERRIDES["next_track_model"],
                                  "must_beat_baselines": False}}
# Warm start would hand it the serving model's weights, so it is turned off here.
DEGRADED = {**OVERRIDES, "next_track_model": {
    **OVERRIDES["next_track_model"], "warm_start": False,
    "hparams": {**TINY_OVERRIDES["next_track_model"]["hparams"], "learning_rate": 1e-9}}}


def _split_plays_into_spans(plays_csv: str, logs_dir: str) -> dict[str, list[list[str]]]:
    """Rows of the generated plays by span: before 2026-01-16 go to span A, the rest to B."""
    with open(plays_csv, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    spans = {SPAN_A: [r for r in rows if r[1] < "2026-01-16"],
             SPAN_B: [r for r in rows if r[1] >= "2026-01-16"]}
    for span, span_rows in spans.items():
        spans[span] = [header, *span_rows]
    return spans


def _write_span(logs_dir: str, span: str, rows) -> None:
    folder = os.path.join(logs_dir, f"span={span}")
    os.makedirs(folder)
    with open(os.path.join(folder, "plays.csv"), "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)


def _run(workdir: str, logs_dir: str, overrides=OVERRIDES):
    pipeline = create_pipeline(make_config(overrides), workdir, playlog_paths=[logs_dir])
    return LocalRunner().run(pipeline)


def _child_run_killed_during_training(workdir: str, logs_dir: str) -> tuple[str, Exception]:
    """Starts a run in a child process, tries a second run while it trains, kills the child.

    Returns the child's run id and the second run's error.
    """
    code = ("import json, sys\n"
            "from musicrec.pipeline.config import make_config\n"
            "from musicrec.pipeline.pipeline import create_pipeline\n"
            "from musicrec.pipeline.runner import LocalRunner\n"
            "config = make_config(json.loads(sys.argv[1]))\n"
            "LocalRunner().run(create_pipeline(config, sys.argv[2], playlog_paths=[sys.argv[3]]))\n")
    child = subprocess.Popen([sys.executable, "-c", code, json.dumps(OVERRIDES), workdir, logs_dir],
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    runs = os.path.join(workdir, "runs")
    deadline = time.monotonic() + 300
    try:
        while True:
            assert child.poll() is None, "the child run ended before training started"
            assert time.monotonic() < deadline, "training did not start within 300 s"
            records = [os.path.join(runs, d, "run.json") for d in os.listdir(runs)] \
                if os.path.isdir(runs) else []
            record = next((json.load(open(p)) for p in records if os.path.isfile(p)), None)
            trainer = record["components"].get("trainer_next_track", {}) if record else {}
            if trainer.get("state") == "running" and "execution_id" in trainer:  # executor started
                break
            time.sleep(0.2)
        with pytest.raises(PipelineLockedError) as refused:
            _run(workdir, logs_dir)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return record["run_id"], refused.value


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Runs the four steps once; returns what the tests inspect."""
    workdir = str(tmp_path_factory.mktemp("retraining"))
    data = demo_data.generate(os.path.join(workdir, "data"), demo_data.tiny_config(seed=3))
    logs_dir = os.path.join(workdir, "logs")
    spans = _split_plays_into_spans(data.playlog_paths[0], logs_dir)
    _write_span(logs_dir, SPAN_A, spans[SPAN_A])

    killed_run_id, refused = _child_run_killed_during_training(workdir, logs_dir)
    killed_record = json.load(open(os.path.join(workdir, "runs", killed_run_id, "run.json")))
    resumed = _run(workdir, logs_dir)
    versions_after_first = list_versions(os.path.join(workdir, "serving", "next_track"))
    unchanged = _run(workdir, logs_dir)
    versions_after_unchanged = list_versions(os.path.join(workdir, "serving", "next_track"))
    _write_span(logs_dir, SPAN_B, spans[SPAN_B])
    new_span = _run(workdir, logs_dir)
    versions_before_degraded = list_versions(os.path.join(workdir, "serving", "next_track"))
    degraded = _run(workdir, logs_dir, DEGRADED)
    return {"workdir": workdir, "logs_dir": logs_dir, "killed_run_id": killed_run_id,
            "killed_record": killed_record, "refused": refused, "resumed": resumed,
            "unchanged": unchanged, "new_span": new_span, "degraded": degraded,
            "versions_before_degraded": versions_before_degraded,
            "versions_after_first": versions_after_first,
            "versions_after_unchanged": versions_after_unchanged}


def _store(workdir):
    return md.MetadataStore(md.connection_config(None, os.path.join(workdir, "runs")))


def test_a_second_concurrent_run_is_refused_with_the_lock_message(history):
    assert "another run is already using pipeline root" in str(history["refused"])


def test_a_run_killed_during_training_resumes_and_completes_with_the_same_artifacts(history):
    killed, resumed = history["killed_record"], history["resumed"]
    assert killed["state"] == "running"
    assert killed["components"]["playlog_example_gen"]["state"] == "complete"
    assert resumed.run_id == history["killed_run_id"]
    assert resumed.states == {"playlog_example_gen": "cached", "trainer_next_track": "complete",
                              "evaluator_next_track": "complete", "final_fit_next_track": "complete",
                              "pusher_next_track": "complete"}
    examples = killed["components"]["playlog_example_gen"]["outputs"]["sessions"]
    assert resumed.artifact("playlog_example_gen", "sessions").uri == examples["uri"]
    record = json.load(open(os.path.join(resumed.run_dir, "run.json")))
    assert record["state"] == "complete" and record["resumed"] == 1
    assert not [n for n in os.listdir(os.path.join(resumed.run_dir, "trainer_next_track"))
                if n.startswith(".tmp-")]
    assert resumed.artifact("pusher_next_track", "pushed_model").properties["version"] == 1
    # The killed execution is marked CANCELED in ML Metadata, not left RUNNING.
    store = _store(history["workdir"])
    trainer_states = [e.last_known_state for e in store.executions(resumed.run_id)
                      if md.properties_of(e)["node_id"] == "trainer_next_track"]
    assert trainer_states == [md.State.CANCELED, md.State.COMPLETE]


def test_an_unchanged_rerun_executes_no_ingestion_or_training(history):
    unchanged = history["unchanged"]
    assert unchanged.executed() == []
    assert set(unchanged.states.values()) == {"cached"}
    store = _store(history["workdir"])
    cached = {md.properties_of(e)["node_id"]: e.last_known_state
              for e in store.executions(unchanged.run_id)}
    assert cached == {node: md.State.CACHED for node in unchanged.states}
    assert history["versions_after_first"] == history["versions_after_unchanged"] == [1]


def test_a_new_span_triggers_ingestion_and_training_again(history):
    new_span = history["new_span"]
    assert {"playlog_example_gen", "trainer_next_track"} <= set(new_span.executed())
    sessions = new_span.artifact("playlog_example_gen", "sessions")
    assert sessions.properties["spans"] == [SPAN_A, SPAN_B]
    evaluation = json.load(open(new_span.artifact("evaluator_next_track", "evaluation")
                                .path("metrics.json")))
    first_model = history["resumed"].artifact("final_fit_next_track", "model").uri
    assert evaluation["baseline_model"]["uri"] == first_model
    comparison = evaluation["blessing"]["comparison"]
    assert comparison["metric"] == "MRR@20" and comparison["tolerance"] == 0.01
    assert evaluation["blessing"]["blessed"] == (
        comparison["candidate"] >= comparison["baseline"] - comparison["tolerance"])
    record = json.load(open(os.path.join(new_span.run_dir, "run.json")))
    properties = record["components"]["evaluator_next_track"]["outputs"]["evaluation"]["properties"]
    assert properties["blessed"] == evaluation["blessing"]["blessed"]
    assert properties["baseline_value"] == comparison["baseline"]


def test_a_degraded_candidate_is_not_blessed_and_serving_is_unchanged(history):
    degraded = history["degraded"]
    assert degraded.states["playlog_example_gen"] == "cached"
    assert degraded.states["trainer_next_track"] == "complete"
    evaluation = degraded.artifact("evaluator_next_track", "evaluation").properties
    assert evaluation["blessed"] is False, evaluation["reason"]
    assert "previous blessed model" in evaluation["reason"]
    push = degraded.artifact("pusher_next_track", "pushed_model").properties
    assert push["pushed"] is False
    assert list_versions(os.path.join(history["workdir"], "serving", "next_track")) \
        == history["versions_before_degraded"]


def test_lineage_says_which_span_produced_a_serving_version(history):
    store = _store(history["workdir"])
    answer = md.lineage_of_version(store, "next_track", 1)
    assert answer["spans"] == [SPAN_A]
    assert answer["run_id"] == history["killed_run_id"]
    assert answer["model"] == history["resumed"].artifact("final_fit_next_track", "model").uri
    if history["new_span"].artifact("pusher_next_track", "pushed_model").properties["pushed"]:
        assert md.lineage_of_version(store, "next_track", 2)["spans"] == [SPAN_A, SPAN_B]
    with pytest.raises(LookupError):
        md.lineage_of_version(store, "next_track", 99)


def test_the_report_shows_data_curves_metrics_and_the_decision(history):
    text = open(history["degraded"].report_path).read()
    for expected in ("Data statistics", "<svg", "baseline: popularity", "mrr@20", "NOT blessed",
                     SPAN_B):
        assert expected in text


def test_the_schedule_runs_three_times_survives_a_failure_and_pushes_only_blessed(history):
    from musicrec.pipeline.schedule import run_on_schedule

    workdir, logs_dir = history["workdir"], history["logs_dir"]
    versions = list_versions(os.path.join(workdir, "serving", "next_track"))
    plan = iter([lambda: _run(workdir, logs_dir, DEGRADED),
                 lambda: _run(workdir, os.path.join(workdir, "missing-logs")),
                 lambda: _run(workdir, logs_dir)])
    log_path = os.path.join(workdir, "schedule.jsonl")
    runs = run_on_schedule(lambda: next(plan)(), every="0.05s", max_runs=3, log_path=log_path)
    assert [run.ok for run in runs] == [True, False, True]
    assert "missing-logs" in runs[1].error
    assert len(open(log_path).read().splitlines()) == 3
    assert list_versions(os.path.join(workdir, "serving", "next_track")) == versions
    for run in (runs[0].result, runs[2].result):
        evaluation = run.artifact("evaluator_next_track", "evaluation").properties
        push = run.artifact("pusher_next_track", "pushed_model").properties
        assert not push["pushed"] or evaluation["blessed"]
    # Over the whole history, every pushed version came from a blessed evaluation.
    from musicrec.pipeline.runs_cli import run_records
    for record in run_records(workdir):
        components = record["components"]
        push = components.get("pusher_next_track", {}).get("outputs", {}).get("pushed_model")
        if push and push["properties"].get("pushed"):
            evaluation = components["evaluator_next_track"]["outputs"]["evaluation"]
            assert evaluation["properties"]["blessed"] is True


def test_runs_commands_list_runs_and_show_lineage(history):
    from musicrec.pipeline.runs_cli import list_runs, show_config, show_run

    listing = list_runs(history["workdir"])
    assert history["killed_run_id"] in listing and history["unchanged"].run_id in listing
    unchanged_line = next(line for line in listing.splitlines() if line.startswith(history["unchanged"].run_id))
    assert unchanged_line.split()[1] == "complete" and unchanged_line.split()[-3:] == ["0", "5", "-"]
    shown = show_run(history["workdir"], history["killed_run_id"])
    assert "trainer_next_track [trainer[next_track]]: complete" in shown
    assert "next_track v1 <- model" in shown and f"<- spans {SPAN_A}" in shown
    assert "report: " in shown
    with pytest.raises(LookupError, match="no run 'nope'"):
        show_run(history["workdir"], "nope")
    assert "policy: latest" in show_config(None)
