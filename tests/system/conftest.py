"""System tests use the session-scoped lab of tests/conftest.py (shared with tests/security)."""

from __future__ import annotations

import httpx
import pytest


@pytest.fixture(scope="session")
def api(lab_api: httpx.Client) -> httpx.Client:
    """The lab's API client, under the name the system tests use."""
    return lab_api
