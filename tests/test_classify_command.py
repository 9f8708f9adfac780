"""``musicrec classify`` against a live local server: formats, top-3, progress, a corrupt file."""
from __future__ import annotations

import io
import json

import keras
import numpy as np
import pytest
import soundfile as sf

from musicrec import cli
from musicrec.classify_command import ProgressBar
from musicrec.models.export import export_serving_model
from musicrec.models.features import AudioFeatureParams
from musicrec.models.genre.model import (GenreHParams, build_classifier, build_serving_model,
                                         new_normalization)
from musicrec.models.genre.signatures import OUTPUTS, GenreSignatures
from musicrec.serving.server import LocalModelServer

PARAMS = AudioFeatureParams()
LABELS = ["blues", "jazz", "metal", "pop"]


def _clip(seconds: float, frequency: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A local server on a free port with an (untrained) genre model as version 1."""
    keras.utils.set_random_seed(2)
    normalization = new_normalization()
    normalization.adapt(np.random.default_rng(0).normal(-8, 3, (200, PARAMS.n_mels)).astype(np.float32))
    classifier = build_classifier(PARAMS.n_mels, len(LABELS),
                                  GenreHParams(lstm_units=8, embedding_dim=4), normalization)
    base = tmp_path_factory.mktemp("served") / "genre"
    export_serving_model(GenreSignatures(build_serving_model(classifier, LABELS), LABELS, PARAMS),
                         str(base / "1"), inputs={"log_mel"}, outputs=OUTPUTS)
    local_server = LocalModelServer({"genre": str(base)}, port=0, poll_wait_seconds=0)
    local_server.start()
    try:
        yield local_server.address
    finally:
        local_server.stop(grace_seconds=0)


@pytest.fixture
def audio_files(tmp_path):
    """Good files in three formats and rates (one stereo), a corrupt FLAC and a non-audio file."""
    wav, ogg, flac = (str(tmp_path / name) for name in ("a.wav", "b.ogg", "c.flac"))
    sf.write(wav, _clip(4.0, 220.0, 22050), 22050, subtype="PCM_16")
    sf.write(ogg, _clip(4.0, 880.0, 44100), 44100, format="OGG", subtype="VORBIS")
    stereo = np.stack([_clip(3.5, 440.0, 16000), _clip(3.5, 660.0, 16000)], axis=1)
    sf.write(flac, stereo, 16000, subtype="PCM_16")
    corrupt = tmp_path / "broken.flac"
    corrupt.write_bytes(open(flac, "rb").read()[:300])   # a FLAC header with its stream cut off
    text = tmp_path / "notes.mp3"
    text.write_text("not audio at all\n" * 50)
    return {"good": [wav, ogg, flac], "corrupt": str(corrupt), "not_audio": str(text)}


def test_every_good_file_gets_its_top_three_and_a_corrupt_one_a_clear_error(server, audio_files,
                                                                            capsys):
    good = audio_files["good"]
    files = [good[0], audio_files["corrupt"], good[1], audio_files["not_audio"], good[2]]
    code = cli.main(["classify", "--server", server, "--json", *files])
    captured = capsys.readouterr()
    assert code == 1
    results = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    assert [r["path"] for r in results] == files
    for result in (results[0], results[2], results[4]):
        top = result["top_genres"]
        assert len(top) == 3 and {g["genre"] for g in top} <= set(LABELS)
        probabilities = [g["probability"] for g in top]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0 + 1e-6
    assert "corrupt audio" in results[1]["error"] and "broken.flac" in results[1]["error"]
    assert "not audio" in results[3]["error"]
    assert "2 of 5 files could not be classified" in captured.err
    # The progress bar goes to stderr, one step per file and the end.
    assert "5/5" in captured.err and "[" in captured.err


def test_all_good_files_exit_zero_with_human_readable_lines(server, audio_files, capsys):
    code = cli.main(["classify", "--server", server, "--top", "2", *audio_files["good"]])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    lines = [line for line in out if line.startswith(tuple(audio_files["good"]))]
    assert len(lines) == 3
    assert all(len(line.split(": ", 1)[1].split(", ")) == 2 for line in lines)


def test_a_file_shorter_than_one_segment_is_refused_with_its_length(server, tmp_path, capsys):
    short = str(tmp_path / "short.wav")
    sf.write(short, _clip(1.0, 440.0, 22050), 22050)
    assert cli.main(["classify", "--server", server, short]) == 1
    assert "too short" in capsys.readouterr().out


def test_progress_bar_redraws_on_a_terminal_and_prints_lines_otherwise():
    plain = io.StringIO()
    bar = ProgressBar(4, plain)
    bar.show(2, "x.wav")
    bar.close()
    assert plain.getvalue() == "[############............] 2/4 x.wav\n"

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    bar = ProgressBar(4, terminal)
    bar.show(1, "a")
    bar.show(4, "done")
    bar.close()
    assert terminal.getvalue().count("\r") == 2 and terminal.getvalue().endswith("4/4 done\n")
