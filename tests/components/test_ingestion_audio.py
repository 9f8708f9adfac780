"""Audio ingestion on real-world inputs: every bad-file class, formats, labels from CSV, leak-free splits.

The decode tests call ``audio_files.track_segments`` directly (the function the
Beam job runs per file); the pipeline tests run ``audio_example_gen`` on the
in-process runner and read back what it wrote.
"""
from __future__ import annotations

import collections
import json
import os

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from musicrec.components import audio_decoding, audio_records  # noqa: E402
from musicrec.components import audio_example_gen as aeg  # noqa: E402
from musicrec.components import beam_io  # noqa: E402
from musicrec.components.base import Artifact  # noqa: E402
from musicrec.models import audio_files, features  # noqa: E402

RATE = 22050
# Short segments keep the generated clips (and the test) small.
SMALL = {"segment_seconds": 0.5, "segment_hop_seconds": 0.5, "n_mels": 16}


def _tone(seconds: float, rate: int = RATE, hz: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


def _reason(path, params=None) -> str:
    with pytest.raises(audio_files.AudioDecodeError) as caught:
        audio_files.track_segments(str(path), params or features.AudioFeatureParams())
    assert caught.value.detail, "a dead letter must say what happened"
    return caught.value.reason


# --------------------------------------------------------------------------- bad inputs, one by one


def test_empty_file(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    assert _reason(tmp_path / "a.wav") == "empty file"


def test_missing_file_and_folder_are_unreadable(tmp_path):
    assert _reason(tmp_path / "missing.flac") == "unreadable file"
    (tmp_path / "folder.wav").mkdir()
    assert _reason(tmp_path / "folder.wav") == "unreadable file"


def test_text_and_image_bytes_are_not_audio(tmp_path):
    (tmp_path / "notes.mp3").write_text("liner notes, not audio\n")
    (tmp_path / "cover.flac").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(500))
    assert _reason(tmp_path / "notes.mp3") == "not audio"
    assert _reason(tmp_path / "cover.flac") == "not audio"


@pytest.mark.parametrize("damage", ["garbage_after_header", "truncated", "header_only"])
def test_damaged_audio_is_corrupt(tmp_path, damage):
    rng = np.random.default_rng(1)
    sf.write(tmp_path / "good.flac", 0.3 * rng.standard_normal(RATE * 2), RATE, subtype="PCM_16")
    data = (tmp_path / "good.flac").read_bytes()
    broken = {"garbage_after_header": data[:200] + rng.bytes(4000),
              "truncated": data[:len(data) // 2],
              "header_only": b"RIFF" + bytes(40)}[damage]
    (tmp_path / "bad.flac").write_bytes(broken)
    assert _reason(tmp_path / "bad.flac") == "corrupt audio"


def test_shorter_than_one_segment_is_too_short(tmp_path):
    sf.write(tmp_path / "short.wav", _tone(2.9), RATE)
    assert _reason(tmp_path / "short.wav") == "too short"


def test_digital_silence_and_near_silence_are_silent(tmp_path):
    sf.write(tmp_path / "zeros.wav", np.zeros(RATE * 4, dtype=np.float32), RATE)
    sf.write(tmp_path / "hiss.flac", _tone(4.0) * 1e-4, RATE, subtype="PCM_24")  # about -86 dBFS
    assert _reason(tmp_path / "zeros.wav") == "silent"
    assert _reason(tmp_path / "hiss.flac") == "silent"
    sf.write(tmp_path / "quiet.wav", _tone(4.0) * 0.01, RATE)  # about -46 dBFS: quiet music, kept
    assert audio_files.track_segments(str(tmp_path / "quiet.wav"), features.AudioFeatureParams()).shape[0] == 1


def test_every_decode_reason_is_documented():
    doc = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs",
                       "ingestion.md")
    text = open(doc, encoding="utf-8").read()
    for reason in audio_decoding.DEAD_LETTER_REASONS:
        assert f"`{reason}`" in text, reason


# --------------------------------------------------------------------------- formats, rates, channels


@pytest.mark.parametrize("name,rate,channels,kwargs", [
    ("a.wav", 44100, 2, {}),
    ("b.flac", 48000, 6, {"subtype": "PCM_24"}),
    ("c.ogg", 16000, 1, {"format": "OGG", "subtype": "VORBIS"}),
    ("d.mp3", 44100, 2, {"format": "MP3"}),
])
def test_any_format_rate_and_channel_count_becomes_mono_at_the_configured_rate(tmp_path, name, rate,
                                                                               channels, kwargs):
    sf.write(tmp_path / name, _tone(2.0, rate, 440.0, channels), rate, **kwargs)

    waveform = audio_files.load_audio(str(tmp_path / name), features.AudioFeatureParams())

    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert abs(waveform.shape[0] - 2.0 * RATE) < 0.06 * RATE  # MP3 adds encoder padding
    spectrum = np.abs(np.fft.rfft(waveform))
    assert abs(np.argmax(spectrum) * RATE / waveform.shape[0] - 440.0) < 5.0


def test_decoding_matches_librosa_load(tmp_path):
    import librosa

    sf.write(tmp_path / "s.wav", np.stack([_tone(1.0, 44100, 300.0), _tone(1.0, 44100, 900.0)], 1), 44100)
    expected, _ = librosa.load(str(tmp_path / "s.wav"), sr=RATE, mono=True, res_type="soxr_hq")
    np.testing.assert_allclose(audio_files.load_audio(str(tmp_path / "s.wav"), features.AudioFeatureParams()),
                               expected, atol=1e-6)


# --------------------------------------------------------------------------- the job on a catalogue CSV


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """A metadata CSV of 36 clips by 9 artists in 3 genres, plus one row per bad class."""
    root = tmp_path_factory.mktemp("catalogue")
    (root / "clips").mkdir()
    rows = ["path,genre,artist,track_id"]
    for index in range(36):
        artist = f"Artist {index % 9}"
        genre = ("pop", "rock", "jazz")[index % 3]
        name = f"clips/{index:02d}.wav"
        sf.write(root / name, _tone(0.6, RATE, 200.0 + 20 * index), RATE)
        rows.append(f"{name},{genre},{artist},track-{index:02d}")
    (root / "clips/empty.wav").write_bytes(b"")
    (root / "clips/notes.wav").write_text("not audio\n")
    sf.write(root / "clips/short.wav", _tone(0.2), RATE)
    sf.write(root / "clips/silence.wav", np.zeros(RATE, dtype=np.float32), RATE)
    (root / "clips/corrupt.flac").write_bytes(b"fLaC" + bytes(300))
    bad = {"clips/empty.wav": "empty file", "clips/notes.wav": "not audio", "clips/short.wav": "too short",
           "clips/silence.wav": "silent", "clips/corrupt.flac": "corrupt audio",
           "clips/missing.wav": "unreadable file", "clips/zz-copy.wav": "duplicate track_id"}
    for name in bad:
        track_id = "track-00" if name == "clips/zz-copy.wav" else ""
        rows.append(f"{name},pop,Other,{track_id}")
    (root / "tracks.csv").write_text("\n".join(rows) + "\n")
    return root, bad


def test_catalogue_csv_job_keeps_artists_and_tracks_on_one_side_and_reconciles(catalogue, tmp_path):
    root, bad = catalogue
    examples = Artifact("AudioExamples", str(tmp_path / "examples"))
    aeg.run({}, {"examples": examples}, {
        "metadata_csv": str(root / "tracks.csv"), "feature_params": SMALL,
        "split_fractions": {"train": 0.4, "eval": 0.3, "test": 0.3}})

    manifest = json.loads(open(examples.path(aeg.MANIFEST_FILE), encoding="utf-8").read())
    assert manifest["inputs"] == 36 + len(bad) == manifest["tracks"] + manifest["dead_letters"]
    assert manifest["dead_letters_per_reason"] == dict(collections.Counter(bad.values()))
    dead = {os.path.relpath(r["path"], root): r["reason"]
            for r in beam_io.read_dead_letters(examples.path(aeg.DEAD_LETTERS_FILE))}
    assert dead == bad

    params = features.AudioFeatureParams.from_dict(SMALL)
    spec = audio_records.feature_spec(params.frames_per_segment, params.n_mels)
    splits_of = collections.defaultdict(set)
    statistics = json.loads(open(examples.path(aeg.STATISTICS_FILE), encoding="utf-8").read())
    for split in beam_io.SPLITS:
        files = tf.io.gfile.glob(beam_io.split_files_pattern(examples.uri, split))
        frames = []
        for serialized in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            record = tf.io.parse_single_example(serialized, spec)
            splits_of["artist", record["artist"].numpy()].add(split)
            splits_of["track", record["track_id"].numpy()].add(split)
            frames.append(record["log_mel"].numpy().reshape(-1, params.n_mels))
        assert statistics[split]["segments"] == manifest["segments_per_split"][split] == len(frames)
        if frames:
            stacked = np.concatenate(frames).astype(np.float64)
            assert statistics[split]["frames"] == stacked.shape[0]
            np.testing.assert_allclose(statistics[split]["log_mel_mean"], stacked.mean(axis=0), atol=1e-4)
            np.testing.assert_allclose(statistics[split]["log_mel_std"], stacked.std(axis=0), atol=1e-4)
    assert sum(key[0] == "artist" for key in splits_of) == 9
    assert sum(key[0] == "track" for key in splits_of) == 36
    assert all(len(splits) == 1 for splits in splits_of.values()), splits_of
    used = set().union(*splits_of.values())
    assert len(used) >= 2, "the proof needs artists on more than one side"
    assert manifest["tracks_per_split"] == {
        split: sum(1 for key, s in splits_of.items() if key[0] == "track" and split in s)
        for split in beam_io.SPLITS}


def test_gtzan_dev_ingests_without_dead_letters(shared_data, tmp_path):
    examples = Artifact("AudioExamples", str(tmp_path / "gtzan"))
    aeg.run({}, {"examples": examples}, {"audio_dir": os.path.join(shared_data, "gtzan_dev")})

    manifest = json.loads(open(examples.path(aeg.MANIFEST_FILE), encoding="utf-8").read())
    assert manifest["dead_letters"] == 0, list(beam_io.read_dead_letters(examples.path(aeg.DEAD_LETTERS_FILE)))
    assert manifest["inputs"] == manifest["tracks"] == 60
    assert manifest["segments"] == 60 * 10
    assert len(manifest["labels"]) == 10
