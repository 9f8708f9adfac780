"""The hand-written tf.train.Example encoder writes TensorFlow's bytes, and the Beam
worker path of audio_example_gen never imports TensorFlow."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from musicrec.components import example_wire as wire  # noqa: E402

INT64_EDGES = [0, 1, -1, 127, 128, -128, 2 ** 31, -(2 ** 31), 2 ** 63 - 1, -(2 ** 63), 300, 16384]


def _tf_feature(kind: str, values) -> tf.train.Feature:
    if kind == "float":
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    if kind == "int64":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[v.encode("utf-8") if isinstance(v, str) else v for v in values]))


def _wire_feature(kind: str, values) -> wire.EncodedFeature:
    return {"float": wire.floats, "int64": wire.int64s, "bytes": wire.byte_strings}[kind](values)


CASES = {
    "empty lists": {"f": ("float", []), "i": ("int64", []), "b": ("bytes", [])},
    "unicode keys and values": {"genre": ("bytes", ["músique", "日本語", ""]), "ключ": ("int64", [5]),
                                "émoji🎵": ("bytes", [b"\x00\xff raw"])},
    "negative and edge int64": {"ints": ("int64", INT64_EDGES)},
    "special floats": {"x": ("float", [0.0, -0.0, 1.5, -3.25e-30, 3.4e38, float("inf"), float("-inf")])},
    "long lists": {"log_mel": ("float", np.random.default_rng(0).standard_normal(129 * 64).astype(np.float32)),
                   "many": ("int64", list(range(-500, 500, 7))),
                   "blobs": ("bytes", [bytes([i]) * i for i in range(200)])},
    "key order": {"b": ("int64", [2]), "a": ("int64", [1]), "B": ("int64", [0]), "é": ("float", [1.0])},
}


def _prefix_free(keys) -> bool:
    return not any(a != b and b.startswith(a) for a in keys for b in keys)


@pytest.mark.parametrize("case", sorted(CASES))
def test_encoder_bytes_equal_tensorflow_deterministic_serialisation(case):
    spec = CASES[case]
    expected = tf.train.Example(features=tf.train.Features(feature={
        name: _tf_feature(kind, values) for name, (kind, values) in spec.items()}))

    encoded = wire.encode_example({name: _wire_feature(kind, values) for name, (kind, values) in spec.items()})

    assert _prefix_free(spec)
    assert encoded == expected.SerializeToString(deterministic=True)
    assert tf.train.Example.FromString(encoded) == expected


def test_keys_that_prefix_others_parse_to_the_same_message():
    names = ["a", "aa", "ab", "b", "log", "log_mel"]
    expected = tf.train.Example(features=tf.train.Features(feature={
        name: _tf_feature("int64", [index]) for index, name in enumerate(names)}))

    encoded = wire.encode_example({name: wire.int64s([index]) for index, name in enumerate(names)})

    assert tf.train.Example.FromString(encoded) == expected
    assert len(encoded) == len(expected.SerializeToString())


def test_encoded_examples_parse_with_tf_io_parse_example():
    segments = np.random.default_rng(1).standard_normal((3, 4, 5)).astype(np.float32)
    batch = [wire.encode_example({"x": wire.floats(segment), "id": wire.int64s([-index - 1]),
                                  "name": wire.byte_strings([f"tränk-{index}"])})
             for index, segment in enumerate(segments)]

    parsed = tf.io.parse_example(batch, {"x": tf.io.FixedLenFeature([20], tf.float32),
                                         "id": tf.io.FixedLenFeature([], tf.int64),
                                         "name": tf.io.FixedLenFeature([], tf.string)})

    np.testing.assert_array_equal(parsed["x"].numpy().reshape(segments.shape), segments)
    assert parsed["id"].numpy().tolist() == [-1, -2, -3]
    assert [n.decode("utf-8") for n in parsed["name"].numpy()] == ["tränk-0", "tränk-1", "tränk-2"]


def test_float64_input_is_stored_as_float32_like_tensorflow():
    values = np.array([0.1, 1e-45, 123456.789], dtype=np.float64)
    encoded = wire.encode_example({"v": wire.floats(values)})
    expected = tf.train.Example(features=tf.train.Features(feature={"v": _tf_feature("float", values)}))
    assert encoded == expected.SerializeToString(deterministic=True)


def test_varint_matches_protobuf_for_edges():
    for value in INT64_EDGES:
        message = tf.train.Int64List(value=[value])
        # Packed field: tag 0x0a, length, then the varint itself.
        assert message.SerializeToString() == b"\x0a" + wire.varint(len(wire.varint(value))) + wire.varint(value)


def test_audio_worker_path_never_imports_tensorflow(tmp_path):
    """Decoding, encoding, writing shards and finalising the job run without TensorFlow in sys.modules."""
    rate = 22050
    script = textwrap.dedent(f"""
        import sys, json
        import numpy as np, soundfile as sf
        import apache_beam as beam
        from musicrec.components import audio_example_gen as aeg, audio_sources, beam_io
        from musicrec.models import features
        root = {str(tmp_path)!r}
        import os
        os.makedirs(root + "/audio/rock")
        t = np.arange(int(1.2 * {rate})) / {rate}
        sf.write(root + "/audio/rock/a.wav", 0.4 * np.sin(2 * np.pi * 440 * t), {rate})
        open(root + "/audio/rock/bad.wav", "w").write("not audio")
        sources = [audio_sources.AudioSource(root + "/audio/rock/a.wav", "rock", "a"),
                   audio_sources.AudioSource(root + "/audio/rock/bad.wav", "rock", "bad")]
        params = features.AudioFeatureParams(segment_seconds=0.5, segment_hop_seconds=0.5, n_mels=16)
        with beam.Pipeline(options=beam_io.pipeline_options()) as pipeline:
            aeg.build_pipeline(pipeline, sources, ["rock"], root + "/out", params, num_shards=2)
        manifest = json.load(open(root + "/out/manifest.json"))
        print(json.dumps({{"tf": "tensorflow" in sys.modules, "segments": manifest["segments"],
                          "dead": manifest["dead_letters"]}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"tf": False, "segments": 2, "dead": 1}
