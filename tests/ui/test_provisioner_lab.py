"""The provisioner in Chromium against the lab (real worker, Ceph, libvirt, QEMU): a VM created from
a profile through /provisioner/create, its job page following the task's stages live (no reload)
to SUCCESS, then the VM's own page showing it running and the guest booted from its cloned disk.

The profile is the quickest that works on the lab: a clone of the lab guest's root image
(vms/pvc-lab-guest) with the shipped clone script, a network template without networks (the guest
boots with no NIC, so no DHCP wait) and no userdata. Its names start with `webprov` so nothing here
meets the system tests' `labclone` set-up on the same lab. Everything made is removed at the end
(the VM with its disk, the profile, script and templates). Run alone:

    .venv/bin/pytest -q tests/ui/test_provisioner_lab.py
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pvc.lab import labtls
from tests.system import helpers, provisioning
from tests.ui.conftest import LAPTOP, UI

pytestmark = pytest.mark.system
VM = "webprov1"
PROFILE = "webprov"
SLOW = 120_000          # ms: a clone, a define and a boot on the lab's 2 cores
FINISHED = ("SUCCESS", "FAILURE", "CANCELLED")

# what the fixture makes, in the order it is removed (the profile first: it names the others)
MADE = (f"/provisioner/profile/{PROFILE}", f"/provisioner/script/{PROFILE}",
        f"/provisioner/template/storage/{PROFILE}", f"/provisioner/template/network/{PROFILE}",
        f"/provisioner/template/system/{PROFILE}")

# Every stage value the job page ever showed (a MutationObserver, so a stage that passed between
# two polls is still seen), and the marks of a same page (a reload would lose them).
RECORD_STAGES = """() => {
    window.__pvc_same_page = 1;
    window.__pvc_stages = [];
    const note = () => {
        const stage = document.getElementById('job-stage');
        const state = document.getElementById('job-state');
        if (!stage || !state) return;
        const seen = `${state.dataset.state} ${stage.textContent.trim()}`;
        const all = window.__pvc_stages;
        if (all[all.length - 1] !== seen) all.push(seen);
    };
    note();
    new MutationObserver(note).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""


def _remove(api: httpx.Client) -> None:
    """The VM with its disks, then the provisioner documents; whatever of them exists."""
    if helpers.vm_exists(api, VM):
        api.post(f"/vm/{VM}/state", params={"state": "stop", "wait": "true"})
        helpers.call(api, "DELETE", f"/vm/{VM}", params={"delete_disks": "true"})
    for path in MADE:
        answer = api.delete(path)
        assert answer.status_code in (200, 404), f"DELETE {path}: {answer.status_code} {answer.text}"


@pytest.fixture
def profile(lab: Any, lab_api: httpx.Client) -> Iterator[str]:
    files = lab.extra["guest_files"]
    assert isinstance(files, dict)
    _remove(lab_api)                                    # leftovers of an interrupted run
    helpers.call(lab_api, "POST", "/provisioner/template/system", params={
        "name": PROFILE, "vcpus": 1, "vram": 128, "serial": True, "vnc": False})
    helpers.call(lab_api, "POST", "/provisioner/template/network", params={"name": PROFILE})
    helpers.call(lab_api, "POST", "/provisioner/template/storage", params={"name": PROFILE})
    helpers.call(lab_api, "POST", f"/provisioner/template/storage/{PROFILE}/disk", params={
        "disk_id": "vda", "pool": "vms", "source_volume": "pvc-lab-guest"})
    helpers.call(lab_api, "POST", "/provisioner/script", params={
        "name": PROFILE, "data": (provisioning.EXAMPLES / "2-clone.py").read_text()})
    helpers.call(lab_api, "POST", "/provisioner/profile", params={
        "name": PROFILE, "profile_type": "provisioner", "system_template": PROFILE,
        "network_template": PROFILE, "storage_template": PROFILE, "script": PROFILE,
        "arg": [f"kernel={files['kernel']}", f"initrd={files['initrd']}"]})
    yield PROFILE
    _remove(lab_api)
    left = [v["name"] for v in helpers.call(lab_api, "GET", "/storage/ceph/volume", params={"pool": "vms"})
            if str(v.get("name", "")).startswith(f"{VM}_")]
    assert left == [], f"volumes of {VM} left behind: {left}"


@pytest.fixture
def lab_ui(browser: Any, lab: Any, shots: Path) -> Iterator[UI]:
    context = browser.new_context(viewport=LAPTOP, ignore_https_errors=True)   # the lab's own CA
    context.set_default_timeout(20000)
    handle = UI(context, labtls.api_base(lab).removesuffix("/api/v1"), shots)
    handle.login(str(lab.extra["api_token"]))
    yield handle
    context.close()


def _stage(ui: UI) -> tuple[str, int, int]:
    state = str(ui.page.locator("#job-state").get_attribute("data-state"))
    current, _, total = ui.page.locator("#job-stage").inner_text().strip().partition("/")
    return state, int(current), int(total)


def test_create_from_a_profile_and_follow_its_job(lab_ui: UI, lab_api: httpx.Client, profile: str) -> None:
    ui, page = lab_ui, lab_ui.page
    ui.goto(f"/provisioner/create?profile={profile}")
    assert page.get_by_label("Profile").input_value() == profile
    page.get_by_label("VM name").fill(VM)
    assert page.get_by_label("Define the VM on the cluster").is_checked()
    assert page.get_by_label("Start it once provisioned (needs it defined)").is_checked()
    ui.shot("lab-prov-create")
    page.get_by_role("button", name="Create VM").click()
    page.wait_for_url("**/provisioner/jobs/*")
    job_id = page.url.rsplit("/", 1)[-1]
    assert "Queued provisioner job" in page.locator("#flash").inner_text()
    ui.live()
    page.evaluate(RECORD_STAGES)

    # mid-way: the worker has the job and is between its first and last stage
    def midway() -> bool:
        state, current, total = _stage(ui)
        return (state == "RUNNING" and 0 < current < total) or state in FINISHED

    helpers.wait("the job mid-way on its page", midway, 120)
    ui.shot("lab-prov-job-midway")
    page.locator('#job-state[data-state="SUCCESS"]').wait_for(timeout=SLOW)
    state, current, total = _stage(ui)
    assert (state, current) == ("SUCCESS", total), (state, current, total)
    assert page.evaluate("window.__pvc_same_page") == 1, "the job page was reloaded"
    seen: list[str] = page.evaluate("window.__pvc_stages")
    print(f"job {job_id} as the page showed it: {' -> '.join(seen)}")
    assert any(s.startswith("RUNNING ") for s in seen), f"no running stage was shown live: {seen}"
    currents = [int(s.split()[1].partition("/")[0]) for s in seen]
    assert currents == sorted(currents), f"the stages went backwards: {seen}"
    page.locator("#job-vm-link").wait_for()
    ui.shot("lab-prov-job-done")
    final = helpers.call(lab_api, "GET", f"/tasks/{job_id}")
    assert final["state"] == "SUCCESS", final

    # the VM's own page: running, built from the profile
    page.locator("#job-vm-link").click()
    page.wait_for_url(f"**/vms/{VM}")
    ui.live()
    page.locator('#vm-running[data-running="yes"]').wait_for(timeout=SLOW)
    assert page.locator("#vm-state").get_attribute("data-state") == "start"
    assert helpers.call(lab_api, "GET", f"/vm/{VM}")[0]["profile"] == profile
    helpers.wait("the guest on its cloned root disk",
                 lambda: "PVC-GUEST-ROOT dev=/dev/vda" in helpers.console(lab_api, VM), 120)
    ui.shot("lab-prov-vm-running")
    assert ui.csp_violations() == []
    assert [e for e in ui.console_errors if "status of 4" not in e] == []
