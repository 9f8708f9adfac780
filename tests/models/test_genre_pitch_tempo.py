"""Tests of the pitch (mel-band shift) and tempo (frame resampling) training augmentations.

The unit tests run the maps on small tensors; the last one trains a tiny CRNN
with both through ``run_fn`` on the synthetic examples of ``test_genre_model``
and checks that the exported serving graph holds none of their ops.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_genre_model import LABELS, train_on_examples  # noqa: E402

from musicrec.models import export_check
from musicrec.models.genre.augment import (chain, random_band_shift, random_gain, random_tempo,
                                           shift_bands, stretch_frames)
from musicrec.models.genre.hparams import GenreHParams

FRAMES, BANDS = 20, 8


def _segment(seed: int = 0, frames: int = FRAMES) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).normal(-6.0, 1.0, size=(frames, BANDS))
                       .astype(np.float32))


@pytest.mark.parametrize("bands", [-2, -1, 0, 1, 3])
def test_a_band_shift_moves_band_b_to_b_plus_k_and_repeats_the_edge_band(bands):
    segment = _segment()
    shifted = shift_bands(segment, bands).numpy()
    original = segment.numpy()
    assert shifted.shape == original.shape and shifted.dtype == np.float32
    for band in range(BANDS):
        source = min(max(band - bands, 0), BANDS - 1)  # vacated bands read the nearest edge
        np.testing.assert_array_equal(shifted[:, band], original[:, source])


def test_random_band_shift_draws_whole_shifts_within_the_range_and_keeps_the_label():
    assert random_band_shift(0) is None
    segment = _segment(1)
    candidates = {k: shift_bands(segment, k).numpy() for k in range(-2, 3)}
    shift = random_band_shift(2, seed=4)
    seen = set()
    for _ in range(40):
        shifted, label = shift(segment, tf.constant(7, tf.int64))
        assert int(label) == 7
        matches = [k for k, expected in candidates.items()
                   if np.array_equal(shifted.numpy(), expected)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(candidates)


def test_tempo_at_rate_one_is_the_identity():
    segment = _segment(2)
    np.testing.assert_allclose(stretch_frames(segment, 1.0).numpy(), segment.numpy(), atol=1e-6)


def test_a_slower_tempo_stretches_the_frames_and_keeps_the_length():
    # A ramp over time (frame t holds t in every band) shows where each output frame reads.
    ramp = tf.constant(np.repeat(np.arange(FRAMES, dtype=np.float32)[:, None], BANDS, axis=1))
    stretched = stretch_frames(ramp, 2.0).numpy()
    assert stretched.shape == (FRAMES, BANDS) and stretched.dtype == np.float32
    # Bilinear with half-pixel centres: output frame j reads input frame (j + 0.5) / 2 - 0.5.
    expected = np.clip((np.arange(FRAMES) + 0.5) / 2.0 - 0.5, 0.0, None)
    np.testing.assert_allclose(stretched[:, 0], expected, atol=1e-5)
    np.testing.assert_allclose(stretched, stretched[:, :1].repeat(BANDS, axis=1))


def test_a_faster_tempo_compresses_the_frames_and_edge_pads_to_the_length():
    ramp = tf.constant(np.repeat(np.arange(FRAMES, dtype=np.float32)[:, None], BANDS, axis=1))
    compressed = stretch_frames(ramp, 0.5).numpy()[:, 0]
    assert compressed.shape == (FRAMES,)
    kept = FRAMES // 2
    # Output frame j reads input frame (j + 0.5) * 2 - 0.5 = 2j + 0.5 ...
    np.testing.assert_allclose(compressed[:kept], 2.0 * np.arange(kept) + 0.5, atol=1e-5)
    # ... and the frames past the compressed content repeat its last frame.
    np.testing.assert_allclose(compressed[kept:], compressed[kept - 1])


def test_random_tempo_keeps_shape_dtype_and_label_and_changes_the_segment():
    assert random_tempo(0.0) is None
    with pytest.raises(ValueError, match="max_fraction must be in"):
        random_tempo(1.0)
    # A real segment's length: the stretched length round(126 r) stays 126, an identity, only for
    # |r - 1| < 0.4 %, about 4 % of the draws in +-10 %.
    segment = _segment(3, frames=126)
    stretch = random_tempo(0.1, seed=5)
    changed = 0
    for _ in range(10):
        result, label = stretch(segment, tf.constant(3, tf.int64))
        assert result.shape == segment.shape and result.dtype == tf.float32 and int(label) == 3
        changed += not np.allclose(result.numpy(), segment.numpy(), atol=1e-4)
    assert changed >= 8
    # A segment constant in time stays itself at any rate: only the frame axis is resampled.
    flat = tf.constant(np.tile(np.linspace(-8.0, -2.0, BANDS, dtype=np.float32), (FRAMES, 1)))
    np.testing.assert_allclose(stretch(flat, tf.constant(0))[0].numpy(), flat.numpy(), atol=1e-5)


def test_the_chain_runs_on_unbatched_segments_of_any_length_in_tf_data():
    augment = chain(random_tempo(0.1, seed=1), random_band_shift(2, seed=2), random_gain(6.0, seed=3))
    lengths = [5, 13, FRAMES]
    data = tf.data.Dataset.from_generator(
        lambda: ((_segment(n, frames=n).numpy(), n) for n in lengths),
        output_signature=(tf.TensorSpec([None, BANDS], tf.float32), tf.TensorSpec([], tf.int64)))
    out = list(data.map(augment))
    assert [tuple(segment.shape) for segment, _ in out] == [(n, BANDS) for n in lengths]
    assert [int(label) for _, label in out] == lengths


@pytest.mark.parametrize("values, message", [
    ({"band_shift_max": -1}, "band_shift_max must be >= 0"),
    ({"band_shift_max": 2.5}, "band_shift_max must be a whole number"),
    ({"tempo_max_fraction": -0.1}, "tempo_max_fraction must be in"),
    ({"tempo_max_fraction": 1.0}, "tempo_max_fraction must be in"),
])
def test_bad_pitch_and_tempo_values_are_rejected_with_their_name(values, message):
    with pytest.raises(ValueError, match=message):
        GenreHParams.from_dict(values)


def test_defaults_leave_both_off():
    hparams = GenreHParams()
    assert random_band_shift(hparams.band_shift_max) is None
    assert random_tempo(hparams.tempo_max_fraction) is None


# Ops the augmentations add (resampling, integer and float draws, the shift's gather is generic);
# a serving graph holding one of them would augment at inference.
AUGMENTATION_OPS = {"ResizeBilinear", "RandomUniformInt", "RandomUniform"}


def test_the_augmentation_ops_are_what_a_traced_augmentation_holds():
    # Keeps the export check below honest: these are the op names the maps really add.
    augment = chain(random_tempo(0.1, seed=1), random_band_shift(2, seed=2), random_gain(6.0, seed=3))
    traced = tf.function(augment).get_concrete_function(
        tf.TensorSpec([None, BANDS], tf.float32), tf.TensorSpec([], tf.int64))
    assert AUGMENTATION_OPS <= {op.type for op in traced.graph.get_operations()}


def test_a_crnn_trained_with_pitch_and_tempo_exports_a_serving_graph_without_them(tmp_path):
    hparams = {"architecture": "crnn", "std_pooling": True, "conv_filters": [4, 4],
               "embedding_dim": 4, "learning_rate": 1e-2, "epochs": 2, "batch_size": 16,
               "band_shift_max": 2, "tempo_max_fraction": 0.1, "random_gain_db": 6.0}
    args, metrics, tracks = train_on_examples(tmp_path, hparams)
    assert metrics["hparams"]["band_shift_max"] == 2
    assert metrics["hparams"]["tempo_max_fraction"] == 0.1
    assert all(np.isfinite(metrics["history"]["loss"]))
    assert export_check.non_core_ops(args.serving_dir) == set()
    assert export_check.saved_model_op_names(args.serving_dir) & AUGMENTATION_OPS == set()
    # Inference is deterministic: no draw is left in the served model.
    signature = tf.saved_model.load(args.serving_dir).signatures["serving_default"]
    segments = tf.constant(next(iter(tracks["test"].values()))[1][:, None])   # each a track
    first, second = signature(log_mel=segments), signature(log_mel=segments)
    np.testing.assert_array_equal(first["probabilities"].numpy(), second["probabilities"].numpy())
    assert first["probabilities"].shape == (len(segments), len(LABELS))


def test_the_documented_most_accurate_configuration_is_the_one_the_benchmark_measured():
    """docs/genre.md's YAML block loads through the pipeline config and equals ``crnn_pitch_tempo_x3``."""
    import yaml

    from musicrec.pipeline.config import make_config

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "docs", "genre.md"), encoding="utf-8") as handle:
        section = handle.read().split("### The most accurate configuration on GTZAN dev", 1)[1]
    block = section.split("```yaml", 1)[1].split("```", 1)[0]
    config = make_config(yaml.safe_load(block))
    sys.path.insert(0, os.path.join(root, "benchmarks"))
    try:
        from bench_genre_gtzan import MODELS
    finally:
        sys.path.remove(os.path.join(root, "benchmarks"))
    documented = GenreHParams(**config["genre_model"]["hparams"])
    assert documented == GenreHParams(**MODELS["crnn_pitch_tempo_x3"])
    assert documented != GenreHParams()
