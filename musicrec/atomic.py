"""Atomic file writes: a temporary file beside the target, then a rename.

A reader (the next stage, a polling server) sees the old file or the new one,
never half of one. Standard library only, so every layer may import it.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable


def write_atomic(path: str, write: Callable[[str], None], suffix: str = "") -> None:
    """Calls ``write(tmp_path)`` on a temporary file beside ``path``, then renames it over ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp_path = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(handle)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; readers may run as other users
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise


def write_text_atomic(path: str, text: str) -> None:
    def write(tmp_path: str) -> None:
        with open(tmp_path, "w", encoding="utf-8", newline="") as out:
            out.write(text)

    write_atomic(path, write)


def write_json_atomic(path: str, payload: Any) -> None:
    """Writes ``payload`` as indented, key-sorted JSON."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
