"""musicrec.serving: a TF-Serving-compatible local model server and its clients.

This package reads exported SavedModels only; it never imports training code
(``musicrec.models``, ``musicrec.components`` or ``musicrec.pipeline``).

Modules:
- ``server``: ``LocalModelServer``: the gRPC services and the REST API,
  used unless the real ``tensorflow_model_server`` binary is asked for.
- ``grpc_services``: ``PredictionService`` and ``ModelService``.
- ``rest``: TF Serving's REST API (status, metadata, ``:predict``,
  ``:classify``, ``:regress``, metrics) on ``http_transport``'s HTTP server.
- ``json_tensor``: REST JSON (row and columnar formats, b64) ⇄ arrays.
- ``example_inference``: Classify, Regress, MultiInference on tf.Examples;
  ``example_json`` their REST JSON.
- ``core``: what gRPC and REST share: lookup, batching, metrics.
- ``model_registry``: served versions per model (version policies, labels,
  statuses), the file system poller and config reloads; ``load_retries``
  how failed loads are retried.
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
