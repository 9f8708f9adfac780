"""Beam RunInference over a SavedModel signature: the TensorFlow model handler, set up for ours.

Beam's :class:`~apache_beam.ml.inference.tensorflow_inference.TFModelHandlerNumpy`
loads models with ``tf.keras.models.load_model``, which Keras 3 refuses for a
SavedModel folder, and calls ``model(batch)``, which a SavedModel restored by
``tf.saved_model.load`` does not offer for a named signature.
:class:`SignatureModelHandler` keeps the handler (batching, shared model per
process, metrics, exception handling all stay Beam's) and changes only those
two things: it loads with ``tf.saved_model.load`` and calls one named
signature, exactly as the gRPC server does, so a batch answer and an online
answer come from the same graph.

How a batch of elements becomes the signature's input tensors is a
*collate* function (module level, so that Beam can pickle it):
:func:`collate_tracks` stacks tracks' segments, padding with the genre
model's padding segments (which it leaves out); :func:`collate_track_keys` pads
``[length_i]`` string prefixes with ``""`` (which the next-track model masks);
:func:`collate_key_list` stacks single keys into ``[n]``.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
# Beam's handler imports tensorflow_hub, which needs pkg_resources: setup.py pins
# setuptools below 81, the first release without it.
from apache_beam.ml.inference import tensorflow_inference
from apache_beam.ml.inference.base import PredictionResult

# batch of elements → the signature's keyword inputs (numpy arrays) and, for elements
# that each hold several rows (a track's segments), the row count of each element
Collate = Callable[[Sequence[Any]], "Mapping[str, np.ndarray] | tuple[Mapping[str, np.ndarray], list[int]]"]


def signature_names(saved_model_dir: str) -> list[str]:
    """Callable signature names of a SavedModel (read from its proto; nothing is loaded)."""
    from musicrec.serving.wire import read_signature_defs

    return sorted(name for name in read_signature_defs(saved_model_dir) if not name.startswith("__"))


def signature_io(saved_model_dir: str, signature_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(inputs, outputs)`` of one signature: name → ``TensorInfo`` (dtype, shape).

    Raises:
        ValueError: the SavedModel has no such signature; the message lists those it has.
    """
    from musicrec.serving.wire import read_signature_defs

    signatures = read_signature_defs(saved_model_dir)
    if signature_name not in signatures:
        raise ValueError(f"{saved_model_dir} has no signature {signature_name!r}; it has "
                         f"{signature_names(saved_model_dir)}")
    signature = signatures[signature_name]
    return dict(signature.inputs), dict(signature.outputs)


def collate_tracks(batch: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Tracks' segments ``[n_i, frames, n_mels]`` → ``{"log_mel": float32 [tracks, max n_i, frames, n_mels]}``.

    One row per track, as the genre ``serving_default`` takes them: a track
    with fewer segments is padded with whole padding segments, which the
    model leaves out (``models.genre.evaluate.stack_tracks``), so padding
    never changes a track's answer.
    """
    from musicrec.models.genre.evaluate import stack_tracks

    return {"log_mel": stack_tracks(list(batch))}


def keyed_segment_count(keyed_track: tuple[Any, np.ndarray]) -> int:
    """Batch weight of one ``(key, segments)`` track, its segment count (Beam's ``element_size_fn``)."""
    return len(keyed_track[1])


def pad_track_keys(prefixes: Sequence[Sequence[str]]) -> np.ndarray:
    """Prefixes of ``length_i`` keys → object array ``[batch, max_length]`` right-padded with ``""``.

    ``""`` is the next-track model's padding token, which it masks.
    """
    longest = max(1, max((len(prefix) for prefix in prefixes), default=0))
    padded = np.full((len(prefixes), longest), "", dtype=object)
    for row, prefix in enumerate(prefixes):
        padded[row, :len(prefix)] = list(prefix)
    return padded


def collate_track_keys(batch: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    """Session prefixes → ``{"track_keys": string [batch, max_length]}`` (``serving_default``)."""
    return {"track_keys": pad_track_keys(batch)}


def collate_recommend(batch: Sequence[tuple[Sequence[str], Sequence[str], int, bool]]) -> dict[str, np.ndarray]:
    """``(prefix, history, k, exclude_seen)`` per user → the next-track ``recommend`` signature's inputs.

    ``track_keys`` and ``history_keys`` string ``[batch, longest]`` right-padded
    with ``""``, ``k`` int32 ``[batch]``, ``exclude_seen`` bool ``[batch]``.
    """
    return {"track_keys": pad_track_keys([element[0] for element in batch]),
            "history_keys": pad_track_keys([element[1] for element in batch]),
            "k": np.array([element[2] for element in batch], dtype=np.int32),
            "exclude_seen": np.array([element[3] for element in batch], dtype=bool)}


def collate_key_list(batch: Sequence[str]) -> dict[str, np.ndarray]:
    """Single track keys → ``{"track_keys": string [n]}`` (``track_embeddings``)."""
    return {"track_keys": np.array(list(batch), dtype=object)}


def _to_tensor(value: np.ndarray):
    import tensorflow as tf

    if value.dtype == object:
        return tf.constant(value.astype(bytes) if value.size else value, dtype=tf.string)
    return tf.constant(value)


def split_outputs(outputs: Mapping[str, Any], batch_size: int,
                  rows_per_element: Sequence[int] | None = None) -> list[dict[str, np.ndarray]]:
    """Batched signature outputs → one dict per element (string outputs decoded to ``str``).

    Without ``rows_per_element`` element ``i`` gets row ``i`` of each output;
    with it, element ``i`` gets its ``rows_per_element[i]`` consecutive rows.
    """
    rows = sum(rows_per_element) if rows_per_element is not None else batch_size
    arrays = {}
    for name, tensor in outputs.items():
        array = tensor.numpy() if hasattr(tensor, "numpy") else np.asarray(tensor)
        if array.dtype == object:
            array = np.vectorize(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v,
                                 otypes=[object])(array) if array.size else array
        if array.ndim == 0 or array.shape[0] != rows:
            raise ValueError(f"signature output {name!r} has shape {array.shape}, "
                             f"expected a leading batch dimension of {rows}")
        arrays[name] = array
    if rows_per_element is None:
        return [{name: array[row] for name, array in arrays.items()} for row in range(batch_size)]
    bounds = np.cumsum([0, *rows_per_element])
    return [{name: array[start:end] for name, array in arrays.items()}
            for start, end in zip(bounds[:-1], bounds[1:])]


class SignatureInference:
    """The handler's ``inference_fn``: collate, call the signature, split per element."""

    def __init__(self, signature_name: str, collate: Collate, output_names: Sequence[str] | None = None,
                 inputs: Mapping[str, Any] | None = None):
        self.signature_name = signature_name
        self.collate = collate
        self.output_names = list(output_names) if output_names else None
        # constant extra inputs (e.g. ``k``) given to every call
        self.inputs = dict(inputs or {})

    def __call__(self, model, batch: Sequence[Any], inference_args: Mapping[str, Any] | None,
                 model_id: str | None = None) -> Iterable[PredictionResult]:
        if not batch:  # BatchElements may flush an empty batch when one element outweighs its target
            return []
        signature = model.signatures[self.signature_name]
        collated = self.collate(batch)
        inputs, rows = collated if isinstance(collated, tuple) else (collated, None)
        feed = {name: _to_tensor(value) for name, value in {**inputs, **self.inputs}.items()}
        outputs = signature(**feed, **dict(inference_args or {}))
        if self.output_names:
            outputs = {name: outputs[name] for name in self.output_names}
        # The answer is all a caller needs; echoing the (large) input back through Beam costs time.
        return [PredictionResult(None, prediction, model_id)
                for prediction in split_outputs(outputs, len(batch), rows)]


class SignatureModelHandler(tensorflow_inference.TFModelHandlerNumpy):
    """Beam's TensorFlow model handler for one signature of a SavedModel.

    Args:
        saved_model_dir: the SavedModel folder (a pushed version, local or any
            ``tf.io.gfile`` URI).
        inference: a :class:`SignatureInference` (signature name, collate, outputs).
        min_batch_size, max_batch_size: elements per signature call (Beam's
            ``BatchElements`` picks sizes in that range as it measures).
    """

    def __init__(self, saved_model_dir: str, inference: SignatureInference,
                 min_batch_size: int = 1, max_batch_size: int = 64, **kwargs):
        super().__init__(saved_model_dir, inference_fn=inference, min_batch_size=min_batch_size,
                         max_batch_size=max_batch_size, **kwargs)
        self._signature_name = inference.signature_name

    def load_model(self):
        """``tf.saved_model.load`` of the folder, checked to have the signature."""
        import tensorflow as tf

        model = tf.saved_model.load(self._model_uri)
        if self._signature_name not in model.signatures:
            raise ValueError(f"{self._model_uri} has no signature {self._signature_name!r}; it has "
                             f"{sorted(model.signatures)}")
        return model

    def get_metrics_namespace(self) -> str:
        return f"BulkInferrer_{self._signature_name}"


__all__ = ["SignatureModelHandler", "SignatureInference", "collate_tracks", "keyed_segment_count", "collate_track_keys",
           "collate_key_list", "collate_recommend", "pad_track_keys", "split_outputs", "signature_names",
           "signature_io"]
