"""The same ingestion code on other Beam runners: PortableRunner against Beam's local (Python)
job service with LOOPBACK workers, and the in-process runner's multi-processing mode.

No Java, no Docker, no network beyond loopback: the job service is Beam's
own Python one, started in this process on a free port.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from musicrec.components import audio_example_gen as aeg  # noqa: E402
from musicrec.components import playlog_example_gen as gen  # noqa: E402
from musicrec.components.base import Artifact  # noqa: E402

RATE = 22050
SMALL = {"segment_seconds": 0.5, "segment_hop_seconds": 0.5, "n_mels": 16}


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("audio")
    for genre, hz in (("low", 220.0), ("high", 1760.0)):
        (root / genre).mkdir()
        t = np.arange(int(1.2 * RATE)) / RATE
        for index in range(2):
            sf.write(root / genre / f"{genre}{index}.wav", 0.4 * np.sin(2 * np.pi * hz * (index + 1) * t), RATE)
    (root / "low" / "broken.wav").write_text("not audio")
    return str(root)


@pytest.fixture(scope="module")
def job_endpoint():
    from apache_beam.runners.portability import local_job_service

    service = local_job_service.LocalJobServicer()
    port = service.start_grpc_server(0)
    try:
        yield f"localhost:{port}"
    finally:
        service.stop()


def _audio_manifest(audio_dir: str, out: str, beam_args: list[str]) -> dict:
    examples = Artifact("AudioExamples", out)
    aeg.run({}, {"examples": examples}, {"audio_dir": audio_dir, "feature_params": SMALL,
                                         "beam_args": beam_args})
    return json.loads(open(examples.path(aeg.MANIFEST_FILE), encoding="utf-8").read())


def _comparable(manifest: dict) -> dict:
    return {key: manifest[key] for key in ("inputs", "tracks", "dead_letters", "dead_letters_per_reason",
                                           "segments_per_split", "segments_per_label")}


def test_audio_job_under_portable_runner_matches_the_default_runner(audio_dir, job_endpoint, tmp_path):
    portable = _audio_manifest(audio_dir, str(tmp_path / "portable"), [
        "--runner=PortableRunner", f"--job_endpoint={job_endpoint}", "--environment_type=LOOPBACK"])
    default = _audio_manifest(audio_dir, str(tmp_path / "default"), [])

    assert portable["tracks"] == 4 and portable["dead_letters_per_reason"] == {"not audio": 1}
    assert _comparable(portable) == _comparable(default)


def _records(out: str) -> list[bytes]:
    """Every record of every split, sorted: the job's output whatever shard it went to."""
    import tensorflow as tf

    from musicrec.components import beam_io

    paths = [path for split in beam_io.SPLITS
             for path in tf.io.gfile.glob(beam_io.split_files_pattern(out, split))]
    return sorted(bytes(record.numpy()) for record in tf.data.TFRecordDataset(paths, compression_type="GZIP"))


def test_audio_job_on_two_worker_threads_writes_what_one_worker_writes(audio_dir, tmp_path):
    threaded = _audio_manifest(audio_dir, str(tmp_path / "threads"), [
        "--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    default = _audio_manifest(audio_dir, str(tmp_path / "default"), [])

    assert threaded["tracks"] == 4 and threaded["dead_letters_per_reason"] == {"not audio": 1}
    assert _comparable(threaded) == _comparable(default)
    records = _records(str(tmp_path / "threads"))
    assert len(records) == sum(default["segments_per_split"].values())
    assert records == _records(str(tmp_path / "default"))


def test_playlog_job_in_multi_processing_mode(tmp_path):
    rows = ["user_id,timestamp,track_id"] + [
        f"u{user},{1_600_000_000 + day * 86400 + minute * 60},t{(user + minute) % 5}"
        for user in range(3) for day in range(5) for minute in range(3)] + ["u0,never,t1"]
    (tmp_path / "plays.csv").write_text("\n".join(rows) + "\n")
    artifact = Artifact("Sessions", str(tmp_path / "out"))

    gen.run({}, {"sessions": artifact}, {
        "playlog_paths": [str(tmp_path / "plays.csv")],
        "beam_args": ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]})

    manifest = json.loads((tmp_path / "out" / gen.MANIFEST_FILENAME).read_text(encoding="utf-8"))
    assert manifest["rows_in"] == 46 and manifest["dead_letters"] == 1
    assert manifest["sessions"] == 15 and manifest["plays_written"] == 45 and manifest["users"] == 3
