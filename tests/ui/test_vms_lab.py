"""A real VM driven from its page in Chromium against the lab (real nodes, libvirt, QEMU): start it,
live-migrate it to another node and stop it with the page's buttons, and see each state (and the
node it runs on, and whether its domain runs) change on the page without a reload. Run alone:

    .venv/bin/pytest -q tests/ui/test_vms_lab.py
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pvc.adapters.hypervisor import LibvirtHypervisor
from pvc.lab import labtls
from tests.system import helpers
from tests.ui.conftest import LAPTOP, UI

pytestmark = pytest.mark.system
NAME = "webvm1"
SLOW = 120_000          # ms: a boot or a migration on the lab's 2 cores


@pytest.fixture
def vm(lab: Any, lab_api: httpx.Client) -> Iterator[str]:
    """The lab's tiny guest, defined (stopped) on hv1; removed afterwards whatever happened."""
    uuid = str(uuidlib.uuid4())
    helpers.call(lab_api, "POST", "/vm", data={"xml": helpers.guest_xml(lab, NAME, uuid), "node": "hv1"})
    yield uuid
    lab_api.post(f"/vm/{NAME}/state", params={"state": "stop", "wait": "true"})
    lab_api.delete(f"/vm/{NAME}")


@pytest.fixture
def lab_ui(browser: Any, lab: Any, shots: Path) -> Iterator[UI]:
    context = browser.new_context(viewport=LAPTOP, ignore_https_errors=True)   # the lab's own CA
    context.set_default_timeout(20000)
    handle = UI(context, labtls.api_base(lab).removesuffix("/api/v1"), shots)
    handle.login(str(lab.extra["api_token"]))
    yield handle
    context.close()


def test_start_migrate_and_stop_from_the_browser(lab_ui: UI, lab: Any, lab_api: httpx.Client,
                                                 vm: str) -> None:
    ui, page = lab_ui, lab_ui.page
    hvs = {n.name: LibvirtHypervisor(n.libvirt_uri) for n in lab.nodes}
    ui.goto(f"/vms/{NAME}")
    ui.live()
    page.evaluate("window.__pvc_same_page = 1")              # a reload would lose it
    assert page.locator("#vm-state").get_attribute("data-state") == "stop"

    page.get_by_role("button", name="Start", exact=True).click()
    page.locator("#flash").get_by_text("Starting VM").wait_for()
    page.locator('#vm-running[data-running="yes"]').wait_for(timeout=SLOW)
    assert page.locator("#vm-state").get_attribute("data-state") == "start"
    assert helpers.where(hvs, vm) == ["hv1"]
    helpers.wait("the guest's heartbeat",
                 lambda: "PVC-GUEST-HEARTBEAT" in helpers.console(lab_api, NAME), 120)
    ui.shot("lab-vm-started")

    page.get_by_label("Target node").select_option("hv2")
    page.get_by_role("button", name="Migrate").click()
    page.locator("#flash .flash-ok").get_by_text("hv2").wait_for()
    page.locator('#vm-node[data-node="hv2"]').wait_for()
    page.locator('#vm-state[data-state="start"]').wait_for(timeout=SLOW)     # the migration is over
    page.locator("#vm-migrated").get_by_text("from hv1").wait_for()
    page.locator("#vm-last-migration").get_by_text("hv1 → hv2 · live").wait_for(timeout=SLOW)
    assert helpers.where(hvs, vm) == ["hv2"]
    ui.shot("lab-vm-migrated")

    page.get_by_role("button", name="Stop").click()                          # the confirm is accepted
    page.locator('#vm-state[data-state="stop"]').wait_for()
    page.locator('#vm-running[data-running="no"]').wait_for(timeout=SLOW)
    helpers.wait("no QEMU left", lambda: helpers.where(hvs, vm) == [], 60)
    assert page.evaluate("window.__pvc_same_page") == 1, "the page was reloaded"
    ui.shot("lab-vm-stopped")
    assert [e for e in ui.console_errors if "status of 4" not in e] == []
