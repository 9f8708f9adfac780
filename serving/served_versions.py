"""The versions a server answers from now: request lookup, GetModelStatus and version labels.

:class:`ServedVersions` holds, per model name, the loaded servables, every
version's status and the labels; one lock guards the three, so a request
sees a consistent picture while :class:`musicrec.serving.model_registry.ModelRegistry`
(its subclass) loads and unloads versions.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import grpc

from musicrec.serving.errors import ServingError
from musicrec.serving.servables import Servable

# TF Serving's ModelVersionStatus.State names.
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclass(frozen=True)
class VersionStatus:
    """State of one model version, as GetModelStatus reports it.

    ``error_code`` is a ``grpc.StatusCode`` (OK unless the load failed) and
    ``error_message`` its reason.
    """

    version: int
    state: str
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""


class ServedVersions:
    """Model name → served versions, statuses and labels, as requests read them."""

    def __init__(self) -> None:
        self._labels: dict[str, dict[str, int]] = {}
        self._served: dict[str, dict[int, Servable]] = {}
        self._statuses: dict[str, dict[int, VersionStatus]] = {}
        self._served_lock = threading.Lock()

    def resolve_label(self, name: str, label: str) -> int:
        """Version a label points to.

        Raises
        ------
        ServingError
            INVALID_ARGUMENT ``Unrecognized servable version label: <label>``
            (TF Serving's answer) for a label the model does not define.
        """
        with self._served_lock:
            version = self._labels.get(name, {}).get(label)
        if version is None:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
        return version

    def get(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable for a request's model spec (latest, a version or a label).

        Raises
        ------
        ServingError
            INVALID_ARGUMENT ``ModelSpec has no name specified.`` for an empty
            name and for an unknown label; NOT_FOUND with TF Serving's
            ``Servable not found for request: Latest(name)`` /
            ``Specific(name, version)`` wording (``model_servers/server_core.cc``).
        """
        if not name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        if label is not None:
            version = self.resolve_label(name, label)
        with self._served_lock:
            versions = self._served.get(name, {})
            if version is None:
                servable = versions[max(versions)] if versions else None
            else:
                servable = versions.get(version)
        if servable is None:
            request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}")
        return servable

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """Version statuses of ``name`` (newest first), or of one version.

        A request's version label plays no part: TF Serving's GetModelStatus
        reads only the name and the version (``get_model_status_impl.cc``).

        Raises
        ------
        ServingError
            NOT_FOUND for an unknown model or version, with TF Serving's wording.
        """
        with self._served_lock:
            statuses = dict(self._statuses.get(name, {}))
        if version is not None:
            if version not in statuses:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
            return [statuses[version]]
        if not statuses:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        return [statuses[key] for key in sorted(statuses, reverse=True)]

    def _set_status(self, name: str, status: VersionStatus) -> None:
        with self._served_lock:
            self._statuses.setdefault(name, {})[status.version] = status
