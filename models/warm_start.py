"""Warm starting: a trained model's weights and vocabulary, kept beside its SavedModel.

Every ``run_fn`` saves a checkpoint under ``<model_dir>/checkpoint/``; a later
``run_fn`` given that folder as ``TrainArgs.warm_start_dir`` starts from those
weights instead of random ones. Checkpoints are plain Keras weight files plus
the token list (genre labels or track vocabulary), never pickles.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Sequence

import keras
import numpy as np

from musicrec.atomic import write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
WEIGHTS_FILE = "model.weights.h5"
TOKENS_FILE = "tokens.txt"
HPARAMS_FILE = "hparams.json"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    weights_path: str
    tokens: list[str]
    hparams: dict[str, Any]


def save_checkpoint(model: keras.Model, model_dir: str, tokens: Sequence[str],
                    hparams: dict[str, Any]) -> None:
    """Writes ``model``'s weights, ``tokens`` (one per line) and ``hparams`` under ``<model_dir>/checkpoint``."""
    folder = os.path.join(model_dir, CHECKPOINT_DIR)
    os.makedirs(folder, exist_ok=True)
    model.save_weights(os.path.join(folder, WEIGHTS_FILE))
    write_text_atomic(os.path.join(folder, TOKENS_FILE), "".join(f"{t}\n" for t in tokens))
    write_json_atomic(os.path.join(folder, HPARAMS_FILE), hparams)


def load_checkpoint(warm_start_dir: str | None) -> Checkpoint | None:
    """The checkpoint a trained model left in ``warm_start_dir``, or ``None`` when it has none."""
    if not warm_start_dir:
        return None
    folder = os.path.join(warm_start_dir, CHECKPOINT_DIR)
    weights = os.path.join(folder, WEIGHTS_FILE)
    if not os.path.isfile(weights):
        logger.warning("warm start: no checkpoint in %s; training from scratch", warm_start_dir)
        return None
    with open(os.path.join(folder, TOKENS_FILE), encoding="utf-8") as handle:
        tokens = [line.rstrip("\n") for line in handle]
    with open(os.path.join(folder, HPARAMS_FILE), encoding="utf-8") as handle:
        hparams = json.load(handle)
    return Checkpoint(weights, tokens, hparams)


def shape_mismatch(checkpoint: Checkpoint, hparams: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """The hyperparameters among ``keys`` that change weight shapes between checkpoint and now."""
    return [k for k in keys if checkpoint.hparams.get(k) != hparams.get(k)]


def merge_vocabulary(known: Sequence[str], new: Sequence[str]) -> list[str]:
    """``known`` in its order (so known tracks keep their ids), then tracks only in ``new``."""
    seen = set(known)
    return [*known, *(token for token in new if token not in seen)]


def copy_leading_rows(source: np.ndarray, target: np.ndarray, axis: int) -> np.ndarray:
    """``target`` with its first ``source.shape[axis]`` entries along ``axis`` replaced by ``source``."""
    merged = np.array(target, copy=True)
    index = [slice(None)] * merged.ndim
    index[axis] = slice(0, source.shape[axis])
    merged[tuple(index)] = source
    return merged
