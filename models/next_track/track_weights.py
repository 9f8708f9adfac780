"""Reading and writing the next-track model's per-track weights (one entry per track id).

Cold start reads the warm tracks' entries and writes the cold tracks' ones
(``cold_start.py``); the layers are found by name (``model.build_model``).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

# Layers whose weights hold one entry per track id (see models/next_track/model.py).
TRACK_LAYERS = ("track_embedding", "next_track_logits")


@dataclasses.dataclass(frozen=True)
class TrackWeight:
    """One weight tensor with an entry per track id: ``layer.weights[index]``, ids along ``axis``."""

    layer: str
    index: int
    axis: int

    @property
    def name(self) -> str:
        return f"{self.layer}/{self.index}"


def track_weights(model, n_ids: int) -> list[TrackWeight]:
    """The per-track weights of a next-track Keras model with ``n_ids`` ids (vocabulary + reserved).

    Every weight of the layers in :data:`TRACK_LAYERS` that has an axis of
    length ``n_ids``: the embedding table ``[n_ids, d]`` (ids on axis 0), the
    output kernel ``[units, n_ids]`` (axis 1) and bias ``[n_ids]``.
    """
    found = []
    for layer_name in TRACK_LAYERS:
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            continue
        for index, weight in enumerate(layer.get_weights()):
            axes = [axis for axis, size in enumerate(weight.shape) if size == n_ids]
            if axes:
                # An embedding table keeps ids first; any other weight (kernel) keeps them last.
                found.append(TrackWeight(layer_name, index,
                                         axes[0] if layer_name == "track_embedding" else axes[-1]))
    if not found:
        raise ValueError(f"model {model.name} has no per-track weights in layers {TRACK_LAYERS}")
    return found


def read_rows(model, weight: TrackWeight, ids: Sequence[int]) -> np.ndarray:
    """``[len(ids), d]``: the entries of ``weight`` for track ``ids``, one row each."""
    values = model.get_layer(weight.layer).get_weights()[weight.index]
    rows = np.take(values, np.asarray(ids), axis=weight.axis)
    return np.moveaxis(rows, weight.axis, 0).reshape(len(ids), -1)


def write_rows(model, weight: TrackWeight, ids: Sequence[int], rows: np.ndarray) -> None:
    """Sets the entries of ``weight`` for track ``ids`` from ``rows [len(ids), d]``."""
    layer = model.get_layer(weight.layer)
    weights = layer.get_weights()
    values = np.moveaxis(weights[weight.index], weight.axis, 0).copy()
    values[np.asarray(ids)] = rows.reshape((len(ids),) + values.shape[1:])
    weights[weight.index] = np.moveaxis(values, 0, weight.axis)
    layer.set_weights(weights)
