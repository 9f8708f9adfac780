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


def fake_model_server(tmp_path):
    """A stand-in tensorflow_model_server that records its argv (no model is loaded); returns (env, argv file)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    argv_file = tmp_path / "argv.txt"
    binary = bin_dir / "tensorflow_model_server"
    binary.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {argv_file}\n")
    binary.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, argv_file


def pushed_version(workdir, content: bytes = b"") -> None:
    version = workdir / "serving" / "genre" / "3"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(content)


def test_serve_hands_over_to_tensorflow_model_server_when_all_interfaces_are_asked_for(tmp_path):
    """With the real binary on PATH and --host 0.0.0.0, `musicrec serve` execs it with TF Serving's flags."""
    pushed_version(tmp_path / "work")
    env, argv_file = fake_model_server(tmp_path)
    subprocess.run([sys.executable, "-m", "musicrec.cli", "serve", "--workdir", str(tmp_path / "work"),
                    "--port", "8600", "--host", "0.0.0.0"], env=env, check=True, timeout=120)
    flags = argv_file.read_text().split()
    config_file = str(tmp_path / "work" / "serving" / "models.config")
    assert "--port=8600" in flags and f"--model_config_file={config_file}" in flags
    config_text = open(config_file).read()
    assert config_text.startswith("# Written by `musicrec serve --workdir`")
    assert 'name: "genre"' in config_text
    assert f'base_path: "{tmp_path / "work" / "serving" / "genre"}"' in config_text


def test_serve_keeps_to_loopback_with_the_built_in_server_when_the_binary_is_on_path(tmp_path):
    """The binary cannot bind 127.0.0.1 only: the default host runs the built-in server, with a warning."""
    pushed_version(tmp_path / "work", b"not a protobuf")  # the built-in server fails fast on it
    env, argv_file = fake_model_server(tmp_path)
    result = subprocess.run([sys.executable, "-m", "musicrec.cli", "serve", "--workdir", str(tmp_path / "work"),
                             "--port", "0", "--rest_api_port", "0", "--max_num_load_retries=0"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1  # the built-in server ran, and refused the broken model
    assert not argv_file.exists()
    assert "listens on all interfaces" in result.stderr and "--host 0.0.0.0" in result.stderr
    assert "loading model 'genre' version 3" in result.stderr


def test_serve_with_workdir_and_a_config_file_serves_the_config(tmp_path):
    """--model_config_file wins over --workdir: the user's labels and policies are kept, nothing is generated."""
    pushed_version(tmp_path / "work")
    env, argv_file = fake_model_server(tmp_path)
    own = tmp_path / "mine.config"
    own.write_text('model_config_list { config { name: "genre" base_path: "/srv/genre" } }')
    subprocess.run([sys.executable, "-m", "musicrec.cli", "serve", "--workdir", str(tmp_path / "work"),
                    "--host", "0.0.0.0", f"--model_config_file={own}"], env=env, check=True, timeout=120)
    flags = argv_file.read_text().split()
    assert [flag for flag in flags if flag.startswith("--model_config_file")] == [f"--model_config_file={own}"]
    assert not (tmp_path / "work" / "serving" / "models.config").exists()


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
