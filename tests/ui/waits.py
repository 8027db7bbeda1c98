"""Waits for pvcapid's watch caches, shared by the web UI's route and browser tests.

Pages read VMs from pvcapid's watch caches, which follow a write a moment after the API answered
it (longer on a loaded machine), so a page read right after a define may not show the VM yet.
Tests wait for the condition (pvcapid's own VM list showing what ZooKeeper holds), never for time.
"""

from __future__ import annotations

from typing import Any

import httpx

from pvc.cluster import vms as vms_mod
from pvc.core.zk import ZK
from tests.conftest import wait_for
from tests.ui import sample


def vms_listed(zk: ZK, api: httpx.Client, timeout: float = 30) -> int:
    """Wait until pvcapid's VM list (`GET /vm`; `api` has base /api/v1 and the token, a TestClient
    of an in-process app too) shows every VM that ZooKeeper holds, each in its state, and no
    other; returns their number."""
    written = {(e.record.name, e.record.state) for e in vms_mod.list_vms(zk)}    # read directly

    def listed() -> bool:
        answer = api.get("/vm")
        return answer.status_code == 200 and {(v["name"], v["state"]) for v in answer.json()} == written

    wait_for(listed, timeout, 0.05, f"pvcapid's VM list to show the {len(written)} VMs in ZooKeeper")
    return len(written)


def sampled(zk: ZK, api: httpx.Client) -> dict[str, Any]:
    """The sample cluster (sample.cluster), once pvcapid's VM list shows every sample VM."""
    made = sample.cluster(zk, api)
    assert vms_listed(zk, api) == len(sample.VMS)
    return made
