"""The session-scoped lab cluster for system tests: one per test run, always torn down."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import httpx
import pytest

from pvc.lab.plan import LabPlan

LAB_NAME = "pst"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, mounts)"
    return None


@pytest.fixture(scope="session")
def lab() -> Iterator[LabPlan]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from pvc.lab.main import lab_down, lab_up

    # Keep the CLI connection the lab adds out of the user's own store.
    os.environ.setdefault("PVC_CLIENT_DIR", tempfile.mkdtemp(prefix="pvc-client-"))
    lab_down(LAB_NAME)  # leftovers of an interrupted run
    try:
        yield lab_up(LAB_NAME, 3)
    finally:
        if not os.environ.get("PVC_LAB_KEEP"):     # keep it to look at after a failure
            lab_down(LAB_NAME)


@pytest.fixture(scope="session")
def api(lab: LabPlan) -> Iterator[httpx.Client]:
    client = httpx.Client(base_url=f"http://127.0.0.1:{lab.api_port}/api/v1",
                          headers={"X-Api-Key": str(lab.extra["api_token"])}, timeout=240)
    yield client
    client.close()
