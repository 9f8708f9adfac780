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
- ``model_registry``: which versions each model serves (version policies),
  the file system poller and config reloads; ``served_versions`` what
  requests read of them (lookup, statuses, labels); ``load_retries`` how
  failed loads are retried.
- ``servables``: one loaded SavedModel version and its request checks;
  ``loading`` loads one from disk and replays its warmup.
- ``wire``: what both ends agree on (default ports, signature and file
  names, version folders, SignatureDefs on disk); the only module, with
  ``publish``, that training code may import.
- ``publish``: the serving side of a push (checked warmup request,
  ``models.config``).
- ``batching``: server-side batching of concurrent Predict calls.
- ``metrics``: Prometheus text metrics.
- ``warmup``: ``assets.extra/tf_serving_warmup_requests`` files.
- ``client``: ``PredictionClient`` (gRPC); ``rest_client``: ``RestClient``;
  both with retries.
- ``config``: ModelServerConfig text protos and the real binary's argv.
- ``server_options``: batching and monitoring config files.
- ``flags``: ``main(argv)`` with TF Serving's flag names.
- ``errors``: ``ServingError``, a gRPC status code with its message.
- ``deploy/``: docker-compose and Kubernetes files for ``tensorflow/serving``.
"""
