"""The command line's own behaviour: errors a user can act on, and the serve dispatch."""
import os
import subprocess
import sys

import pytest

from musicrec import cli


def test_run_refuses_missing_inputs_with_a_clear_error(tmp_path, capsys):
    assert cli.main(["run", "--audio", str(tmp_path / "nope"), "--workdir", str(tmp_path)]) == 2
    assert f"{tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert cli.main(["run", "--workdir", str(tmp_path)]) == 2
    assert "give --audio DIR" in capsys.readouterr().err


def test_run_reports_a_bad_config_key_by_path(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("audio:\n  n_mels: 32\n")
    (tmp_path / "audio").mkdir()
    assert cli.main(["run", "--audio", str(tmp_path / "audio"), "--workdir", str(tmp_path),
                     "--config", str(config)]) == 2
    assert "audio.n_mels: unknown key" in capsys.readouterr().err


def test_serve_without_pushed_models_says_what_to_do(tmp_path, capsys):
    assert cli.main(["serve", "--workdir", str(tmp_path)]) == 2
    assert "run `musicrec run` first" in capsys.readouterr().err


def test_serve_hands_over_to_tensorflow_model_server_when_it_is_on_path(tmp_path):
    """With the real binary on PATH, `musicrec serve` execs it with TF Serving's own flags."""
    version = tmp_path / "work" / "serving" / "genre" / "3"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    argv_file = tmp_path / "argv.txt"
    binary = bin_dir / "tensorflow_model_server"
    # A stand-in binary that records how it was called, so no model is loaded.
    binary.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {argv_file}\n")
    binary.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([sys.executable, "-m", "musicrec.cli", "serve", "--workdir",
                    str(tmp_path / "work"), "--port", "8600"], env=env, check=True, timeout=120)
    flags = argv_file.read_text().split()
    config_file = str(tmp_path / "work" / "serving" / "models.config")
    assert "--port=8600" in flags and f"--model_config_file={config_file}" in flags
    config_text = open(config_file).read()
    assert 'name: "genre"' in config_text
    assert f'base_path: "{tmp_path / "work" / "serving" / "genre"}"' in config_text


@pytest.mark.parametrize("command", ["classify", "recommend"])
def test_clients_report_an_unreachable_server(command, tmp_path, capsys):
    audio = tmp_path / "x.wav"
    import numpy as np
    import soundfile

    soundfile.write(audio, np.zeros(22050 * 4, dtype=np.float32) + 0.1, 22050)
    target = ["127.0.0.1:1"]
    argv = [command, "--server", *target, "--timeout", "1"]
    argv += [str(audio)] if command == "classify" else ["trk-1"]
    assert cli.main(argv) != 0
    captured = capsys.readouterr()
    assert "UNAVAILABLE" in captured.out + captured.err
