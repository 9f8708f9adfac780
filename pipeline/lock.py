"""One run per pipeline root: an exclusive, non-blocking ``flock`` on ``<root>/.lock``.

The kernel drops the lock when its process dies, so a killed run never leaves
a stale lock behind; the file's text (pid, start time) only feeds the message.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
from typing import Iterator

LOCK_FILENAME = ".lock"


class PipelineLockedError(RuntimeError):
    """Another run holds this pipeline root's lock."""


@contextlib.contextmanager
def pipeline_lock(root: str) -> Iterator[str]:
    """Holds ``<root>/.lock`` for the block; raises :class:`PipelineLockedError` at once if taken."""
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, LOCK_FILENAME)
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise PipelineLockedError(
                f"another run is already using pipeline root {root} ({holder}); wait for it to "
                f"finish, or use another --workdir") from None
        handle.seek(0)
        handle.truncate()
        started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        handle.write(f"pid {os.getpid()}, started {started}")
        handle.flush()
        yield path
    finally:
        handle.close()  # closing releases the flock
