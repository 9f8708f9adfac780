"""Shared test settings: quiet TensorFlow, and where the real data would be."""
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")


@pytest.fixture
def shared_data():
    """``../shared/data``; tests that use it skip where it is absent (a fresh clone)."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
