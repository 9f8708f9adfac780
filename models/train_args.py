"""The arguments a model's ``run_fn`` receives from the Trainer component.

Models know nothing of the pipeline: the Trainer fills this in, in the way of
TFX's ``FnArgs``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from musicrec.models.features import AudioFeatureParams


@dataclasses.dataclass
class TrainArgs:
    """Everything ``run_fn(args) -> dict`` needs.

    Attributes:
        train_files: GZIP TFRecord paths of the training split.
        eval_files: GZIP TFRecord paths of the validation split (early stopping).
        examples_dir: URI of the examples artifact (``labels.txt`` or
            ``vocab.txt`` and ``manifest.json`` live there).
        model_dir: folder to write to: the SavedModel goes to
            ``<model_dir>/serving`` and metrics to ``<model_dir>/train_metrics.json``.
        hparams: model hyperparameters by name; unknown names are an error.
        feature_params: audio front-end parameters (genre model only).
        frontend: the genre model's front end (``genre_model.frontend``):
            ``"log_mel"`` (the from-scratch LSTM/CRNN over log-mel segments)
            or ``"musicnn_msd"`` (a clip head over the pretrained musicnn
            front end, the pipeline's default).
        seed: seeds Python, NumPy and TensorFlow for a repeatable run.
        warm_start_dir: ``model_dir`` of an earlier run of the same model
            kind; training starts from its checkpoint (see
            ``musicrec.models.warm_start``) instead of random weights.
    """

    train_files: list[str]
    eval_files: list[str]
    examples_dir: str
    model_dir: str
    hparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    feature_params: AudioFeatureParams | None = None
    frontend: str = "log_mel"
    seed: int = 0
    warm_start_dir: str | None = None

    @property
    def serving_dir(self) -> str:
        return f"{self.model_dir}/serving"
