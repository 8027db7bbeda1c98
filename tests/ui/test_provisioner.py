"""The Provisioner pages in Chromium against a real pvcapid over a private ZooKeeper (no worker, no
Ceph): every list and a detail page of each kind, a system template added from its form and a
refusal shown beside its field, markup in a script body inert, a VM created from a profile whose
job page follows the task live and whose Cancel cancels it without a reload, a create refused
before queueing, the OVA upload's refusal in place and its progress bar, and screenshots on a
laptop and a phone."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from pvc.adapters.ceph.fake import FakeStorage
from pvc.api.app import create_app
from pvc.cluster import provisioner as prov
from pvc.cluster import storage as storage_mod
from pvc.cluster import tasks as tasks_mod
from pvc.core import schema
from pvc.core.config import load_config
from pvc.core.taskkinds import PROVISION_STAGES, PROVISIONER_CREATE
from pvc.core.zk import ZK
from pvc.lab.zkserver import free_port
from pvc.worker.provisioner import vmdata
from tests.conftest import wait_for
from tests.ovahelp import make_test_ova
from tests.ui import sample
from tests.ui.conftest import LAPTOP, UI
from tests.ui.test_dashboard import tab_walk

PAGES = ("/provisioner", "/provisioner/system", "/provisioner/system/web", "/provisioner/network",
         "/provisioner/network/std", "/provisioner/storage", "/provisioner/storage/std",
         "/provisioner/userdata", "/provisioner/scripts", "/provisioner/scripts/debootstrap",
         "/provisioner/profiles", "/provisioner/profiles/web", "/provisioner/ovas", "/provisioner/create")


@pytest.fixture
def prov_cluster(zk: ZK, cluster: dict[str, Any]) -> dict[str, Any]:
    return {**cluster, **sample.provisioner(zk)}


def errors(ui: UI) -> list[str]:
    """Console errors, less the browser's note on each refusal these tests provoke."""
    return [e for e in ui.console_errors if not any(f"status of {s}" in e for s in (400, 404, 409, 503))]


def shot_name(path: str) -> str:
    return "prov" + path.removeprefix("/provisioner").replace("/", "-")


def test_every_page_and_an_add(ui: UI, zk: ZK, prov_cluster: dict[str, Any]) -> None:
    ui.login()
    for path in PAGES:
        ui.goto(path)
        ui.page.locator("h1").wait_for()
        assert ui.page.evaluate("window.__pvc_xss") is None, path
        ui.shot(shot_name(path))
    ui.goto("/provisioner/scripts/debootstrap")
    assert sample.XSS_SCRIPT in ui.page.get_by_label("Text").input_value()      # shown as text
    ui.goto("/provisioner/network/std")
    assert ui.page.locator("#vni-choices option[value='4001']").inner_text() == sample.XSS_PROV_NETWORK
    ui.goto("/provisioner/system")
    form = ui.page.locator("#add-form")
    form.get_by_label("Name").fill("tiny")
    form.get_by_label("vCPUs").fill("0")
    form.get_by_label("Memory (MB)").fill("512")
    form.get_by_role("button", name="Add system template").click()
    error = ui.page.locator("#add-vcpus-error")
    error.wait_for()
    assert "vcpus: 0 is out of range" in error.inner_text()
    assert ui.page.locator("#add-vcpus").get_attribute("aria-invalid") == "true"
    assert ui.page.locator("#add-name").input_value() == "tiny"                 # what was typed is kept
    ui.shot("prov-system-refused")
    ui.page.locator("#add-vcpus").fill("2")
    ui.page.get_by_label("VNC display").check()
    ui.page.locator("#add-form").get_by_role("button", name="Add system template").click()
    ui.page.wait_for_url("**/provisioner/system/tiny")
    assert 'Added new system template "tiny".' in ui.page.locator("#flash").inner_text()
    stored = prov.system_template_item(zk, "tiny")
    assert stored["vcpu_count"] == 2 and stored["vnc"] and stored["serial"]
    ui.page.locator("#remove-template").click()                                 # confirmed by the fixture
    ui.page.wait_for_url("**/provisioner/system")
    assert not zk.exists(schema.system_template("tiny"))
    assert ui.csp_violations() == [] and errors(ui) == []


def test_create_from_a_profile_shows_the_job_and_cancel(ui: UI, zk: ZK, prov_cluster: dict[str, Any]) -> None:
    ui.login()
    ui.goto("/provisioner/profiles/web")
    ui.page.locator("#create-from-profile").click()
    ui.page.wait_for_url("**/provisioner/create?profile=web")
    assert ui.page.get_by_label("Profile").input_value() == "web"
    ui.page.get_by_label("VM name").fill("newvm")
    ui.page.get_by_label("Start it once provisioned (needs it defined)").uncheck()
    ui.page.get_by_role("button", name="Create VM").click()
    ui.page.wait_for_url("**/provisioner/jobs/*")
    job_id = ui.page.url.rsplit("/", 1)[-1]
    task = tasks_mod.get_task(zk, job_id)
    assert task.kind == PROVISIONER_CREATE and task.args["vm_name"] == "newvm" and not task.args["start_vm"]
    ui.live()
    assert ui.page.locator("#job-state").get_attribute("data-state") == "PENDING"   # no worker here
    assert ui.page.locator("#job-stage").inner_text() == f"0/{task.total}"
    assert "Queued provisioner job" in ui.page.locator("#flash").inner_text()
    ui.shot("prov-job-pending")
    ui.page.evaluate("window.__pvc_same_page = 1")
    ui.page.locator("#cancel-job").click()                                      # confirmed by the fixture
    ui.wait_true("document.getElementById('job-state').dataset.state == 'CANCELLED'")
    assert ui.page.evaluate("window.__pvc_same_page") == 1, "the page was reloaded"
    assert f"Task {job_id} cancelled." in ui.page.locator("#flash").inner_text()
    assert ui.page.locator("#cancel-job").count() == 0
    assert tasks_mod.get_task(zk, job_id).state == "CANCELLED"
    ui.shot("prov-job-cancelled")
    ui.goto("/provisioner")
    ui.live()
    assert ui.page.locator(f"#job-link-{job_id}").count() == 1
    # refused before queueing: no node has the memory of the profile's system template
    ui.goto("/provisioner/create?profile=huge")
    ui.page.get_by_label("VM name").fill("bigvm")
    ui.page.get_by_role("button", name="Create VM").click()
    refusal = ui.page.locator("#create-profile-error")
    refusal.wait_for()
    assert "no node of this cluster could ever run VM bigvm" in refusal.inner_text()
    queued = [t.args["vm_name"] for t, _v in tasks_mod.load_tasks(zk) if t.kind == PROVISIONER_CREATE]
    assert queued == ["newvm"]
    ui.shot("prov-create-refused")
    assert ui.csp_violations() == [] and errors(ui) == []


def test_the_ova_upload_refusal_and_progress(ui: UI, zk: ZK, prov_cluster: dict[str, Any],
                                             tmp_path: Path) -> None:
    ui.login()
    ui.goto("/provisioner/ovas")
    ova = tmp_path / "guest.ova"
    ova.write_bytes(b"\0" * (3 << 20))          # not an OVA: the API refuses it once it has it all
    ui.page.get_by_label("Name").fill("guest")
    ui.page.get_by_label("OVA file").set_input_files(str(ova))
    ui.page.get_by_role("button", name="Upload", exact=True).click()
    message = ui.page.locator("#ova-message")
    message.wait_for()
    assert "OVA provisioner script is not stored" in message.inner_text()       # before any byte
    assert ui.page.locator("#ova-progress-box").is_hidden()
    prov.SCRIPTS.add(zk, "ova", sample.PROV_SCRIPT)
    ui.page.get_by_label("Name").fill("web")                                    # a profile's name
    ui.page.get_by_role("button", name="Upload", exact=True).click()
    ui.page.locator("#ova-name-error").wait_for()
    assert "already exists" in ui.page.locator("#ova-name-error").inner_text()
    ui.page.get_by_label("Name").fill("guest")
    ui.page.get_by_role("button", name="Upload", exact=True).click()
    ui.wait_true("document.getElementById('ova-progress').value == 100", timeout=30)
    ui.wait_true("document.getElementById('ova-message').textContent.indexOf('Error:') == 0", timeout=60)
    assert ui.page.locator("#ova-abort").is_hidden() and ui.page.locator("#ova-submit").is_enabled()
    ui.shot("prov-ova-refused-after-upload")
    assert not zk.exists(schema.ova("guest"))
    assert ui.page.evaluate("window.__pvc_xss") is None
    assert ui.csp_violations() == [] and errors(ui) == []


def test_keyboard_and_labels(ui: UI, prov_cluster: dict[str, Any]) -> None:
    """On a list, a detail page and the create form, Tab reaches every link, button and field, each
    with a visible focus ring, and every control has a label."""
    ui.login()
    for path in ("/provisioner/profiles", "/provisioner/storage/std", "/provisioner/create",
                 "/provisioner/ovas"):
        ui.goto(path)
        page = ui.page
        wanted, infos = tab_walk(page, "a[href], button, input:not([type=hidden]), select, textarea", 300)
        reached = [i["key"] for i in infos]
        rings = [i["ring"] for i in infos]
        missing = [w for w in wanted if w not in reached]
        assert missing == [], (path, missing)
        assert all(r.startswith("solid") and not r.endswith(" 0px") for r in rings), (path, rings)
        unlabelled = page.evaluate("""() => Array.from(document.querySelectorAll(
                'input, select, textarea, meter, progress'))
            .filter(e => e.type !== 'hidden')
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                         && !e.getAttribute('aria-labelledby'))
            .map(e => e.outerHTML)""")
        assert unlabelled == [], (path, unlabelled)
    assert ui.csp_violations() == []


def test_phone(phone: UI, prov_cluster: dict[str, Any], zk: ZK) -> None:
    phone.login()
    job = tasks_mod.submit(zk, PROVISIONER_CREATE, {"vm_name": "phonevm", "vm_profile": "web"},
                           total=PROVISION_STAGES)
    for path in (*PAGES, f"/provisioner/jobs/{job.id}"):
        phone.goto(path)
        phone.page.locator("h1").wait_for()
        width = phone.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390 + 1, (path, width)
        phone.shot("phone-" + shot_name(path).replace("jobs-" + job.id, "job"))
    wait_for(lambda: phone.page.locator("#job-state").count() == 1)
    assert phone.csp_violations() == [] and errors(phone) == []


@pytest.fixture
def fake_ceph_ui(browser: Any, shots: Path, config_factory: Callable[..., Path],
                 zk: ZK) -> Iterator[tuple[UI, FakeStorage]]:
    """pvcapid's app over a FakeStorage, served by uvicorn in this process (the `api` fixture's
    pvcapid has no Ceph), with a browser on it: an OVA upload can go all the way."""
    fake = FakeStorage()
    app = create_app(load_config(str(config_factory())), zk, storage=fake)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, message="the in-process pvcapid to start")
    context = browser.new_context(viewport=LAPTOP)
    context.set_default_timeout(15000)
    handle = UI(context, f"http://127.0.0.1:{server.config.port}", shots)
    try:
        yield handle, fake
    finally:
        context.close()
        server.should_exit = True
        thread.join(20)


def test_an_ova_uploaded_with_its_progress_then_removed(fake_ceph_ui: tuple[UI, FakeStorage], zk: ZK,
                                                         tmp_path: Path) -> None:
    ui, fake = fake_ceph_ui
    sample.nodes(zk)
    storage_mod.add_pool(zk, fake, "vms", 32, "copies=3,mincopies=2")
    zk.put(schema.CEPH_STATUS, {"time": 4e9})          # fresh pool figures: the space check reads them
    zk.update(schema.pool("vms"), lambda doc: {**doc, "stats": {"free_bytes": 100 << 30, "stored_bytes": 0}})
    prov.ensure_empty_userdata(zk)
    prov.SCRIPTS.add(zk, "ova", (Path(vmdata.__file__).parent / "examples" / "4-ova.py").read_text())
    disk = tmp_path / "disk.raw"
    disk.write_bytes(os.urandom(8 << 20))                     # incompressible: an 8 MiB upload
    ova = make_test_ova(tmp_path / "guest.ova", disk, "guest", vcpus=2, memory_mb=512)
    ui.login()
    ui.goto("/provisioner/ovas")
    ui.page.get_by_label("Name").fill("guest")
    ui.page.get_by_label("Pool").select_option("vms")
    ui.page.get_by_label("OVA file").set_input_files(str(ova))
    ui.page.get_by_role("button", name="Upload", exact=True).click()
    ui.wait_true("document.getElementById('ova-message').textContent.indexOf('Done:') == 0", timeout=60)
    assert ui.page.locator("#ova-progress").get_attribute("value") == "100"
    assert "guest" in ui.page.locator("#ova-message").inner_text()
    assert ui.page.locator("#ova-progress-text").inner_text() == "Sent and stored"
    ui.shot("prov-ova-uploaded", full_page=False)
    stored = prov.ova_item(zk, "guest")
    assert [v["volume_name"] for v in stored["volumes"]] == ["ova_guest_sda"]
    assert prov.system_template_item(zk, "guest")["vcpu_count"] == 2
    ui.page.locator("#ova-open").click()
    ui.page.wait_for_url("**/provisioner/ovas/guest")
    assert "ova_guest_sda" in ui.page.locator("main").inner_text()
    ui.page.locator("#remove-ova").click()                                   # confirmed by the fixture
    ui.page.wait_for_url("**/provisioner/ovas")
    assert not zk.exists(schema.ova("guest")) and not zk.exists(schema.volume("vms", "ova_guest_sda"))
    assert ui.csp_violations() == [] and errors(ui) == []
