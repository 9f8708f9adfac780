"""TF Serving's gRPC services on a ``ServingCore``.

``PredictionService``: Predict (outputs in the typed ``*_val`` fields, as
``servables/tensorflow/predict_util.cc`` writes them), Classify, Regress and
MultiInference (``example_inference``), GetModelMetadata. ``ModelService``:
GetModelStatus and HandleReloadConfigRequest. Requests are counted and timed
as ``model_servers/prediction_service_impl.cc`` does: Predict, Classify and
Regress only, the latency of successful ones only.
"""
from __future__ import annotations

import logging

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from musicrec.serving import example_inference
from musicrec.serving.config import model_entries_from_proto
from musicrec.serving.core import (
    SIGNATURE_DEF_FIELD,
    ServingCore,
    model_metadata_response,
    model_status_response,
)
from musicrec.serving.errors import ServingError
from musicrec.serving.tensor_proto import fill_typed_fields
from musicrec.serving.wire import DEFAULT_SIGNATURE_NAME

LOGGER = logging.getLogger(__name__)


def _answer(handler, request, context: grpc.ServicerContext):
    try:
        return handler(request)
    except ServingError as error:
        context.abort(error.code, error.message)
    except Exception as error:  # a bug must become a status, not a dead worker
        LOGGER.exception("request failed unexpectedly")
        context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")


def _require_model_spec(request) -> None:
    if not request.HasField("model_spec"):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """PredictionService backed by a ``ServingCore``."""

    def __init__(self, core: ServingCore) -> None:
        self._core = core
        self._observed_predict = self._observed("Predict", self._predict)
        self._observed_classify = self._observed("Classify", self._classify)
        self._observed_regress = self._observed("Regress", self._regress)

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext):
        return _answer(self._observed_predict, request, context)

    def Classify(self, request: classification_pb2.ClassificationRequest, context: grpc.ServicerContext):
        return _answer(self._observed_classify, request, context)

    def Regress(self, request: regression_pb2.RegressionRequest, context: grpc.ServicerContext):
        return _answer(self._observed_regress, request, context)

    def MultiInference(self, request: inference_pb2.MultiInferenceRequest, context: grpc.ServicerContext):
        return _answer(self._multi_inference, request, context)

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ):
        return _answer(self._get_model_metadata, request, context)

    def _observed(self, api: str, handler):
        def run(request):
            with self._core.observe(request.model_spec.name, api, "GRPC"):
                return handler(request)
        return run

    def _predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        _require_model_spec(request)
        servable = self._core.servable_for_spec(request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE_NAME
        call = servable.prepare(signature_name, request.inputs, list(request.output_filter),
                                self._core.max_decoded_bytes)
        outputs = self._core.run(servable, call)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for alias, array in outputs.items():
            fill_typed_fields(response.outputs[alias], array)
        return response

    def _classify(self, request: classification_pb2.ClassificationRequest):
        _require_model_spec(request)
        servable = self._core.servable_for_spec(request.model_spec)
        return example_inference.classify(servable, request, self._core.example_runner(servable),
                                          self._core.check_method_name)

    def _regress(self, request: regression_pb2.RegressionRequest):
        _require_model_spec(request)
        servable = self._core.servable_for_spec(request.model_spec)
        return example_inference.regress(servable, request, self._core.example_runner(servable),
                                         self._core.check_method_name)

    def _multi_inference(self, request: inference_pb2.MultiInferenceRequest):
        # The first task's spec picks the servable (multi_inference_helper.cc).
        first = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        servable = self._core.servable_for_spec(first)
        return example_inference.multi_inference(servable, request, self._core.example_runner(servable),
                                                 self._core.check_method_name)

    def _get_model_metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        _require_model_spec(request)
        if not request.metadata_field:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "GetModelMetadataRequest must specify at least one metadata_field",
            )
        for metadata_field in request.metadata_field:
            if metadata_field != SIGNATURE_DEF_FIELD:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {metadata_field} is not supported"
                )
        return model_metadata_response(self._core.servable_for_spec(request.model_spec))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """ModelService: version statuses and config reloads."""

    def __init__(self, core: ServingCore) -> None:
        self._core = core

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):
        return _answer(self._get_model_status, request, context)

    def HandleReloadConfigRequest(self, request: model_management_pb2.ReloadConfigRequest, context):
        return _answer(self._reload, request, context)

    def _get_model_status(
        self, request: get_model_status_pb2.GetModelStatusRequest
    ) -> get_model_status_pb2.GetModelStatusResponse:
        # model_servers/get_model_status_impl.cc: the name and, if set, the
        # version; a version label is not looked at.
        _require_model_spec(request)
        spec = request.model_spec
        version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
        return model_status_response(self._core.registry.status(spec.name, version))

    def _reload(self, request: model_management_pb2.ReloadConfigRequest) -> model_management_pb2.ReloadConfigResponse:
        if request.config.WhichOneof("config") != "model_config_list":
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                               "Only ModelConfigList is currently supported")
        try:
            entries = model_entries_from_proto(request.config, source="ReloadConfigRequest")
        except ValueError as error:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        errors = self._core.registry.reload(entries)
        if errors:
            # ServerCore::WaitUntilModelsAvailable's code for new models that did not load.
            raise ServingError(grpc.StatusCode.UNKNOWN,
                               f"{len(errors)} model(s) did not become available: {'; '.join(errors)}")
        return model_management_pb2.ReloadConfigResponse()
