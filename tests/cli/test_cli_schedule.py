"""`musicrec schedule`, `runs` and `config show` through the command line itself."""
import json
import os

import yaml

from musicrec import cli, demo_data
from musicrec.demo import TINY_OVERRIDES


def test_schedule_runs_three_times_then_runs_lists_them(tmp_path, capsys):
    data = demo_data.generate(str(tmp_path / "data"), demo_data.tiny_config(seed=5))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "next_track_model": {**TINY_OVERRIDES["next_track_model"], "must_beat_baselines": False}}))
    workdir = str(tmp_path / "work")
    code = cli.main(["schedule", "--playlogs", *data.playlog_paths, "--workdir", workdir,
                     "--config", str(config), "--every", "0.2s", "--max-runs", "3"])
    assert code == 0
    with open(os.path.join(workdir, "runs", "schedule.jsonl")) as handle:
        entries = [json.loads(line) for line in handle]
    assert len(entries) == 3 and all(entry["ok"] for entry in entries)
    # Unchanged data: the first run trains and pushes, the next two are cache hits.
    assert sorted(os.listdir(os.path.join(workdir, "serving", "next_track"))) == ["1"]

    capsys.readouterr()
    assert cli.main(["runs", "--workdir", workdir]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 1 + 3  # header and three runs
    run_id = listing[1].split()[0]
    assert cli.main(["runs", "--workdir", workdir, "show", run_id]) == 0
    assert "trainer_next_track" in capsys.readouterr().out
    assert cli.main(["runs", "--workdir", workdir, "show", "no-such-run"]) == 2


def test_config_show_prints_the_merged_yaml(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("playlogs:\n  session_gap_seconds: 600\n")
    assert cli.main(["config", "show", "--config", str(config)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["playlogs"]["session_gap_seconds"] == 600
    assert shown["playlogs"]["min_session_length"] == 2
    config.write_text("playlogs:\n  gap: 600\n")
    assert cli.main(["config", "show", "--config", str(config)]) == 2
    assert "playlogs.gap: unknown key" in capsys.readouterr().err
