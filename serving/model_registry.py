"""Thread-safe registry of served model versions, with TF Serving's version policies.

Each configured model serves the complete version folders its policy picks
(``latest`` N, the default being the single highest; ``specific`` versions;
``all``). A poller thread rescans the base paths every ``poll_wait_seconds``
(TF Serving's ``--file_system_poll_wait_seconds``, 1 s by default). A new
version is loaded first (state LOADING), becomes AVAILABLE, and only then are
versions the policy no longer wants unloaded (END), so requests never see a
gap; in-flight requests keep their servable object and finish. A version that
fails to load is reported in ``status`` (END with the error) and never
replaces a healthy one: while no wanted version is AVAILABLE, the previously
served ones stay. A failed version is retried only when its
``saved_model.pb`` changes.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import grpc

from musicrec.serving.config import ModelEntry
from musicrec.serving.errors import ServingError
from musicrec.serving.servables import Servable, list_versions, load_servable, saved_model_file

LOGGER = logging.getLogger(__name__)

DEFAULT_POLL_WAIT_SECONDS = 1.0

# TF Serving's ModelVersionStatus.State names.
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


class ModelLoadError(RuntimeError):
    """A model's initial version could not be loaded when the server started."""


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


@dataclass(frozen=True)
class _FailedLoad:
    version: int
    proto_mtime_ns: int


def _proto_mtime_ns(export_dir: str) -> int:
    path = saved_model_file(export_dir)
    return os.stat(path).st_mtime_ns if path else -1


def _as_entries(models: Mapping[str, str] | Iterable[ModelEntry]) -> dict[str, ModelEntry]:
    if isinstance(models, Mapping):
        entries = [ModelEntry(name, path) for name, path in models.items()]
    else:
        entries = list(models)
    return {
        entry.name: ModelEntry(entry.name, os.path.abspath(entry.base_path), entry.policy, dict(entry.labels))
        for entry in entries
    }


class ModelRegistry:
    """Name → served versions, kept in sync with the file system and the config.

    Parameters
    ----------
    models : Mapping[str, str] or iterable of ModelEntry
        Model name → base path (latest-version policy), or full entries with
        version policies and labels.
    poll_wait_seconds : float
        Seconds between file system scans; 0 or less disables polling.
    loader : callable
        ``loader(name, version, path) -> Servable``; the SavedModel loader
        (with warmup replay) by default.
    """

    def __init__(
        self,
        models: Mapping[str, str] | Iterable[ModelEntry],
        poll_wait_seconds: float = DEFAULT_POLL_WAIT_SECONDS,
        loader: Callable[[str, int, str], Servable] = load_servable,
    ) -> None:
        self._entries = _as_entries(models)
        self._poll_wait_seconds = poll_wait_seconds
        self._loader = loader
        self._served: dict[str, dict[int, Servable]] = {}
        self._statuses: dict[str, dict[int, VersionStatus]] = {}
        self._failed: dict[tuple[str, int], _FailedLoad] = {}
        self._reported_empty: set[str] = set()
        self._served_lock = threading.Lock()
        # Serialises syncs so a manual poll_once never races the poller thread.
        self._sync_lock = threading.RLock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @property
    def model_names(self) -> list[str]:
        """Configured model names, sorted."""
        with self._served_lock:
            return sorted(self._entries)

    def served_versions(self) -> dict[str, int | None]:
        """Model name → highest AVAILABLE version (None while none is loaded)."""
        with self._served_lock:
            return {
                name: (max(self._served[name]) if self._served.get(name) else None)
                for name in self._entries
            }

    def available_versions(self) -> dict[str, list[int]]:
        """Model name → every AVAILABLE version, ascending."""
        with self._served_lock:
            return {name: sorted(self._served.get(name, {})) for name in self._entries}

    def resolve_label(self, name: str, label: str) -> int:
        """Version a label points to.

        Raises
        ------
        ServingError
            INVALID_ARGUMENT ``Unrecognized servable version label: <label>``
            (TF Serving's answer) for a label the model does not define.
        """
        with self._served_lock:
            entry = self._entries.get(name)
        if entry is None or label not in entry.labels:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}"
            )
        return entry.labels[label]

    def get(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable for a request's model spec (latest, a version or a label).

        Raises
        ------
        ServingError
            NOT_FOUND with TF Serving's ``Servable not found for request:
            Latest(name)`` / ``Specific(name, version)`` wording; INVALID_ARGUMENT
            for an unknown label.
        """
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
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}"
            )
        return servable

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[VersionStatus]:
        """Version statuses of ``name`` (newest first), or of one version or label.

        Raises
        ------
        ServingError
            NOT_FOUND for an unknown model or version, with TF Serving's
            wording; INVALID_ARGUMENT for an unknown label.
        """
        if label is not None:
            version = self.resolve_label(name, label)
        with self._served_lock:
            statuses = dict(self._statuses.get(name, {}))
        if not statuses:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}"
            )
        if version is not None:
            if version not in statuses:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}"
                )
            return [statuses[version]]
        return [statuses[key] for key in sorted(statuses, reverse=True)]

    def load_initial(self) -> None:
        """Load every model's wanted versions now, as TF Serving does at startup.

        A model with no version yet is logged and left to the poller.

        Raises
        ------
        ModelLoadError
            When a model has versions but none of them could be loaded.
        """
        for name in self.model_names:
            error = self._sync_model(name)
            if error is not None:
                raise ModelLoadError(str(error)) from error

    def reload(self, models: Iterable[ModelEntry]) -> list[str]:
        """Replace the configuration (HandleReloadConfigRequest), then sync.

        Models no longer listed are unloaded; new ones are loaded before this
        returns; changed policies and labels apply at once.

        Returns
        -------
        list of str
            One message per model whose wanted versions could not be loaded
            (empty when all are AVAILABLE).
        """
        new_entries = _as_entries(models)
        with self._sync_lock:
            with self._served_lock:
                removed = set(self._entries) - set(new_entries)
                self._entries = new_entries
                for name in removed:
                    for version in self._served.pop(name, {}):
                        self._statuses.setdefault(name, {})[version] = VersionStatus(version, END)
                    self._reported_empty.discard(name)
            for name in sorted(removed):
                LOGGER.info("Unloaded model %s: no longer in the model config", name)
            errors = [self._sync_model(name) for name in sorted(new_entries)]
        return [str(error) for error in errors if error is not None]

    def poll_once(self) -> None:
        """Rescan every base path once; load failures are logged, not raised."""
        for name in self.model_names:
            self._sync_model(name)

    def start_polling(self) -> None:
        """Start the background poller (no-op when polling is disabled)."""
        if self._poll_wait_seconds <= 0 or self._poller is not None:
            return
        self._stop.clear()
        self._poller = threading.Thread(
            target=self._poll_forever, name="model-version-poller", daemon=True
        )
        self._poller.start()

    def stop_polling(self, timeout_seconds: float | None = None) -> None:
        """Stop the poller and wait up to ``timeout_seconds`` for it to exit."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout_seconds)
            self._poller = None

    def _poll_forever(self) -> None:
        while not self._stop.wait(self._poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:  # the poller must outlive any one bad scan
                LOGGER.exception("model version poll failed")

    def _set_status(self, name: str, status: VersionStatus) -> None:
        with self._served_lock:
            self._statuses.setdefault(name, {})[status.version] = status

    def _sync_model(self, name: str) -> Exception | None:
        """Bring ``name`` to the versions its policy wants; return a load error.

        The error is returned only when no wanted version is AVAILABLE after
        the attempt (a broken new version next to a healthy one is logged).
        """
        with self._sync_lock:
            with self._served_lock:
                entry = self._entries.get(name)
                current = dict(self._served.get(name, {}))
            if entry is None:
                return None
            base_path = entry.base_path
            # A version folder without saved_model.pb is still being written.
            complete = [
                version
                for version in list_versions(base_path)
                if saved_model_file(os.path.join(base_path, str(version)))
            ]
            if not complete:
                self._report_no_versions(name, base_path, current)
                return None
            self._reported_empty.discard(name)
            wanted = entry.policy.select(complete)
            last_error: Exception | None = None
            for version in wanted:
                if version in current:
                    continue
                error = self._load(name, version, os.path.join(base_path, str(version)), current)
                if error is not None:
                    last_error = error
            with self._served_lock:
                served = self._served.setdefault(name, {})
                if any(version in served for version in wanted):
                    stale = [version for version in served if version not in wanted]
                else:
                    stale = []  # keep the old versions until a wanted one is healthy
                for version in stale:
                    del served[version]
                    self._statuses[name][version] = VersionStatus(version, END)
            for version in stale:
                LOGGER.info("Unloaded model %s version %d", name, version)
            if last_error is not None and not any(version in served for version in wanted):
                return last_error
            return None

    def _load(self, name: str, version: int, export_dir: str, current: Mapping[int, Servable]) -> Exception | None:
        attempt = _FailedLoad(version, _proto_mtime_ns(export_dir))
        if self._failed.get((name, version)) == attempt:
            return None
        self._set_status(name, VersionStatus(version, LOADING))
        try:
            servable = self._loader(name, version, export_dir)
        except Exception as error:
            self._failed[(name, version)] = attempt
            message = f"{type(error).__name__}: {error}"
            self._set_status(name, VersionStatus(version, END, grpc.StatusCode.UNKNOWN, message))
            still = f"; still serving versions {sorted(current)}" if current else ""
            LOGGER.error("Loading servable %s version %d from %s failed: %s%s",
                         name, version, export_dir, error, still)
            return ModelLoadError(
                f"loading model {name!r} version {version} from {export_dir} failed: {message}"
            )
        self._failed.pop((name, version), None)
        with self._served_lock:
            self._served.setdefault(name, {})[version] = servable
            self._statuses.setdefault(name, {})[version] = VersionStatus(version, AVAILABLE)
        LOGGER.info("Serving model %s version %d from %s", name, version, export_dir)
        return None

    def _report_no_versions(self, name: str, base_path: str, current: Mapping[int, Servable]) -> None:
        if current:
            # TF Serving unloads versions whose folders disappeared.
            with self._served_lock:
                self._served.pop(name, None)
                for version in current:
                    self._statuses[name][version] = VersionStatus(version, END)
            LOGGER.warning("Model %s versions %s vanished from %s; unloaded",
                           name, sorted(current), base_path)
        if name not in self._reported_empty:
            self._reported_empty.add(name)
            LOGGER.warning("No versions of servable %s found under base path %s", name, base_path)
