"""GZIP TFRecord part files and their joining into shards, without TensorFlow on the write side."""
from __future__ import annotations

import collections
import gzip
import json
import os
import zlib

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from musicrec.components import audio_example_gen as aeg  # noqa: E402
from musicrec.components import audio_records  # noqa: E402
from musicrec.components import beam_io  # noqa: E402
from musicrec.components import tfrecord_shards as shards  # noqa: E402
from musicrec.components.base import Artifact  # noqa: E402
from musicrec.models import features  # noqa: E402


def _records(count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.bytes(int(rng.integers(0, 3000))) for _ in range(count)]


def _write_part(path: str, records: list[bytes], background: bool = False) -> shards.Part:
    writer = shards.PartWriter(path, background=background)
    for record in records:
        writer.write_record(record)
    return writer.close()


def _read(path: str) -> list[bytes]:
    return [record.numpy() for record in tf.data.TFRecordDataset(path, compression_type="GZIP")]


def test_joined_parts_read_back_in_order_with_a_valid_gzip_trailer(tmp_path):
    batches = [_records(40, 1), [], _records(1, 2), _records(120, 3)]
    parts = [_write_part(str(tmp_path / f"parts/p{index}.gz"), batch) for index, batch in enumerate(batches)]
    destination = str(tmp_path / "Split-train/data-00000-of-00001.tfrecord.gz")

    assert shards.join_parts(parts, destination) == sum(len(batch) for batch in batches)

    expected = [record for batch in batches for record in batch]
    assert _read(destination) == expected
    # Python's gzip checks the trailer's CRC-32 and length: the combined CRC is right.
    uncompressed = gzip.open(destination).read()
    assert len(uncompressed) == sum(part.size for part in parts)
    assert os.listdir(tmp_path / "parts") == []  # joined parts are deleted
    assert [name for name in os.listdir(tmp_path / "Split-train") if name.startswith(".tmp")] == []


def test_a_single_part_is_renamed(tmp_path):
    records = _records(25, 4)
    part = _write_part(str(tmp_path / "p.gz"), records)
    destination = str(tmp_path / "out/shard.tfrecord.gz")

    assert shards.join_parts([part], destination) == 25
    assert _read(destination) == records
    assert not os.path.exists(part.path)
    with pytest.raises(ValueError, match="no parts"):
        shards.join_parts([], destination)


def test_background_writer_writes_the_same_bytes(tmp_path):
    records = _records(200, 5)
    inline = _write_part(str(tmp_path / "inline.gz"), records)
    threaded = _write_part(str(tmp_path / "threaded.gz"), records, background=True)

    assert open(inline.path, "rb").read() == open(threaded.path, "rb").read()
    assert (inline.records, inline.crc32, inline.size) == (threaded.records, threaded.crc32, threaded.size)


def test_empty_files_and_huffman_only_compression(tmp_path):
    empty = str(tmp_path / "empty.tfrecord.gz")
    shards.write_empty(empty)
    assert _read(empty) == []
    assert open(empty, "rb").read(2) == b"\x1f\x8b"

    floats = [np.random.default_rng(6).standard_normal(4096).astype("<f4").tobytes() for _ in range(20)]
    path = str(tmp_path / "floats.tfrecord.gz")
    assert shards.write_records(path, floats) == 20
    assert _read(path) == floats
    assert os.path.getsize(path) < sum(len(f) for f in floats)  # entropy coding still shrinks floats


@pytest.mark.parametrize("first, second", [(b"", b""), (b"abc", b""), (b"", b"xyz"), (b"a" * 999, bytes(3_000_000))])
def test_crc32_combine_matches_crc_of_the_concatenation(first, second):
    combined = shards.crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second))
    assert combined == zlib.crc32(first + second)


def test_two_bundles_join_into_num_shards_files_with_every_example(tmp_path):
    """Two worker threads write parts of the same shards; the job still writes
    num_shards files per split holding every segment once."""
    rate = 22050
    root = tmp_path / "audio"
    for genre, hz in (("low", 220.0), ("high", 1760.0)):
        (root / genre).mkdir(parents=True)
        t = np.arange(int(1.2 * rate)) / rate
        for index in range(4):
            sf.write(root / genre / f"{genre}{index}.wav", 0.4 * np.sin(2 * np.pi * hz * (index + 1) * t), rate)
    small = {"segment_seconds": 0.5, "segment_hop_seconds": 0.25, "n_mels": 16}
    params = features.AudioFeatureParams.from_dict(small)

    def run(name: str, beam_args: list[str]) -> tuple[dict, collections.Counter]:
        examples = Artifact("AudioExamples", str(tmp_path / name))
        aeg.run({}, {"examples": examples}, {"audio_dir": str(root), "feature_params": small, "num_shards": 2,
                                             "beam_args": beam_args})
        manifest = json.loads(open(examples.path(aeg.MANIFEST_FILE), encoding="utf-8").read())
        seen = collections.Counter()
        for split in beam_io.SPLITS:
            files = tf.io.gfile.glob(beam_io.split_files_pattern(examples.uri, split))
            assert len(files) == 2
            for serialized in tf.data.TFRecordDataset(files, compression_type="GZIP"):
                parsed = tf.io.parse_single_example(serialized, audio_records.feature_spec(params.frames_per_segment,
                                                                                params.n_mels))
                seen[split, parsed["track_id"].numpy().decode(), int(parsed["segment_index"])] += 1
        assert not [name for name in os.listdir(examples.uri) if name.startswith(".tmp")]
        return manifest, seen

    one_manifest, one_seen = run("one", [])
    two_manifest, two_seen = run("two", ["--direct_num_workers=2", "--direct_running_mode=multi_threading"])

    assert two_seen == one_seen and set(one_seen.values()) == {1}
    assert sum(one_seen.values()) == one_manifest["segments"] == two_manifest["segments"] > 8
    assert two_manifest["segments_per_split"] == one_manifest["segments_per_split"]
