"""REST ``:classify`` / ``:regress`` JSON ⇄ protos, as TF Serving's ``util/json_tensor.cc`` reads and writes them.

Request body::

    {"signature_name": "...",                     # optional
     "context": {"feature": value, ...},          # optional, merged into every example
     "examples": [{"feature": value_or_list, ...}, ...]}

A feature value is a number (a JSON integer goes to ``int64_list``, one with
a fraction or exponent to ``float_list``), a string or ``{"b64": ...}``
(``bytes_list``), a boolean (``int64_list``, 1 or 0), or a list of one kind.
Responses: ``{"results": [[[label, score], ...], ...]}`` (classify, one list
per example) and ``{"results": [value, ...]}`` (regress).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, regression_pb2

from musicrec.serving.errors import ServingError

_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def json_type(value: Any) -> str:
    """rapidjson's name of a JSON value's type, as TF Serving's messages print it."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request body → its top-level JSON object (``ParseJson``).

    Raises
    ------
    ServingError
        INVALID_ARGUMENT ``JSON Parse error: ...`` or ``JSON Value: ... Is not object``.
    """
    if not raw:
        raise _invalid("JSON Parse error: The document is empty")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _invalid(f"JSON Parse error: {error}") from None
    if not isinstance(body, dict):
        raise _invalid(f"JSON Value: {json.dumps(body)[:200]} Is not object")
    return body


def signature_name_of(body: dict[str, Any]) -> str:
    """The optional ``signature_name`` (``FillSignature``)."""
    name = body.get("signature_name", "")
    if not isinstance(name, str):
        raise _invalid(f"JSON Value: {json.dumps(body)[:200]} not formatted correctly. "
                       "'signature_name' key must be a string value.")
    return name


def _kind_name(feature: tf.train.Feature) -> str:
    return {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(
        feature.WhichOneof("kind"), "UNKNOWN")


def _add_value(value: Any, name: str, feature: tf.train.Feature) -> None:
    """``AddValueToFeature``: one JSON value appended to the feature's list."""
    def of_kind(kind: str) -> Any:
        current = feature.WhichOneof("kind")
        if current not in (None, kind):
            raise _invalid(f"Unexpected element type in feature: {name} expecting type: {_kind_name(feature)}")
        return getattr(feature, kind).value

    if isinstance(value, bool):
        of_kind("int64_list").append(1 if value else 0)
    elif isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            decoded = base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("Unable to base64 decode") from None
        of_kind("bytes_list").append(decoded)
    elif isinstance(value, str):
        of_kind("bytes_list").append(value.encode("utf-8"))
    elif isinstance(value, int) and _INT64_MIN <= value <= _UINT64_MAX:
        if value > _INT64_MAX:
            of_kind("int64_list")
            raise _invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        of_kind("int64_list").append(value)
    elif isinstance(value, (int, float)):  # rapidjson reads integers beyond 64 bits as doubles
        try:
            number = float(value)
        except OverflowError:
            number = math.copysign(math.inf, value)
        of_kind("float_list").append(number)
    else:
        raise _invalid(f"Feature: {name} has element with unexpected JSON type: {json_type(value)}")


def example_from_json(value: Any) -> tf.train.Example:
    """``MakeExampleFromJsonObject``: ``{"feature": value_or_list}`` → tf.Example."""
    if not isinstance(value, dict):
        raise _invalid(f"Example must be JSON object but got JSON {json_type(value)}")
    example = tf.train.Example()
    for name, content in value.items():
        feature = tf.train.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_value(item, name, feature)
        example.features.feature[name].CopyFrom(feature)
    return example


def fill_example_request(raw: bytes, request: Any) -> None:
    """A ``:classify`` / ``:regress`` body → ``request.model_spec.signature_name`` and ``request.input``.

    Raises
    ------
    ServingError
        INVALID_ARGUMENT with TF Serving's messages.
    """
    body = parse_json_object(raw)
    request.model_spec.signature_name = signature_name_of(body)
    model_input = request.input
    if "context" in body:
        model_input.example_list_with_context.context.CopyFrom(example_from_json(body["context"]))
    if "examples" not in body:
        raise _invalid(f"JSON Value: {json.dumps(body)[:200]} When method is classify, key 'examples' "
                       "is expected and was not found")
    examples = body["examples"]
    if not isinstance(examples, list):
        raise _invalid(f"JSON Value: {json.dumps(body)[:200]} Expecting 'examples' value to be an list/array")
    if not examples:
        raise _invalid(f"JSON Value: {json.dumps(body)[:200]} 'examples' value is an empty array")
    target = (model_input.example_list_with_context.examples if "context" in body
              else model_input.example_list.examples)
    for item in examples:
        target.add().CopyFrom(example_from_json(item))


def _float_json(value: float) -> float:
    # The shortest decimal that reads back as the same float32, as TF Serving prints scores.
    return float(str(np.float32(value)))


def classification_json(result: classification_pb2.ClassificationResult) -> dict[str, Any]:
    """``MakeJsonFromClassificationResult``: ``{"results": [[[label, score], ...], ...]}``."""
    if not result.classifications:
        raise _invalid("Cannot convert empty ClassificationResults to JSON")
    return {"results": [[[entry.label, _float_json(entry.score)] for entry in classifications.classes]
                        for classifications in result.classifications]}


def regression_json(result: regression_pb2.RegressionResult) -> dict[str, Any]:
    """``MakeJsonFromRegressionResult``: ``{"results": [value, ...]}``."""
    if not result.regressions:
        raise _invalid("Cannot convert empty RegressionResults to JSON")
    return {"results": [_float_json(regression.value) for regression in result.regressions]}
