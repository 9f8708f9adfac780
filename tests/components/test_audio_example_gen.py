"""Tests of the audio_example_gen Beam job on tiny generated audio files."""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import apache_beam as beam  # noqa: E402
import tensorflow as tf  # noqa: E402
from apache_beam.testing.test_pipeline import TestPipeline  # noqa: E402
from apache_beam.testing.util import assert_that, equal_to  # noqa: E402

from musicrec.components import audio_decoding, audio_records, audio_sources  # noqa: E402
from musicrec.components import audio_example_gen as aeg  # noqa: E402
from musicrec.components import beam_io  # noqa: E402
from musicrec.components.base import Artifact  # noqa: E402
from musicrec.models import audio_files, features  # noqa: E402

CLIP_SECONDS = 3.5
SAMPLE_RATE = 22050
# Good tracks: (genre, file name, seconds) -- the expected segment counts derive from these.
GOOD_FILES = {
    "rock/sine.wav": CLIP_SECONDS,
    "rock/noise.flac": CLIP_SECONDS,
    "jazz/stereo44k.wav": CLIP_SECONDS,
    "jazz/tone.ogg": CLIP_SECONDS,
}
BAD_FILES = {  # file -> its exact dead-letter reason
    "rock/corrupt.flac": "corrupt audio",
    "rock/empty.wav": "empty file",
    "jazz/notes.wav": "not audio",
    "jazz/short.wav": "too short",
    "jazz/silence.wav": "silent",
}


def _sine(seconds: float, rate: int, hz: float) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> str:
    """A folder-per-genre tree: 4 decodable clips, 4 bad files and entries to ignore."""
    root = tmp_path_factory.mktemp("audio")
    (root / "rock").mkdir()
    (root / "jazz").mkdir()
    rng = np.random.default_rng(7)
    sf.write(root / "rock/sine.wav", _sine(CLIP_SECONDS, SAMPLE_RATE, 440.0), SAMPLE_RATE)
    sf.write(root / "rock/noise.flac", 0.3 * rng.standard_normal(int(CLIP_SECONDS * SAMPLE_RATE)),
             SAMPLE_RATE, subtype="PCM_16")
    stereo = np.stack([_sine(CLIP_SECONDS, 44100, 220.0), _sine(CLIP_SECONDS, 44100, 3000.0)], axis=1)
    sf.write(root / "jazz/stereo44k.wav", stereo, 44100)
    sf.write(root / "jazz/tone.ogg", _sine(CLIP_SECONDS, SAMPLE_RATE, 660.0), SAMPLE_RATE,
             format="OGG", subtype="VORBIS")
    sf.write(root / "jazz/short.wav", _sine(1.0, SAMPLE_RATE, 440.0), SAMPLE_RATE)
    sf.write(root / "jazz/silence.wav", np.zeros(int(CLIP_SECONDS * SAMPLE_RATE)), SAMPLE_RATE)
    flac_head = (root / "rock/noise.flac").read_bytes()[:200]
    (root / "rock/corrupt.flac").write_bytes(flac_head + rng.bytes(4000))
    (root / "rock/empty.wav").write_bytes(b"")
    (root / "jazz/notes.wav").write_text("these are liner notes, not audio\n")
    # Ignored: hidden files, nested folders, files beside the genre folders.
    sf.write(root / "jazz/.hidden.wav", _sine(CLIP_SECONDS, SAMPLE_RATE, 440.0), SAMPLE_RATE)
    (root / "rock/live").mkdir()
    sf.write(root / "rock/live/nested.wav", _sine(CLIP_SECONDS, SAMPLE_RATE, 440.0), SAMPLE_RATE)
    (root / "README.txt").write_text("not a genre\n")
    return str(root)


def _read_examples(uri: str, split: str, frames: int, n_mels: int) -> list[dict]:
    files = tf.io.gfile.glob(beam_io.split_files_pattern(uri, split))
    assert files, f"no shards for {split}"
    spec = audio_records.feature_spec(frames, n_mels)
    records = []
    for serialized in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        parsed = tf.io.parse_single_example(serialized, spec)
        records.append({key: value.numpy() for key, value in parsed.items()})
    return records


# --------------------------------------------------------------------------- listing


def test_list_sources_folder_per_genre_skips_hidden_nested_and_loose_files(audio_dir):
    sources, labels = audio_sources.list_sources(audio_dir=audio_dir)

    assert labels == ["jazz", "rock"]
    listed = {os.path.relpath(s.path, audio_dir): s for s in sources}
    assert set(listed) == set(GOOD_FILES) | set(BAD_FILES)
    for relative, source in listed.items():
        assert source.genre == relative.split("/")[0]
        assert source.track_id == os.path.splitext(os.path.basename(relative))[0]
        assert source.artist == ""


def test_list_sources_metadata_csv_resolves_relative_paths(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "meta.csv").write_text(
        "path,genre,artist,track_id\n"
        "clips/a.wav,pop,Ann,t-1\n"
        "/abs/b.flac,rock,,\n")

    sources, labels = audio_sources.list_sources(metadata_csv=str(tmp_path / "meta.csv"))

    assert labels == ["pop", "rock"]
    assert sources == [
        audio_sources.AudioSource(path="/abs/b.flac", genre="rock", track_id="b", artist=""),
        audio_sources.AudioSource(path=f"{tmp_path}/clips/a.wav", genre="pop", track_id="t-1", artist="Ann"),
    ]


def test_list_sources_rejects_bad_requests(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        audio_sources.list_sources()
    with pytest.raises(FileNotFoundError):
        audio_sources.list_sources(audio_dir=str(tmp_path / "missing"))
    (tmp_path / "meta.csv").write_text("path,genre\nclips/a.wav,\n")
    with pytest.raises(ValueError, match="meta.csv:2"):
        audio_sources.list_sources(metadata_csv=str(tmp_path / "meta.csv"))


# --------------------------------------------------------------------------- splitting


def test_assign_split_follows_fractions_and_keeps_artists_together():
    tracks = [audio_sources.AudioSource(path=f"/x/{i}.wav", genre="g", track_id=f"track-{i}") for i in range(4000)]
    counts = collections.Counter(audio_sources.assign_split(t) for t in tracks)
    assert abs(counts["train"] / 4000 - 0.8) < 0.03
    assert abs(counts["eval"] / 4000 - 0.1) < 0.02
    assert abs(counts["test"] / 4000 - 0.1) < 0.02

    by_artist = collections.defaultdict(set)
    for i in range(600):
        source = audio_sources.AudioSource(path=f"/x/{i}.wav", genre="g", track_id=f"t{i}", artist=f"artist-{i % 40}")
        by_artist[source.artist].add(audio_sources.assign_split(source))
    assert all(len(splits) == 1 for splits in by_artist.values())
    assert len(set().union(*by_artist.values())) == 3

    everything_to_test = {"train": 0.0, "eval": 0.0, "test": 1.0}
    assert {audio_sources.assign_split(t, everything_to_test) for t in tracks[:50]} == {"test"}


def test_assign_split_is_stable_across_interpreters():
    code = ("from musicrec.components.audio_sources import AudioSource, assign_split\n"
            "print(','.join(assign_split(AudioSource('p', 'g', f't{i}')) for i in range(200)))")
    outputs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True)
        outputs.add(result.stdout.strip().splitlines()[-1])
    local = ",".join(audio_sources.assign_split(audio_sources.AudioSource("p", "g", f"t{i}")) for i in range(200))
    assert outputs == {local}


def test_check_split_fractions_rejects_bad_fractions():
    with pytest.raises(ValueError, match="sum to 1"):
        audio_sources.check_split_fractions({"train": 0.8, "eval": 0.1, "test": 0.2})
    with pytest.raises(ValueError, match="exactly"):
        audio_sources.check_split_fractions({"train": 0.9, "test": 0.1})


# --------------------------------------------------------------------------- records


@pytest.mark.parametrize("shape", [(2, 3), (40, 8), (129, 64)])  # 1-, 2- and 3-byte payload lengths
def test_segment_example_round_trips_through_tf_parsing(shape):
    segment = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    source = audio_sources.AudioSource("/x/a.wav", "rock", "a-1", "Ann")

    serialized = audio_records.segment_example_bytes(segment, 4, source, 7)
    assert audio_records.segment_example(segment, 4, source, 7).SerializeToString(deterministic=True) == serialized
    parsed = tf.io.parse_single_example(serialized, audio_records.feature_spec(*shape))

    np.testing.assert_array_equal(parsed["log_mel"].numpy().reshape(shape), segment)
    assert (parsed["frames"], parsed["n_mels"]) == shape
    assert (parsed["label"], parsed["segment_index"]) == (4, 7)
    assert [parsed[k].numpy() for k in ("genre", "track_id", "artist")] == [b"rock", b"a-1", b"Ann"]


# --------------------------------------------------------------------------- Beam pipeline


def test_pipeline_emits_examples_dead_letters_and_reconciled_manifest(audio_dir, tmp_path):
    sources, labels = audio_sources.list_sources(audio_dir=audio_dir)
    params = features.AudioFeatureParams()
    expected_segments = sum(features.expected_segments(s, params) for s in GOOD_FILES.values())
    output_uri = str(tmp_path / "examples")

    def check_dead_letters(records):
        by_name = {os.path.relpath(r["path"], audio_dir): r["reason"] for r in records}
        assert by_name == BAD_FILES

    def check_manifest(manifests):
        (manifest,) = manifests
        assert manifest["inputs"] == len(sources) == manifest["tracks"] + manifest["dead_letters"]
        assert manifest["tracks"] == len(GOOD_FILES)
        assert manifest["dead_letters"] == len(BAD_FILES)
        assert manifest["dead_letters_per_reason"] == {reason: 1 for reason in BAD_FILES.values()}
        assert manifest["segments"] == expected_segments == sum(manifest["segments_per_split"].values())
        assert manifest["segment_shape"] == [params.frames_per_segment, params.n_mels]

    with TestPipeline(runner=beam_io.LOCAL_RUNNER) as pipeline:
        outputs = aeg.build_pipeline(pipeline, sources, labels, output_uri, params)
        assert_that(outputs["dead_letters"], check_dead_letters, label="DeadLetters")
        assert_that(outputs["manifest"], check_manifest, label="Manifest")

    written = sum(len(_read_examples(output_uri, split, params.frames_per_segment, params.n_mels))
                  for split in beam_io.SPLITS)
    assert written == expected_segments
    assert [name for name in os.listdir(output_uri) if name.startswith(".tmp")] == []  # parts folder gone
    written_dead = list(beam_io.read_dead_letters(f"{output_uri}/{aeg.DEAD_LETTERS_FILE}"))
    assert sorted(os.path.relpath(r["path"], audio_dir) for r in written_dead) == sorted(BAD_FILES)


def test_pipeline_turns_duplicate_track_ids_into_dead_letters(audio_dir, tmp_path):
    sine = os.path.join(audio_dir, "rock/sine.wav")
    sources = [audio_sources.AudioSource(sine, "rock", "same-id", "Ann"),
               audio_sources.AudioSource(os.path.join(audio_dir, "rock/noise.flac"), "rock", "same-id", "Ann")]

    with TestPipeline(runner=beam_io.LOCAL_RUNNER) as pipeline:
        outputs = aeg.build_pipeline(pipeline, sources, ["rock"], str(tmp_path / "dup"))
        assert_that(outputs["dead_letters"]
                    | beam.Map(lambda r: (r["path"], r["reason"])),
                    equal_to([(sine, "duplicate track_id")]), label="Dup")  # noise.flac sorts first and is kept
        assert_that(outputs["manifest"] | beam.Map(
            lambda m: (m["inputs"], m["tracks"], m["dead_letters"])), equal_to([(2, 1, 1)]), label="Counts")


@pytest.mark.parametrize("baseline_vectors", [True, False])
def test_each_track_carries_the_classical_baseline_vector_of_its_audio_unless_told_not_to(
        audio_dir, tmp_path, baseline_vectors):
    from musicrec.models import genre_baseline
    from musicrec.models.genre.data import stored_baseline_vectors

    sources = [s for s in audio_sources.list_sources(audio_dir=audio_dir)[0]
               if os.path.relpath(s.path, audio_dir) in GOOD_FILES]
    output_uri = str(tmp_path / "examples")
    # Every track in train, so one split holds them all.
    with TestPipeline(runner=beam_io.LOCAL_RUNNER) as pipeline:
        aeg.build_pipeline(pipeline, sources, ["jazz", "rock"], output_uri,
                           split_fractions={"train": 1.0, "eval": 0.0, "test": 0.0},
                           baseline_vectors=baseline_vectors)
    stored = stored_baseline_vectors(tf.io.gfile.glob(beam_io.split_files_pattern(output_uri, "train")))
    if not baseline_vectors:
        assert stored is None
        return
    vectors, labels = stored
    assert sorted(vectors) == sorted(s.track_id for s in sources)
    for source in sources:
        # The 44.1 kHz stereo file too: the vector is of its 22 050 Hz mono mix, as the baseline's.
        np.testing.assert_allclose(vectors[source.track_id], genre_baseline.track_vector(source.path),
                                   rtol=1e-5, atol=1e-4)
        assert labels[source.track_id] == ["jazz", "rock"].index(source.genre)


def test_duplicate_track_ids_are_found_while_listing():
    first = audio_sources.AudioSource("/a/1.wav", "rock", "same")
    second = audio_sources.AudioSource("/b/2.wav", "rock", "same")
    other = audio_sources.AudioSource("/c/3.wav", "jazz", "other")

    kept, dead = audio_decoding.drop_duplicate_track_ids([other, second, first])

    assert kept == [first, other]
    assert [(r["path"], r["reason"]) for r in dead] == [("/b/2.wav", audio_decoding.REASON_DUPLICATE)]
    assert "/a/1.wav" in dead[0]["detail"]


def test_shard_writer_writes_readable_gzip_records_atomically(tmp_path):
    records = [bytes([i]) * (i * 100) for i in range(1, 30)]
    path = beam_io.shard_path(str(tmp_path), "eval", 1, 3)

    assert beam_io.write_tfrecord_shard(path, iter(records)) == len(records)
    beam_io.write_empty_shards(str(tmp_path), 3, [("eval", 1)])

    assert path.endswith("Split-eval/data-00001-of-00003.tfrecord.gz")
    assert [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")] == records
    with open(path, "rb") as handle:
        assert handle.read(2) == b"\x1f\x8b"  # a GZIP file, whatever the zlib strategy
    for split in beam_io.SPLITS:
        shards = sorted(tf.io.gfile.glob(beam_io.split_files_pattern(str(tmp_path), split)))
        assert len(shards) == 3
        assert sum(1 for shard in shards for _ in tf.data.TFRecordDataset(shard, compression_type="GZIP")) == (
            len(records) if split == "eval" else 0)
    assert not [name for name in os.listdir(tmp_path / "Split-eval") if name.startswith(".tmp")]


def test_build_pipeline_rejects_genre_without_label(tmp_path):
    source = audio_sources.AudioSource("/x/a.wav", "pop", "a")
    with pytest.raises(ValueError, match="missing from labels"):
        aeg.build_pipeline(TestPipeline(runner=beam_io.LOCAL_RUNNER), [source], ["rock"], str(tmp_path / "out"))


# --------------------------------------------------------------------------- component end to end


def test_run_writes_contract_layout_matching_features(audio_dir, tmp_path):
    # Overlapping 1.5 s segments give 3 per clip; short.wav (1 s) stays too short.
    feature_params = {"segment_seconds": 1.5, "segment_hop_seconds": 1.0, "n_mels": 32}
    params = features.AudioFeatureParams.from_dict(feature_params)
    examples = Artifact("AudioExamples", str(tmp_path / "examples"))

    aeg.SPEC.executor({}, {"examples": examples},
                      {"audio_dir": audio_dir, "feature_params": feature_params, "num_shards": 2,
                       "split_fractions": {"train": 0.5, "eval": 0.25, "test": 0.25}})

    labels = open(examples.path(aeg.LABELS_FILE), encoding="utf-8").read().splitlines()
    assert labels == ["jazz", "rock"]
    manifest = json.loads(open(examples.path(aeg.MANIFEST_FILE), encoding="utf-8").read())
    frames, n_mels = params.frames_per_segment, params.n_mels
    assert manifest["segment_shape"] == [frames, n_mels]
    assert manifest["feature_params"] == params.to_dict()
    assert manifest["inputs"] == manifest["tracks"] + manifest["dead_letters"]
    assert examples.properties["tracks"] == manifest["tracks"] == len(GOOD_FILES)

    split_of_track: dict[str, set] = collections.defaultdict(set)
    segments_per_label = {split: collections.Counter() for split in beam_io.SPLITS}
    segments_of_track: dict[str, dict[int, np.ndarray]] = collections.defaultdict(dict)
    for split in beam_io.SPLITS:
        assert len(tf.io.gfile.glob(beam_io.split_files_pattern(examples.uri, split))) == 2
        records = _read_examples(examples.uri, split, frames, n_mels)
        assert len(records) == manifest["segments_per_split"][split]
        for record in records:
            assert (record["frames"], record["n_mels"]) == (frames, n_mels)
            genre, track_id = record["genre"].decode(), record["track_id"].decode()
            assert labels[record["label"]] == genre
            assert record["artist"] == b""
            split_of_track[track_id].add(split)
            segments_per_label[split][genre] += 1
            segments_of_track[track_id][int(record["segment_index"])] = record["log_mel"].reshape(frames, n_mels)

    assert all(len(splits) == 1 for splits in split_of_track.values())
    for split in beam_io.SPLITS:
        assert manifest["segments_per_label"][split] == {label: segments_per_label[split][label] for label in labels}
        assert manifest["tracks_per_split"][split] == sum(
            1 for splits in split_of_track.values() if split in splits)

    for relative in GOOD_FILES:
        track_id = os.path.splitext(os.path.basename(relative))[0]
        reference = audio_files.track_segments(os.path.join(audio_dir, relative), params)
        written = segments_of_track[track_id]
        assert reference.shape[0] == features.expected_segments(CLIP_SECONDS, params) > 1
        assert sorted(written) == list(range(reference.shape[0]))
        np.testing.assert_array_equal(np.stack([written[i] for i in sorted(written)]), reference)

    dead = list(beam_io.read_dead_letters(examples.path(aeg.DEAD_LETTERS_FILE)))
    assert len(dead) == manifest["dead_letters"] == len(BAD_FILES)
    assert all(set(record) == {"path", "reason", "detail"} and record["detail"] for record in dead)
    assert sorted(record["reason"] for record in dead) == sorted(BAD_FILES.values())


def test_run_rejects_unknown_params(tmp_path):
    examples = Artifact("AudioExamples", str(tmp_path / "examples"))
    with pytest.raises(ValueError, match="unknown params"):
        aeg.run({}, {"examples": examples}, {"audio_dir": str(tmp_path), "shards": 2})
