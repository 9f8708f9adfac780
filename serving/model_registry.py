"""Thread-safe registry of served model versions, with TF Serving's version policies.

Each configured model serves the complete version folders its policy picks
(``latest`` N, the default being the single highest; ``specific`` versions;
``all``). A poller thread rescans the base paths every ``poll_wait_seconds``
(TF Serving's ``--file_system_poll_wait_seconds``, 1 s by default). A new
version is loaded first (state LOADING), becomes AVAILABLE, and only then are
versions the policy no longer wants unloaded (END), so requests never see a
gap; in-flight requests keep their servable object and finish. A version that
fails to load never replaces a healthy one: while no wanted version is
AVAILABLE, the previously served ones stay. It is retried as TF Serving
retries it (``load_retries``), reporting LOADING meanwhile, and then END with
the load's own error code (DATA_LOSS for an unparsable ``saved_model.pb``).

Labels follow ``ServerCore``: a config may only label AVAILABLE versions
(``check_version_labels``), and GetModelStatus ignores a request's label.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Iterable, Mapping

from musicrec.serving.config import ModelEntry, check_version_labels
from musicrec.serving.errors import ServingError
from musicrec.serving.load_retries import LoadRetries, poll_and_retry
from musicrec.serving.loading import load_error_status, load_servable
from musicrec.serving.servables import Servable
from musicrec.serving.served_versions import AVAILABLE, END, LOADING, ServedVersions, VersionStatus
from musicrec.serving.wire import list_versions, saved_model_file

LOGGER = logging.getLogger(__name__)

DEFAULT_POLL_WAIT_SECONDS = 1.0


class ModelLoadError(RuntimeError):
    """A model's initial version could not be loaded when the server started."""


class LoadCancelled(ModelLoadError):
    """Loading stopped because the server is stopping (e.g. SIGTERM during startup)."""


def _as_entries(models: Mapping[str, str] | Iterable[ModelEntry]) -> dict[str, ModelEntry]:
    if isinstance(models, Mapping):
        entries = [ModelEntry(name, path) for name, path in models.items()]
    else:
        entries = list(models)
    return {
        entry.name: ModelEntry(entry.name, os.path.abspath(entry.base_path), entry.policy, dict(entry.labels))
        for entry in entries
    }


class ModelRegistry(ServedVersions):
    """Name → served versions, kept in sync with the file system and the config.

    Requests read it through :class:`ServedVersions` (``get``, ``status``,
    ``resolve_label``); this class decides what is loaded and unloaded.

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
    retries : LoadRetries or None
        How failed loads are retried; None: TF Serving's defaults (5 retries
        a minute apart).
    allow_unavailable_labels : bool
        ``--allow_version_labels_for_unavailable_models``: a config may label
        versions not loaded yet (needed for labels in the startup config).
    """

    def __init__(
        self,
        models: Mapping[str, str] | Iterable[ModelEntry],
        poll_wait_seconds: float = DEFAULT_POLL_WAIT_SECONDS,
        loader: Callable[[str, int, str], Servable] = load_servable,
        retries: LoadRetries | None = None,
        allow_unavailable_labels: bool = False,
    ) -> None:
        super().__init__()
        self._entries = _as_entries(models)
        self._poll_wait_seconds = poll_wait_seconds
        self._loader = loader
        self._retries = retries if retries is not None else LoadRetries()
        self._allow_unavailable_labels = allow_unavailable_labels
        self._wanted: dict[str, list[int]] = {}  # versions each policy picked at the last scan
        self._reported_empty: set[str] = set()
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
            return {name: (max(self._served[name]) if self._served.get(name) else None) for name in self._entries}

    def available_versions(self) -> dict[str, list[int]]:
        """Model name → every AVAILABLE version, ascending."""
        with self._served_lock:
            return {name: sorted(self._served.get(name, {})) for name in self._entries}

    def load_initial(self) -> None:
        """Load every model's wanted versions now, as TF Serving does at startup.

        Labels are checked first, failed loads retried (waiting in between)
        until a wanted version is AVAILABLE or the retries are exhausted. A
        model with no version yet is logged and left to the poller.

        Raises
        ------
        ModelLoadError
            When a label points to a version not available (pass
            ``allow_unavailable_labels``), or a model has versions but none of
            them could be loaded.
        LoadCancelled
            When ``stop_polling`` was called meanwhile (e.g. from a SIGTERM handler).
        """
        try:
            self._apply_labels(self._entries.values(), {})
        except ServingError as error:
            raise ModelLoadError(f"{error.message} (labels in the startup config need "
                                 "--allow_version_labels_for_unavailable_models)") from None
        for name in self.model_names:
            self._await_model(name)

    def reload(self, models: Iterable[ModelEntry]) -> list[str]:
        """Replace the configuration (HandleReloadConfigRequest), then sync.

        Models no longer listed are unloaded; new ones are loaded (with
        retries) before this returns; changed policies and labels apply at once.

        Returns
        -------
        list of str
            One message per new model none of whose wanted versions could be
            loaded (empty when all are AVAILABLE).

        Raises
        ------
        ServingError
            FAILED_PRECONDITION when a label points to a version that is not
            AVAILABLE; the configuration is then left unchanged.
        """
        new_entries = _as_entries(models)
        with self._sync_lock:
            with self._served_lock:
                available = {name: list(versions) for name, versions in self._served.items()}
            self._apply_labels(new_entries.values(), available)
            with self._served_lock:
                added = set(new_entries) - set(self._entries)
                removed = set(self._entries) - set(new_entries)
                self._entries = new_entries
                for name in removed:
                    for version in self._served.pop(name, {}):
                        self._statuses.setdefault(name, {})[version] = VersionStatus(version, END)
                    self._reported_empty.discard(name)
            for name in sorted(removed):
                self._retries.forget(name)
                LOGGER.info("Unloaded model %s: no longer in the model config", name)
            for name in sorted(set(new_entries) - added):
                self._sync_model(name)
        errors = []
        for name in sorted(added):
            try:
                self._await_model(name)
            except ModelLoadError as error:
                errors.append(str(error))
        return errors

    def poll_once(self) -> None:
        """Rescan every base path once; load failures are logged, not raised."""
        for name in self.model_names:
            self._sync_model(name)

    def start_polling(self) -> None:
        """Start the background thread that rescans base paths and retries failed loads.

        With polling disabled it still runs the retries. A registry whose
        ``stop_polling`` was called stays stopped.
        """
        if self._poller is not None or self._stop.is_set():
            return
        self._poller = threading.Thread(target=self._poll_forever, name="model-version-poller", daemon=True)
        self._poller.start()

    def stop_polling(self, timeout_seconds: float | None = None) -> None:
        """Stop the poller, cancel pending load waits, wait up to ``timeout_seconds`` for it."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout_seconds)
            self._poller = None

    def _poll_forever(self) -> None:
        poll_and_retry(self._stop, self._poll_wait_seconds, self._retries, self.poll_once,
                       lambda name: self._sync_model(name, rescan=False))

    def _apply_labels(self, entries: Iterable[ModelEntry], available: Mapping[str, list[int]]) -> None:
        entries = list(entries)
        with self._served_lock:
            current = {name: dict(labels) for name, labels in self._labels.items()}
        check_version_labels(entries, available, current, self._allow_unavailable_labels)
        with self._served_lock:
            self._labels = {entry.name: dict(entry.labels) for entry in entries if entry.labels}

    def _await_model(self, name: str) -> None:
        """Sync ``name`` and wait through its load retries until a wanted version is AVAILABLE.

        Raises ModelLoadError when the retries are exhausted, LoadCancelled on stop.
        """
        self._sync_model(name)
        while True:
            if self._stop.is_set():
                raise LoadCancelled(f"stopped while loading model {name!r}")
            with self._served_lock:
                wanted = list(self._wanted.get(name, []))
                if not wanted or any(version in self._served.get(name, {}) for version in wanted):
                    return
            delay = self._retries.seconds_until_retry((name, version) for version in wanted)
            if delay is None:
                failures = [self._retries.get((name, version)) for version in wanted]
                errors = [str(failed.error) for failed in failures if failed is not None]
                raise ModelLoadError("; ".join(errors) or f"model {name!r} did not become available")
            self._stop.wait(delay)
            self._sync_model(name, rescan=False)

    def _sync_model(self, name: str, rescan: bool = True) -> None:
        """Bring ``name`` to the versions its policy wants.

        ``rescan=False`` retries the versions wanted at the last scan without
        listing the base path again (a retry, not a poll).
        """
        with self._sync_lock:
            with self._served_lock:
                entry = self._entries.get(name)
                current = dict(self._served.get(name, {}))
            if entry is None:
                return
            base_path = entry.base_path
            if rescan:
                # A version folder without saved_model.pb is still being written.
                complete = [
                    version
                    for version in list_versions(base_path)
                    if saved_model_file(os.path.join(base_path, str(version)))
                ]
                if not complete:
                    self._report_no_versions(name, base_path, current)
                    return
                self._reported_empty.discard(name)
                wanted = entry.policy.select(complete)
                self._retries.forget(name, keep=wanted)
                with self._served_lock:
                    self._wanted[name] = wanted
            else:
                with self._served_lock:
                    wanted = list(self._wanted.get(name, []))
            for version in wanted:
                if version not in current and self._retries.should_try((name, version)):
                    self._load(name, version, os.path.join(base_path, str(version)), current)
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

    def _load(self, name: str, version: int, export_dir: str, current: Mapping[int, Servable]) -> None:
        self._set_status(name, VersionStatus(version, LOADING))
        try:
            servable = self._loader(name, version, export_dir)
        except Exception as error:
            failed = self._retries.record_failure(
                (name, version),
                ModelLoadError(f"loading model {name!r} version {version} from {export_dir} failed: "
                               f"{type(error).__name__}: {error}"))
            still = f"; still serving versions {sorted(current)}" if current else ""
            if failed.retry_at is not None:
                retry = f"; retry {failed.failures} of {self._retries.max_retries} in " \
                        f"{self._retries.interval_seconds:g} s"
            else:
                retry = f"; giving up after {failed.failures} tries"
                self._set_status(name, VersionStatus(version, END, load_error_status(error), str(error)))
            LOGGER.error("Loading servable %s version %d from %s failed: %s%s%s",
                         name, version, export_dir, error, still, retry)
            return
        self._retries.record_success((name, version))
        with self._served_lock:
            self._served.setdefault(name, {})[version] = servable
            self._statuses.setdefault(name, {})[version] = VersionStatus(version, AVAILABLE)
        LOGGER.info("Serving model %s version %d from %s", name, version, export_dir)

    def _report_no_versions(self, name: str, base_path: str, current: Mapping[int, Servable]) -> None:
        self._retries.forget(name)
        with self._served_lock:
            self._wanted[name] = []
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
