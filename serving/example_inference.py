"""Classify, Regress and MultiInference: signatures that read serialized tf.Examples.

TF Serving runs these APIs on a signature whose one input, ``inputs``, takes
a 1-D string tensor of serialized ``tf.Example``s, and reads the outputs
``classes`` / ``scores`` (classification) or ``outputs`` (regression). By
default (``--enable_signature_method_name_check=false``) it checks only that
structure, so a TF2 export, whose signatures all carry the predict method
name, can be classified; with the check on, the signature's ``method_name``
must be ``tensorflow/serving/classify`` or ``.../regress``. The checks, their
order and their messages follow ``servables/tensorflow/classifier.cc``,
``regressor.cc`` and ``multi_inference.cc`` of TF Serving 2.17.1. A
predict-only model (``genre``, ``next_track``) gets the INVALID_ARGUMENT
TF Serving answers.

MultiInference runs each task's signature on the same examples; TF Serving
makes one session run for all of them, which gives the same outputs.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    regression_pb2,
)

from musicrec.serving.errors import ServingError

DEFAULT_SIGNATURE_NAME = "serving_default"
CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"
REGRESS_METHOD_NAME = "tensorflow/serving/regress"
EXAMPLES_INPUT = "inputs"  # kClassifyInputs and kRegressInputs
CLASSES_OUTPUT = "classes"
SCORES_OUTPUT = "scores"
REGRESSION_OUTPUT = "outputs"

# (signature name, {input alias: array}) -> {output alias: array}
Run = Callable[[str, Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _debug_string(signature: meta_graph_pb2.SignatureDef) -> str:
    return text_format.MessageToString(signature, as_one_line=True)


def serialized_examples(model_input: Any) -> np.ndarray:
    """A ``tensorflow.serving.Input`` → 1-D ``object`` array of serialized tf.Examples.

    With ``example_list_with_context`` the context's features are merged into
    every example (the example's own value wins), as TF Serving does.

    Raises
    ------
    ServingError
        INVALID_ARGUMENT ``Input is empty.`` when it holds no example.
    """
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [example.SerializeToString() for example in model_input.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = model_input.example_list_with_context
        serialized = []
        for example in with_context.examples:
            combined = type(example)()
            combined.CopyFrom(with_context.context)
            for key, feature in example.features.feature.items():
                combined.features.feature[key].CopyFrom(feature)
            serialized.append(combined.SerializeToString())
    else:
        serialized = []
    if not serialized:
        raise _invalid("Input is empty.")
    examples = np.empty(len(serialized), dtype=object)
    examples[:] = serialized
    return examples


def _find_signature(signature_defs: Mapping[str, meta_graph_pb2.SignatureDef], signature_name: str,
                    not_found: str) -> tuple[str, meta_graph_pb2.SignatureDef]:
    name = signature_name or DEFAULT_SIGNATURE_NAME
    if name not in signature_defs:
        raise _invalid(f"{not_found}{name}")
    return name, signature_defs[name]


def check_classification_signature(signature: meta_graph_pb2.SignatureDef, check_method_name: bool) -> None:
    """TF Serving's ``PreProcessClassification`` checks; raises INVALID_ARGUMENT."""
    if check_method_name and signature.method_name != CLASSIFY_METHOD_NAME:
        raise _invalid(f"Expected classification signature method_name to be {CLASSIFY_METHOD_NAME}. "
                       f"Was: {signature.method_name}")
    if len(signature.inputs) != 1:
        raise _invalid("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise _invalid(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if EXAMPLES_INPUT not in signature.inputs:
        raise _invalid(f"No classification inputs found in SignatureDef: {_debug_string(signature)}")
    if CLASSES_OUTPUT not in signature.outputs and SCORES_OUTPUT not in signature.outputs:
        raise _invalid(f'Expected classification signature outputs to contain at least one of "{CLASSES_OUTPUT}" '
                       f'or "{SCORES_OUTPUT}". Signature was: {_debug_string(signature)}')


def check_regression_signature(signature: meta_graph_pb2.SignatureDef, check_method_name: bool) -> None:
    """TF Serving's ``PreProcessRegression`` checks; raises INVALID_ARGUMENT."""
    if check_method_name and signature.method_name != REGRESS_METHOD_NAME:
        raise _invalid(f"Expected regression signature method_name to be {REGRESS_METHOD_NAME}. "
                       f"Was: {signature.method_name}")
    if len(signature.inputs) != 1:
        raise _invalid("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise _invalid("Expected one output Tensor.")
    if EXAMPLES_INPUT not in signature.inputs:
        raise _invalid(f"No regression inputs found in SignatureDef: {_debug_string(signature)}")
    if REGRESSION_OUTPUT not in signature.outputs:
        raise _invalid(f"No regression outputs found in SignatureDef: {_debug_string(signature)}")


def _dims(array: np.ndarray) -> str:
    return "[" + ",".join(str(size) for size in array.shape) + "]"


def _dtype_name(array: np.ndarray) -> str:
    if array.dtype == object or array.dtype.kind == "S":
        return "DT_STRING"
    try:
        return types_pb2.DataType.Name(tf.dtypes.as_dtype(array.dtype).as_datatype_enum)
    except TypeError:
        return str(array.dtype)


def _checked_matrix(array: np.ndarray | None, what: str, want_string: bool, rows: int) -> np.ndarray | None:
    if array is None:
        return None
    if array.ndim != 2:
        raise _invalid(f"Expected Tensor shape: [batch_size num_classes] but got {_dims(array)}")
    is_string = array.dtype == object or array.dtype.kind == "S"
    if is_string != want_string or (not want_string and array.dtype != np.float32):
        raise _invalid(f"Expected {what} Tensor of {'DT_STRING' if want_string else 'DT_FLOAT'}. "
                       f"Got: {_dtype_name(array)}")
    if array.shape[0] != rows:
        raise _invalid(f"Expected {what} output batch size of {rows}. Got: {array.shape[0]}")
    return array


def classification_result(outputs: Mapping[str, np.ndarray], rows: int,
                          result: classification_pb2.ClassificationResult) -> None:
    """TF Serving's ``PostProcessClassificationResult``: check and copy classes/scores."""
    classes = _checked_matrix(outputs.get(CLASSES_OUTPUT), "classes", True, rows)
    scores = _checked_matrix(outputs.get(SCORES_OUTPUT), "scores", False, rows)
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise _invalid(f"Tensors class and score should match in dim_size(1). "
                       f"Got {classes.shape[1]} vs. {scores.shape[1]}")
    width = (classes if classes is not None else scores).shape[1]
    for row in range(rows):
        classifications = result.classifications.add()
        for column in range(width):
            entry = classifications.classes.add()
            if classes is not None:
                entry.label = bytes(classes[row, column]).decode("utf-8", "replace")
            if scores is not None:
                entry.score = float(scores[row, column])


def regression_result(outputs: Mapping[str, np.ndarray], rows: int,
                      result: regression_pb2.RegressionResult) -> None:
    """TF Serving's ``PostProcessRegressionResult``: check and copy one value per example."""
    values = outputs[REGRESSION_OUTPUT]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise _invalid(f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
                       f"but got {_dims(values)}")
    if values.shape[0] != rows:
        raise _invalid(f"Input batch size did not match output batch size: {rows} vs. {values.shape[0]}")
    if values.dtype != np.float32:
        raise _invalid(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_name(values)}")
    for value in values.reshape(-1):
        result.regressions.add().value = float(value)


def _response_spec(spec: Any, name: str, signature_name: str, version: int) -> None:
    # MakeModelSpec (servables/tensorflow/util.cc): the request's name, the
    # signature it ran (empty means serving_default) and the servable's version.
    spec.name = name
    spec.signature_name = signature_name or DEFAULT_SIGNATURE_NAME
    spec.version.value = version


def _run_one(servable: Any, request: Any, run: Run, check_signature, fill_result, response: Any) -> Any:
    # RunClassify / RunRegress: find and check the signature, read the examples, run, convert.
    name, signature = _find_signature(servable.signature_defs, request.model_spec.signature_name,
                                      "No signature was found with the name: ")
    check_signature(signature)
    examples = serialized_examples(request.input)
    _response_spec(response.model_spec, request.model_spec.name, request.model_spec.signature_name,
                   servable.version)
    fill_result(run(name, {EXAMPLES_INPUT: examples}), len(examples), response.result)
    return response


def classify(servable: Any, request: classification_pb2.ClassificationRequest, run: Run,
             check_method_name: bool = False) -> classification_pb2.ClassificationResponse:
    """Classify: ``servable``'s signature on the request's examples (TF Serving's ``RunClassify``).

    Parameters
    ----------
    servable : Servable
        The version the request's model spec resolved to.
    request : ClassificationRequest
        Model spec and ``tensorflow.serving.Input``.
    run : callable
        ``run(signature_name, {alias: array}) -> {alias: array}``, e.g.
        ``ServingCore``'s batched call.
    check_method_name : bool
        ``--enable_signature_method_name_check``.
    """
    return _run_one(servable, request, run, lambda signature: check_classification_signature(
        signature, check_method_name), classification_result, classification_pb2.ClassificationResponse())


def regress(servable: Any, request: regression_pb2.RegressionRequest, run: Run,
            check_method_name: bool = False) -> regression_pb2.RegressionResponse:
    """Regress: as ``classify``, for a regression signature (TF Serving's ``RunRegress``)."""
    return _run_one(servable, request, run, lambda signature: check_regression_signature(
        signature, check_method_name), regression_result, regression_pb2.RegressionResponse())


def _checked_tasks(servable: Any, tasks: Sequence[inference_pb2.InferenceTask],
                   check_method_name: bool) -> list[str]:
    """Signature name of each task, after TF Serving's ``TensorFlowMultiInferenceRunner`` checks."""
    model_name, names = "", []
    for task in tasks:
        if not task.model_spec.name:
            raise _invalid("Found ModelSpec with an empty model name.")
        if model_name and model_name != task.model_spec.name:
            raise _invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        model_name = task.model_spec.name
        name = task.model_spec.signature_name or DEFAULT_SIGNATURE_NAME
        if name in names:
            raise _invalid(f"Duplicate evaluation of signature: {name}")
        names.append(name)
        if name not in servable.signature_defs:
            raise _invalid(f"Requested signature not found in model graph: {name}")
        if task.method_name == CLASSIFY_METHOD_NAME:
            check_classification_signature(servable.signature_defs[name], check_method_name)
        elif task.method_name == REGRESS_METHOD_NAME:
            check_regression_signature(servable.signature_defs[name], check_method_name)
        else:
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                               f"Unsupported signature method_name: {task.method_name}")
    return names


def multi_inference(servable: Any, request: inference_pb2.MultiInferenceRequest, run: Run,
                    check_method_name: bool = False) -> inference_pb2.MultiInferenceResponse:
    """MultiInference: several classify/regress tasks of one model on the same examples."""
    names = _checked_tasks(servable, request.tasks, check_method_name)
    examples = serialized_examples(request.input)
    outputs = {name: run(name, {EXAMPLES_INPUT: examples}) for name in names}
    response = inference_pb2.MultiInferenceResponse()
    for task, name in zip(request.tasks, names):
        result = response.results.add()
        if task.method_name == CLASSIFY_METHOD_NAME:
            classification_result(outputs[name], len(examples), result.classification_result)
        else:
            regression_result(outputs[name], len(examples), result.regression_result)
        _response_spec(result.model_spec, task.model_spec.name, task.model_spec.signature_name,
                       servable.version)
    return response
