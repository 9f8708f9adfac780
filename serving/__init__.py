"""musicrec.serving: a TF-Serving-compatible local model server and its gRPC client.

This package reads exported SavedModels only; it never imports training code
(``musicrec.models``, ``musicrec.components`` or ``musicrec.pipeline``).

Modules:
- ``server``: ``LocalModelServer``, the PredictionService gRPC server used when
  the real ``tensorflow_model_server`` binary is not on PATH.
- ``model_registry``: thread-safe map of loaded model versions plus the file
  system poller that picks up new versions.
- ``servables``: version folder discovery and one loaded SavedModel version.
- ``client``: ``PredictionClient``, the gRPC client used by the CLI.
- ``config``: ModelServerConfig text protos and the real binary's argv.
- ``flags``: ``main(argv)`` with TF Serving's flag names.
- ``errors``: ``ServingError``, a gRPC status code with its message.
"""
