"""``musicrec classify`` against a live local server: formats, top-3, progress, a corrupt file,
and features that come from the model, never from ``--config``."""
from __future__ import annotations

import io
import json
import os

import keras
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from musicrec import cli
from musicrec.classify_command import ProgressBar
from musicrec.models.export import export_serving_model
from musicrec.models.audio_files import track_segments
from musicrec.models.features import AudioFeatureParams
from musicrec.models.genre.evaluate import predict_track
from musicrec.models.genre.hparams import GenreHParams
from musicrec.models.genre.model import build_classifier, build_serving_model, new_normalization
from musicrec.models.genre.signatures import OUTPUTS, GenreSignatures
from musicrec.serving.server import LocalModelServer

PARAMS = AudioFeatureParams()
LABELS = ["blues", "jazz", "metal", "pop"]


def _clip(seconds: float, frequency: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


# A model trained on other features than the defaults: 16 kHz, 1024-sample windows, 1.5 s segments.
OTHER_PARAMS = AudioFeatureParams(sample_rate=16000, n_fft=1024, hop_length=256, n_mels=32,
                                  segment_seconds=1.5, segment_hop_seconds=1.5)


def _export_untrained(params: AudioFeatureParams, folder) -> str:
    normalization = new_normalization()
    normalization.adapt(np.random.default_rng(0).normal(-8, 3, (200, params.n_mels)).astype(np.float32))
    classifier = build_classifier(params.n_mels, len(LABELS),
                                  GenreHParams(lstm_units=8, embedding_dim=4), normalization)
    export_serving_model(GenreSignatures(build_serving_model(classifier, LABELS), LABELS, params),
                         str(folder / "1"), inputs={"log_mel"}, outputs=OUTPUTS)
    return str(folder / "1")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A local server on a free port with two (untrained) genre models as version 1: "genre"
    (default features) and "genre_16k" (:data:`OTHER_PARAMS`)."""
    keras.utils.set_random_seed(2)
    base = tmp_path_factory.mktemp("served")
    dirs = {"genre": _export_untrained(PARAMS, base / "genre"),
            "genre_16k": _export_untrained(OTHER_PARAMS, base / "genre_16k")}
    local_server = LocalModelServer({name: os.path.dirname(path) for name, path in dirs.items()},
                                    port=0, poll_wait_seconds=0)
    local_server.start()
    try:
        yield {"address": local_server.address, "dirs": dirs}
    finally:
        local_server.stop(grace_seconds=0)


@pytest.fixture(scope="module")
def server(served):
    return served["address"]


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
    out = capsys.readouterr().out.strip()
    # One line, the reason and the length, not the server's stack of graph details.
    assert "too short" in out and "1.00 s" in out and "3.0 s" in out and "\n" not in out


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


def test_classify_uses_the_models_own_features_even_when_the_config_says_otherwise(served, tmp_path,
                                                                                   capsys):
    # A config describing other features of the same shape (32 bands): were classify to use
    # them, the server would accept the request and answer for the wrong features.
    config = tmp_path / "other.yaml"
    config.write_text("genre_model: {frontend: log_mel}\n"
                      "audio: {features: {sample_rate: 22050, n_fft: 2048, hop_length: 512, "
                      "n_mels: 32, segment_seconds: 3.0, segment_hop_seconds: 3.0}}\n")
    configured = AudioFeatureParams(n_mels=32)
    path = str(tmp_path / "clip.wav")
    t = np.arange(int(6.0 * 22050)) / 22050
    chord = np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 1800 * t * (1 + t / 12))
    sf.write(path, (0.3 * chord + 0.01 * np.random.default_rng(3).standard_normal(t.size)
                    ).astype(np.float32), 22050, subtype="PCM_24")

    code = cli.main(["classify", "--server", served["address"], "--model", "genre_16k",
                     "--config", str(config), "--top", str(len(LABELS)), "--json", path])
    captured = capsys.readouterr()
    assert code == 0 and "--config is not used" in captured.err
    answer = json.loads(captured.out.strip().splitlines()[-1])["top_genres"]
    classified = np.array([{g["genre"]: g["probability"] for g in answer}[name] for name in LABELS])

    signature = tf.saved_model.load(served["dirs"]["genre_16k"]).signatures["serving_default"]
    with_model_features = predict_track(signature, track_segments(path, OTHER_PARAMS))
    with_config_features = predict_track(signature, track_segments(path, configured))
    # What classify answers is the model's answer on its own features (up to the in-graph
    # resampler's skew against soxr), far from its answer on the config's features.
    skew = np.abs(classified - with_model_features).max()
    assert skew < 2e-3
    assert np.abs(with_config_features - with_model_features).max() > 5 * skew
