"""musicrec.serving: a TF-Serving-compatible local model server and its clients.

This package reads exported SavedModels only; it never imports training code
(``musicrec.models``, ``musicrec.components`` or ``musicrec.pipeline``).

Modules:
- ``server``: ``LocalModelServer``: gRPC ``PredictionService`` and
  ``ModelService``, plus the REST API, used when the real
  ``tensorflow_model_server`` binary is not on PATH.
- ``rest``: TF Serving's REST API (status, metadata, ``:predict``, metrics).
- ``json_tensor``: REST JSON (row and columnar formats, b64) ⇄ arrays.
- ``core``: what gRPC and REST share: lookup, batching, metrics.
- ``model_registry``: served versions per model (version policies, labels,
  statuses), the file system poller and config reloads.
- ``servables``: version folders on disk and one loaded SavedModel version.
- ``batching``: server-side batching of concurrent Predict calls.
- ``metrics``: Prometheus text metrics.
- ``warmup``: ``assets.extra/tf_serving_warmup_requests`` files.
- ``client``: ``PredictionClient`` (gRPC) and ``RestClient``, with retries.
- ``config``: ModelServerConfig text protos and the real binary's argv.
- ``server_options``: batching and monitoring config files.
- ``flags``: ``main(argv)`` with TF Serving's flag names.
- ``errors``: ``ServingError``, a gRPC status code with its message.
- ``deploy/``: docker-compose and Kubernetes files for ``tensorflow/serving``.
"""
