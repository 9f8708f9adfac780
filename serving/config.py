"""TF Serving model config files and the real ``tensorflow_model_server`` command line.

The config file is a text-format ``tensorflow.serving.ModelServerConfig``::

    model_config_list {
      config { name: "genre" base_path: "/abs/serving/genre" model_platform: "tensorflow" }
    }

Both the real binary (``--model_config_file``) and ``LocalModelServer`` (via
``musicrec.serving.flags``) read it, including each model's
``model_version_policy`` (``latest { num_versions: N }``, ``specific {
versions: ... }``, ``all {}``) and ``version_labels`` (``read_model_entries``).
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import grpc
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from musicrec.atomic import write_text_atomic
from musicrec.serving.errors import ServingError
from musicrec.serving.wire import DEFAULT_GRPC_PORT, DEFAULT_HOST

LOGGER = logging.getLogger(__name__)

MODEL_SERVER_BINARY = "tensorflow_model_server"
MODEL_PLATFORM = "tensorflow"
DEFAULT_POLL_WAIT_SECONDS = 1
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def build_model_config(models: Mapping[str, str]) -> model_server_config_pb2.ModelServerConfig:
    """ModelServerConfig listing each model with platform ``tensorflow``.

    Base paths are made absolute, since the server may run from another
    working directory.
    """
    if not models:
        raise ValueError("a model server config needs at least one model")
    config = model_server_config_pb2.ModelServerConfig()
    for name, base_path in models.items():
        if not name:
            raise ValueError("model names must be non-empty")
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = os.path.abspath(base_path)
        entry.model_platform = MODEL_PLATFORM
    return config


def write_model_config(path: str | os.PathLike, models: Mapping[str, str], comment: str | None = None) -> str:
    """Write the text-proto ModelServerConfig for ``models`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; its folder is created when missing.
    models : Mapping[str, str]
        Model name → base path.
    comment : str or None
        Written first as ``#`` comment lines (both servers skip them).

    Returns
    -------
    str
        The absolute path written.
    """
    path = os.path.abspath(path)
    text = text_format.MessageToString(build_model_config(models))
    if comment:
        text = "".join(f"# {line}\n" for line in comment.splitlines()) + text
    write_text_atomic(path, text)
    return path


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model to serve (TF Serving's ``ServableVersionPolicy``).

    ``kind`` is ``"latest"`` (the ``num_versions`` highest), ``"specific"``
    (exactly ``versions``) or ``"all"``.
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """Versions to serve out of the complete ``available`` ones (ascending)."""
        if self.kind == "all":
            return list(available)
        if self.kind == "specific":
            return [version for version in available if version in self.versions]
        return list(available[-self.num_versions:]) if self.num_versions > 0 else []


@dataclass(frozen=True)
class ModelEntry:
    """One model of a ModelServerConfig: where it lives and which versions to serve.

    ``labels`` maps a version label (e.g. ``"stable"``) to a version number.
    """

    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = field(default_factory=dict)


def check_version_labels(
    entries: Iterable[ModelEntry],
    available: Mapping[str, Iterable[int]],
    current_labels: Mapping[str, Mapping[str, int]],
    allow_unavailable: bool = False,
) -> None:
    """Refuse labels on versions that are not AVAILABLE, as TF Serving does.

    ``ServerCore::UpdateModelVersionLabelMap`` (``model_servers/server_core.cc``)
    runs before a config's models are loaded, at startup and on every reload.
    With ``--allow_version_labels_for_unavailable_models`` a label may point to
    a version not loaded yet, unless it already points to another version.

    Parameters
    ----------
    entries : iterable of ModelEntry
        The new config's models.
    available : Mapping[str, iterable of int]
        Model name → AVAILABLE versions now.
    current_labels : Mapping[str, Mapping[str, int]]
        Model name → the labels in force now.
    allow_unavailable : bool
        ``--allow_version_labels_for_unavailable_models``.

    Raises
    ------
    ServingError
        FAILED_PRECONDITION, with TF Serving's message.
    """
    for entry in entries:
        serving = set(available.get(entry.name, ()))
        for label, version in entry.labels.items():
            existing = current_labels.get(entry.name, {}).get(label)
            allowed = allow_unavailable and (existing is None or existing == version)
            if not allowed and version not in serving:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Request to assign label to version {version} of model {entry.name}, "
                    "which is not currently available for inference",
                )


def _policy_of(entry: model_server_config_pb2.ModelConfig, source: str) -> VersionPolicy:
    policy = entry.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice is None:
        return VersionPolicy()
    if choice == "latest":
        # An unset num_versions means 1, as in TF Serving.
        return VersionPolicy("latest", num_versions=policy.latest.num_versions or 1)
    if choice == "specific":
        if not policy.specific.versions:
            raise ValueError(f"{source}: model {entry.name!r}: specific policy lists no versions")
        return VersionPolicy("specific", versions=tuple(sorted(set(policy.specific.versions))))
    return VersionPolicy("all")


def model_entries_from_proto(
    config: model_server_config_pb2.ModelServerConfig, source: str = "<config>"
) -> list[ModelEntry]:
    """Checked ``ModelEntry`` list from a ModelServerConfig proto.

    Raises
    ------
    ValueError
        On a ``custom_model_config``, an empty or duplicate name, a missing
        base path, a platform other than ``tensorflow`` or an empty specific
        version policy.
    """
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError(f"{source}: only model_config_list is supported")
    entries: dict[str, ModelEntry] = {}
    for entry in config.model_config_list.config:
        if not entry.name or not entry.base_path:
            raise ValueError(f"{source}: every model needs a name and a base_path: {entry}")
        if entry.name in entries:
            raise ValueError(f"{source}: model {entry.name!r} is listed twice")
        if entry.model_platform not in ("", MODEL_PLATFORM):
            raise ValueError(
                f"{source}: model {entry.name!r} has platform {entry.model_platform!r}; "
                f"only {MODEL_PLATFORM!r} is served"
            )
        entries[entry.name] = ModelEntry(
            name=entry.name,
            base_path=entry.base_path,
            policy=_policy_of(entry, source),
            labels=dict(entry.version_labels),
        )
    if not entries:
        raise ValueError(f"{source}: no models configured")
    return list(entries.values())


def parse_model_entries(text: str, source: str = "<text>") -> list[ModelEntry]:
    """``ModelEntry`` list (policies and labels included) from ModelServerConfig text."""
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ValueError(f"{source}: not a ModelServerConfig text proto: {error}") from error
    return model_entries_from_proto(config, source)


def read_model_entries(path: str | os.PathLike) -> list[ModelEntry]:
    """``ModelEntry`` list from a ModelServerConfig text file (see ``parse_model_entries``)."""
    with open(path, encoding="utf-8") as config_file:
        return parse_model_entries(config_file.read(), source=os.fspath(path))


def parse_model_config(text: str, source: str = "<text>") -> dict[str, str]:
    """Model name → base path from ModelServerConfig text.

    Raises
    ------
    ValueError
        As ``model_entries_from_proto``, or on a parse error.
    """
    return {entry.name: entry.base_path for entry in parse_model_entries(text, source)}


def read_model_config(path: str | os.PathLike) -> dict[str, str]:
    """Model name → base path from a ModelServerConfig text file (see ``parse_model_config``)."""
    with open(path, encoding="utf-8") as config_file:
        return parse_model_config(config_file.read(), source=os.fspath(path))


def find_model_server() -> str | None:
    """Path of the ``tensorflow_model_server`` binary on PATH, or None."""
    return shutil.which(MODEL_SERVER_BINARY)


def model_server_command(
    models: Mapping[str, str] | str | os.PathLike,
    port: int = DEFAULT_GRPC_PORT,
    rest_port: int = 0,
    host: str = DEFAULT_HOST,
    binary: str = MODEL_SERVER_BINARY,
    poll_wait_seconds: int = DEFAULT_POLL_WAIT_SECONDS,
) -> list[str]:
    """argv that runs the real ``tensorflow_model_server`` for ``models``.

    Parameters
    ----------
    models : Mapping[str, str] or path
        One model as {name: base path} (``--model_name``/``--model_base_path``),
        or the path of a config file written by ``write_model_config``.
    port, rest_port : int
        gRPC and REST ports; ``rest_port=0`` disables REST, as in TF Serving.
    host : str
        Accepted for symmetry with ``LocalModelServer``. The real binary has
        no bind-address flag and listens on all interfaces, so a loopback host
        only logs a warning.
    binary : str
        Executable name or path (e.g. from ``find_model_server()``).
    poll_wait_seconds : int
        ``--file_system_poll_wait_seconds``.

    Raises
    ------
    ValueError
        For a dict with several models (write a config file first) or none.
    """
    if host in _LOOPBACK_HOSTS:
        LOGGER.warning(
            "%s cannot bind %s only; it listens on all interfaces", MODEL_SERVER_BINARY, host
        )
    command = [binary, f"--port={port}", f"--rest_api_port={rest_port}"]
    if isinstance(models, Mapping):
        if len(models) != 1:
            raise ValueError(
                f"--model_name takes one model, got {len(models)}; "
                "pass a config file from write_model_config instead"
            )
        ((name, base_path),) = models.items()
        command += [f"--model_name={name}", f"--model_base_path={os.path.abspath(base_path)}"]
    else:
        command.append(f"--model_config_file={os.path.abspath(models)}")
    command.append(f"--file_system_poll_wait_seconds={poll_wait_seconds}")
    return command
