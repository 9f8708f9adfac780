"""Checks on exported SavedModels: which ops they need to run.

TF Serving's stock binary knows only core TensorFlow ops, so a SavedModel
that needs a custom kernel (tensorflow-io's ``IO>...`` ops, tensorflow-text,
addons, ...) loads in Python but fails in the server. These helpers read
``saved_model.pb`` directly and never load the model.
"""
from __future__ import annotations

import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

# Custom op libraries register their ops under a "Namespace>" prefix
# ("IO>", "Addons>", ...); core TensorFlow never uses one.
_NAMESPACE_SEPARATOR = ">"


def _read_saved_model(saved_model_dir: str) -> saved_model_pb2.SavedModel:
    path = os.path.join(saved_model_dir, "saved_model.pb")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no saved_model.pb in {saved_model_dir}")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as handle:
        saved_model.ParseFromString(handle.read())
    return saved_model


def saved_model_op_names(saved_model_dir: str) -> set[str]:
    """Every op type used by a SavedModel's graphs and function library.

    Args:
        saved_model_dir: folder holding ``saved_model.pb``.

    Returns:
        Op type names such as ``"MatMul"``. Calls of the model's own library
        functions (``__inference_...``) are not ops and are left out.

    Raises:
        FileNotFoundError: there is no ``saved_model.pb`` in the folder.
    """
    op_names: set[str] = set()
    for meta_graph in _read_saved_model(saved_model_dir).meta_graphs:
        graph = meta_graph.graph_def
        function_names = {function.signature.name for function in graph.library.function}
        node_lists = [graph.node] + [function.node_def for function in graph.library.function]
        for nodes in node_lists:
            op_names.update(node.op for node in nodes if node.op not in function_names)
    return op_names


def non_core_ops(saved_model_dir: str) -> set[str]:
    """The ops of a SavedModel that stock TensorFlow (and TF Serving) lacks.

    An op is non-core when it lives in a custom namespace (``IO>...``) or is
    not registered by the TensorFlow library this process imported.

    Returns:
        The offending op type names; an empty set means the model needs core
        TensorFlow only.
    """
    return {
        name for name in saved_model_op_names(saved_model_dir)
        if _NAMESPACE_SEPARATOR in name or op_def_registry.get(name) is None
    }


__all__ = ["saved_model_op_names", "non_core_ops"]
