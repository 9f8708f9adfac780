"""The serving side of a push: a new version's warmup request, and ``models.config``.

The Pusher (``musicrec.components.pusher``) copies a blessed SavedModel into
``<serving_base>/<model_name>/``; what a server will do with that folder is
serving's knowledge, so it is decided here, and the training side imports only
this module and :mod:`musicrec.serving.wire`:

- a warmup request (``assets.extra/tf_serving_warmup_requests``) is built from
  the version's ``serving_default`` signature and checked by loading the
  version exactly as the server does, because TF Serving refuses to load a
  version whose warmup fails;
- ``<serving_base>/models.config`` lists every model with a version, in the
  ModelServerConfig text format both servers read.
"""
from __future__ import annotations

import os

from musicrec.serving.config import write_model_config
from musicrec.serving.loading import load_servable
from musicrec.serving.warmup import build_predict_warmup, warmup_path, write_warmup_requests
from musicrec.serving.wire import MODELS_CONFIG, list_versions, read_signature_defs


def add_warmup_request(export_dir: str, model_name: str) -> str | None:
    """Write and verify one warmup request in ``export_dir``.

    Returns
    -------
    str or None
        None when the warmup file was written and the model answered it;
        otherwise the reason it was not kept (the file is then removed).
    """
    try:
        log = build_predict_warmup(read_signature_defs(export_dir), model_name)
        write_warmup_requests(export_dir, [log])
        load_servable(model_name, 0, export_dir)  # replays the warmup, as the server will
    except Exception as error:  # any failure only costs the warmup, never the push
        if os.path.exists(warmup_path(export_dir)):
            os.remove(warmup_path(export_dir))
        return f"{type(error).__name__}: {error}"
    return None


def write_serving_config(serving_base: str) -> str:
    """Rewrite ``<serving_base>/models.config`` listing every model with a version; returns its path."""
    models = {
        name: os.path.join(serving_base, name)
        for name in sorted(os.listdir(serving_base))
        if not name.startswith(".") and list_versions(os.path.join(serving_base, name))
    }
    return write_model_config(os.path.join(serving_base, MODELS_CONFIG), models)
