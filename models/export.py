"""Exporting a Keras serving model as a TF Serving SavedModel, checked and atomic."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Callable, Collection

import keras
import tensorflow as tf

logger = logging.getLogger(__name__)


def check_signature(saved_model_dir: str, inputs: Collection[str], outputs: Collection[str]) -> None:
    """Raises ``RuntimeError`` unless ``serving_default`` takes exactly ``inputs`` and returns exactly ``outputs``."""
    signature = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    found_inputs = set(signature.structured_input_signature[1])
    found_outputs = set(signature.structured_outputs)
    if found_inputs != set(inputs) or found_outputs != set(outputs):
        raise RuntimeError(
            f"exported signature takes {sorted(found_inputs)} and returns {sorted(found_outputs)}; "
            f"the contract is {sorted(inputs)} -> {sorted(outputs)}")


def export_serving_model(serving_model: keras.Model, serving_dir: str, inputs: Collection[str],
                         outputs: Collection[str]) -> None:
    """Exports with ``model.export()`` into a staging folder, checks the signature, renames.

    Raises:
        RuntimeError: the exported ``serving_default`` breaks the contract;
            ``serving_dir`` is then left as it was.
    """
    export_staged(
        lambda path: serving_model.export(path, format="tf_saved_model", verbose=False),
        lambda path: check_signature(path, inputs, outputs), serving_dir)
    logger.info("exported %s to %s", serving_model.name, serving_dir)


def export_staged(write_out: Callable[[str], None], check: Callable[[str], None],
                  serving_dir: str) -> None:
    """Writes a SavedModel with ``write_out(path)`` into a staging folder beside
    ``serving_dir``, runs ``check(path)``, then renames it to ``serving_dir``.

    A reader of ``serving_dir`` never sees half a model, and a model that
    fails ``check`` (which raises) never replaces the one there.
    """
    parent = os.path.dirname(os.path.abspath(serving_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-serving-", dir=parent)
    try:
        export_path = os.path.join(staging, "saved_model")
        # Keras prints "Saved artifact at <staging path>" even with verbose=False.
        interactive = keras.config.is_interactive_logging_enabled()
        keras.config.disable_interactive_logging()
        try:
            write_out(export_path)
        finally:
            if interactive:
                keras.config.enable_interactive_logging()
        check(export_path)
        if os.path.exists(serving_dir):
            shutil.rmtree(serving_dir)
        os.replace(export_path, serving_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
