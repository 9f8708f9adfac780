"""Thread-safe registry of served model versions with TF Serving's "latest" policy.

Each configured model serves its highest complete version folder. A poller
thread rescans the base paths every ``poll_wait_seconds`` (TF Serving's
``--file_system_poll_wait_seconds``, 1 s by default): a new highest version
is loaded first, then swapped in, then the old one is dropped, so requests
never see a gap. A version that fails to load is logged with its cause and
the previous version keeps serving; it is retried only when its
``saved_model.pb`` changes.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable, Mapping

import grpc

from musicrec.serving.errors import ServingError
from musicrec.serving.servables import Servable, list_versions, load_servable, saved_model_file

LOGGER = logging.getLogger(__name__)

DEFAULT_POLL_WAIT_SECONDS = 1.0


class ModelLoadError(RuntimeError):
    """A model's initial version could not be loaded when the server started."""


@dataclass(frozen=True)
class _FailedLoad:
    version: int
    proto_mtime_ns: int


def _proto_mtime_ns(export_dir: str) -> int:
    path = saved_model_file(export_dir)
    return os.stat(path).st_mtime_ns if path else -1


class ModelRegistry:
    """Name → currently served ``Servable``, kept in sync with the file system.

    Parameters
    ----------
    models : Mapping[str, str]
        Model name → base path holding integer version folders.
    poll_wait_seconds : float
        Seconds between file system scans; 0 or less disables polling.
    loader : callable
        ``loader(name, version, path) -> Servable``; the SavedModel loader by
        default.
    """

    def __init__(
        self,
        models: Mapping[str, str],
        poll_wait_seconds: float = DEFAULT_POLL_WAIT_SECONDS,
        loader: Callable[[str, int, str], Servable] = load_servable,
    ) -> None:
        self._base_paths = {name: os.path.abspath(path) for name, path in models.items()}
        self._poll_wait_seconds = poll_wait_seconds
        self._loader = loader
        self._served: dict[str, Servable] = {}
        self._failed: dict[str, _FailedLoad] = {}
        self._reported_empty: set[str] = set()
        self._served_lock = threading.Lock()
        # Serialises syncs so a manual poll_once never races the poller thread.
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @property
    def model_names(self) -> list[str]:
        """Configured model names, sorted."""
        return sorted(self._base_paths)

    def served_versions(self) -> dict[str, int | None]:
        """Model name → version being served (None while none is loaded)."""
        with self._served_lock:
            return {
                name: (self._served[name].version if name in self._served else None)
                for name in self._base_paths
            }

    def get(self, name: str, version: int | None = None) -> Servable:
        """The servable for a request's model spec.

        Raises
        ------
        ServingError
            NOT_FOUND with TF Serving's ``Servable not found for request:
            Latest(name)`` / ``Specific(name, version)`` wording.
        """
        with self._served_lock:
            servable = self._served.get(name)
        if servable is None or (version is not None and servable.version != version):
            request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}"
            )
        return servable

    def load_initial(self) -> None:
        """Load every model's latest version now, as TF Serving does at startup.

        A model with no version yet is logged and left to the poller.

        Raises
        ------
        ModelLoadError
            When a model's latest version exists but fails to load.
        """
        for name in self.model_names:
            error = self._sync_model(name)
            if error is not None:
                raise ModelLoadError(str(error)) from error

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

    def _sync_model(self, name: str) -> Exception | None:
        """Bring ``name`` to its highest complete version; return a load error."""
        with self._sync_lock:
            base_path = self._base_paths[name]
            # A version folder without saved_model.pb is still being written.
            complete = [
                version
                for version in list_versions(base_path)
                if saved_model_file(os.path.join(base_path, str(version)))
            ]
            with self._served_lock:
                current = self._served.get(name)
            if not complete:
                self._report_no_versions(name, base_path, current)
                return None
            self._reported_empty.discard(name)
            aspired = complete[-1]
            if current is not None and current.version == aspired:
                return None
            export_dir = os.path.join(base_path, str(aspired))
            attempt = _FailedLoad(aspired, _proto_mtime_ns(export_dir))
            if self._failed.get(name) == attempt:
                return None
            try:
                servable = self._loader(name, aspired, export_dir)
            except Exception as error:
                self._failed[name] = attempt
                still_serving = f"; still serving version {current.version}" if current else ""
                LOGGER.error(
                    "Loading servable %s version %d from %s failed: %s%s",
                    name, aspired, export_dir, error, still_serving,
                )
                return ModelLoadError(
                    f"loading model {name!r} version {aspired} from {export_dir} failed: "
                    f"{type(error).__name__}: {error}"
                )
            self._failed.pop(name, None)
            with self._served_lock:
                self._served[name] = servable
            if current is None:
                LOGGER.info("Serving model %s version %d from %s", name, aspired, export_dir)
            else:
                LOGGER.info(
                    "Switched model %s from version %d to %d", name, current.version, aspired
                )
            return None

    def _report_no_versions(self, name: str, base_path: str, current: Servable | None) -> None:
        if current is not None:
            # TF Serving unloads a version whose folder disappeared.
            with self._served_lock:
                self._served.pop(name, None)
            LOGGER.warning(
                "Model %s version %d vanished from %s; unloaded", name, current.version, base_path
            )
        if name not in self._reported_empty:
            self._reported_empty.add(name)
            LOGGER.warning("No versions of servable %s found under base path %s", name, base_path)
