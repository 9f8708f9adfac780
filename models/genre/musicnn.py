"""The pretrained MSD_musicnn network as a frozen Keras front end (``genre_model.frontend: musicnn_msd``).

musicnn (J. Pons and X. Serra, "musicnn: pre-trained convolutional neural
networks for music audio tagging", ISMIR 2019 late-breaking demo) was trained
on the Million Song Dataset's 50 most common tags (rock, pop, jazz, blues,
metal, country, Hip-Hop, ...). Its weights come from the TF1 checkpoint that
the ``musicnn==0.1.0`` wheel ships (``musicnn/MSD_musicnn/``), read with
TensorFlow's checkpoint reader only: the package's own code (TF1, numpy<1.17)
is never imported. Licence: see ``NOTICE`` (ISC for the package; its authors'
group also distributes the same model, through Essentia, under CC BY-NC-SA 4.0).

The forward pass is rebuilt here in TF2 core ops (``conv2d``, ``conv1d``,
batch norm in inference form with epsilon 1e-3, max and mean pooling,
``matmul``) and checked against the checkpoint's own graph by
``tests/models/test_genre_musicnn.py``. Per 3 s patch ``[187 frames, 96 mel bands]``:

1. input batch norm (one scalar scale and offset);
2. front end: two timbral convolutions (7 frames x 38 and x 67 bands, 204
   filters each, ReLU, batch norm, max over frequency) and three temporal
   ones (128, 64 and 32 frames x 1 band, 51 filters each, ``same`` padding,
   ReLU, batch norm, max over frequency): 561 channels per frame;
3. mid end: three 1-D convolutions over time (7 frames, 64 filters, ReLU,
   batch norm), the second and third residual; with the front end's output,
   753 channels per frame;
4. back end: max and mean over the patch's frames, interleaved per channel
   (``[max_0, mean_0, max_1, ...]``, 1506 values: :class:`MusicnnFrontEnd`'s
   output), then batch norm, a 200-unit dense layer with ReLU and batch norm:
   the "penultimate" layer (:class:`MusicnnPenultimate`), 200 values per
   patch. The 50-tag output layer is not used.

The input features are :data:`FEATURE_PARAMS` (defined in
:mod:`musicrec.models.genre.frontends`): 16 kHz mono, 512-sample
windows, hop 256, 96 Slaney mel bands from 0 to 8 kHz, centred frames,
``log10(1 + 10000 * mel_power)``, cut into non-overlapping 3 s patches of 187
frames, as musicnn's own extractor computes them (it also rounds the mel power
to float16 before the log; that rounding is left out).
"""
from __future__ import annotations

import functools
import importlib.metadata
import os

import keras
import numpy as np

from musicrec.models.genre.frontends import MUSICNN_MSD_FEATURES

# The wheel whose checkpoint is read, and where in it (Makefile installs it with --no-deps).
CHECKPOINT_PACKAGE = "musicnn"
CHECKPOINT_VERSION = "0.1.0"
CHECKPOINT_DIR = "musicnn/MSD_musicnn"
INSTALL_HINT = (f'pip install --no-deps "{CHECKPOINT_PACKAGE}=={CHECKPOINT_VERSION}" '
                "(make install does it)")

# The features MSD_musicnn reads (defined once, in frontends).
FEATURE_PARAMS = MUSICNN_MSD_FEATURES
PATCH_FRAMES = 187
assert FEATURE_PARAMS.frames_per_segment == PATCH_FRAMES == FEATURE_PARAMS.segment_hop_frames

BATCH_NORM_EPSILON = 1e-3   # tf.compat.v1.layers.batch_normalization's default
FRONT_END_CHANNELS = 561
MID_END_CHANNELS = 753
POOLED_WIDTH = 2 * MID_END_CHANNELS
PENULTIMATE_WIDTH = 200

# (kernel variable, batch-norm variable scope) of each convolution, in the network's order.
_TIMBRAL = (("conv2d", "batch_normalization_1"), ("conv2d_1", "batch_normalization_2"))
_TEMPORAL = (("conv2d_2", "batch_normalization_3"), ("conv2d_3", "batch_normalization_4"),
             ("conv2d_4", "batch_normalization_5"))
_MID_END = (("conv2d_5", "batch_normalization_6"), ("conv2d_6", "batch_normalization_7"),
            ("conv2d_7", "batch_normalization_8"))
_INPUT_NORM = "batch_normalization"
_POOLED_NORM = "batch_normalization_9"
_DENSE = "dense"
_DENSE_NORM = "batch_normalization_10"


class CheckpointMissing(RuntimeError):
    """The musicnn wheel (and so its checkpoint) is not installed."""


def checkpoint_prefix() -> str:
    """The checkpoint's path prefix in the installed wheel (its files are ``<prefix>.index`` ...).

    Found through the package's installed metadata: nothing of it is imported.

    Raises:
        CheckpointMissing: the wheel is absent, or of another version.
    """
    try:
        distribution = importlib.metadata.distribution(CHECKPOINT_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise CheckpointMissing(f"the musicnn_msd genre front end needs the checkpoint of "
                                f"{CHECKPOINT_PACKAGE}=={CHECKPOINT_VERSION}: {INSTALL_HINT}, "
                                "or set genre_model.frontend: log_mel") from exc
    if distribution.version != CHECKPOINT_VERSION:
        raise CheckpointMissing(f"{CHECKPOINT_PACKAGE} {distribution.version} is installed; the "
                                f"musicnn_msd front end was checked against {CHECKPOINT_VERSION}: "
                                f"{INSTALL_HINT}")
    folder = str(distribution.locate_file(CHECKPOINT_DIR))
    # The wheel names its files ".index", ".data-00000-of-00001": the prefix is the folder + "/".
    prefix = os.path.join(folder, "")
    if not os.path.isfile(prefix + ".index"):
        raise CheckpointMissing(f"no checkpoint at {prefix}.index: reinstall with {INSTALL_HINT}")
    return prefix


@functools.lru_cache(maxsize=1)
def checkpoint_weights() -> dict[str, np.ndarray]:
    """Every inference variable of the MSD_musicnn checkpoint, by its TF1 name (float32).

    The optimizer's slots (``.../Adam``) and counters are left out.
    """
    import tensorflow as tf

    # tf.train.load_checkpoint would treat the prefix (a folder) as a folder of
    # checkpoints and follow its "checkpoint" file, which names the authors' machine;
    # the reader it returns is this one.
    reader = tf.compat.v1.train.NewCheckpointReader(checkpoint_prefix())
    names = [name for name in reader.get_variable_to_shape_map()
             if "Adam" not in name and not name.endswith("_power")]
    weights = {name: reader.get_tensor(name).astype(np.float32) for name in names}
    for array in weights.values():
        array.setflags(write=False)
    return weights


def batch_norm_affine(weights: dict[str, np.ndarray], scope: str) -> tuple[np.ndarray, np.ndarray]:
    """A frozen batch norm as ``x * scale + offset`` (float32), from its checkpoint variables."""
    gamma, beta, mean, variance = (weights[f"{scope}/{name}"].astype(np.float64) for name in
                                   ("gamma", "beta", "moving_mean", "moving_variance"))
    scale = gamma / np.sqrt(variance + BATCH_NORM_EPSILON)
    return scale.astype(np.float32), (beta - mean * scale).astype(np.float32)


class _FrozenConstants(keras.layers.Layer):
    """A layer whose weights are fixed arrays, stored as non-trainable variables."""

    def _constant(self, name: str, value: np.ndarray):
        variable = self.add_weight(name=name.replace("/", "_"), shape=value.shape,
                                   initializer="zeros", trainable=False)
        variable.assign(value)
        return variable


class MusicnnFrontEnd(_FrozenConstants):
    """MSD_musicnn up to its pooled features: patches ``[n, frames, 96]`` to ``[n, 1506]``.

    Frozen: all its weights are non-trainable constants from the checkpoint.
    Input: :data:`FEATURE_PARAMS` log-mel patches (187 frames in training;
    any length works, the back end pools over time). Output: per channel of
    the mid end, the max and the mean over the patch's frames, interleaved.
    """

    def __init__(self, **kwargs):
        super().__init__(trainable=False, **kwargs)

    def build(self, input_shape):
        weights = checkpoint_weights()
        self.input_scale, self.input_offset = (
            self._constant(f"input_{name}", value)
            for name, value in zip(("scale", "offset"), batch_norm_affine(weights, _INPUT_NORM)))
        self.convolutions = []
        for kernel_name, norm in _TIMBRAL + _TEMPORAL:
            kernel = weights[f"{kernel_name}/kernel"]                         # [time, freq, 1, out]
            self.convolutions.append((
                self._constant(f"{kernel_name}_kernel", kernel),
                self._constant(f"{kernel_name}_bias", weights[f"{kernel_name}/bias"]),
                *(self._constant(f"{norm}_{name}", value) for name, value in
                  zip(("scale", "offset"), batch_norm_affine(weights, norm)))))
        self.mid_end = []
        for kernel_name, norm in _MID_END:
            # [time, channels, 1, out] over a [frames, channels, 1] image is a 1-D conv over time.
            kernel = weights[f"{kernel_name}/kernel"][:, :, 0, :]
            self.mid_end.append((
                self._constant(f"{kernel_name}_kernel", kernel),
                self._constant(f"{kernel_name}_bias", weights[f"{kernel_name}/bias"]),
                *(self._constant(f"{norm}_{name}", value) for name, value in
                  zip(("scale", "offset"), batch_norm_affine(weights, norm)))))
        super().build(input_shape)

    def call(self, patches):
        import tensorflow as tf  # conv2d's explicit padding and conv1d have no keras.ops form

        image = patches[..., None] * self.input_scale + self.input_offset    # [n, frames, 96, 1]
        # The timbral convolutions pad time only (3 frames either side), then "valid".
        timbral_input = tf.pad(image, [[0, 0], [3, 3], [0, 0], [0, 0]])
        maps = []
        for index, (kernel, bias, scale, offset) in enumerate(self.convolutions):
            timbral = index < len(_TIMBRAL)
            conv = tf.nn.conv2d(timbral_input if timbral else image, kernel, strides=1,
                                padding="VALID" if timbral else "SAME")
            activated = tf.nn.relu(conv + bias) * scale + offset
            maps.append(tf.reduce_max(activated, axis=2))                    # over frequency
        features = [tf.concat(maps, axis=2)]                                 # [n, frames, 561]
        for index, (kernel, bias, scale, offset) in enumerate(self.mid_end):
            padded = tf.pad(features[-1], [[0, 0], [3, 3], [0, 0]])
            out = tf.nn.relu(tf.nn.conv1d(padded, kernel, stride=1, padding="VALID") + bias)
            out = out * scale + offset
            features.append(out if index == 0 else out + features[-1])       # residual
        mid_end = tf.concat(features, axis=2)                                # [n, frames, 753]
        pooled = tf.stack([tf.reduce_max(mid_end, axis=1), tf.reduce_mean(mid_end, axis=1)], axis=2)
        return tf.reshape(pooled, [-1, POOLED_WIDTH])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], POOLED_WIDTH)


class MusicnnPenultimate(_FrozenConstants):
    """MSD_musicnn's penultimate block: ``[..., 1506]`` pooled features to ``[..., 200]``.

    Batch norm (frozen), a 200-unit dense layer with ReLU, batch norm (frozen),
    as in the checkpoint. With ``trainable_dense`` the dense layer's kernel and
    bias are trainable (fine-tuning the last front-end block); the batch norms
    always keep the checkpoint's statistics.
    """

    def __init__(self, trainable_dense: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.trainable_dense = bool(trainable_dense)

    def build(self, input_shape):
        weights = checkpoint_weights()
        self.pooled_scale, self.pooled_offset = (
            self._constant(f"pooled_{name}", value)
            for name, value in zip(("scale", "offset"), batch_norm_affine(weights, _POOLED_NORM)))
        self.dense_kernel = self.add_weight(name="dense_kernel",
                                            shape=(POOLED_WIDTH, PENULTIMATE_WIDTH),
                                            initializer="zeros", trainable=self.trainable_dense)
        self.dense_kernel.assign(weights[f"{_DENSE}/kernel"])
        self.dense_bias = self.add_weight(name="dense_bias", shape=(PENULTIMATE_WIDTH,),
                                          initializer="zeros", trainable=self.trainable_dense)
        self.dense_bias.assign(weights[f"{_DENSE}/bias"])
        self.dense_scale, self.dense_offset = (
            self._constant(f"dense_norm_{name}", value)
            for name, value in zip(("scale", "offset"), batch_norm_affine(weights, _DENSE_NORM)))
        super().build(input_shape)

    def call(self, pooled):
        normalised = pooled * self.pooled_scale + self.pooled_offset
        dense = keras.ops.relu(keras.ops.matmul(normalised, self.dense_kernel) + self.dense_bias)
        return dense * self.dense_scale + self.dense_offset

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], PENULTIMATE_WIDTH)

    def get_config(self):
        return {**super().get_config(), "trainable_dense": self.trainable_dense}


__all__ = ["FEATURE_PARAMS", "PATCH_FRAMES", "POOLED_WIDTH", "PENULTIMATE_WIDTH",
           "CHECKPOINT_PACKAGE", "CHECKPOINT_VERSION", "CheckpointMissing", "checkpoint_prefix",
           "checkpoint_weights", "batch_norm_affine", "MusicnnFrontEnd", "MusicnnPenultimate"]
