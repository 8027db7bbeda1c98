"""The Storage pages in Chromium: every page on a laptop and a phone (screenshots), the Ceph
status and a health message with markup inert, a snapshot taken and shown without a reload, a
pool's refusal in place, a volume removed after typing its name, and an image uploaded into a new
volume with its progress bar.

pvcapid runs in-process here (uvicorn in a thread) with a FakeStorage as its Ceph adapter, so
actions that reach Ceph complete; the Ceph status, OSDs and pool figures are what the primary's
StorageMonitor writes from that fake (tests/ui/sample.py `storage`). No real Ceph.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pvc.adapters.ceph.fake import FakeStorage
from pvc.api.app import create_app
from pvc.core import schema
from pvc.core.config import load_config
from pvc.core.zk import ZK
from tests.conftest import API_TOKEN, wait_for
from tests.ui import sample
from tests.ui.conftest import LAPTOP, PHONE, UI


class Served:
    def __init__(self, base: str, fake: FakeStorage) -> None:
        self.base = base
        self.fake = fake


@pytest.fixture
def served(config_factory: Callable[..., Path], zk: ZK) -> Iterator[Served]:
    """pvcapid's app on a free loopback port, its Ceph a FakeStorage, the sample storage seeded."""
    import uvicorn

    fake = FakeStorage()
    app = create_app(load_config(str(config_factory())), zk, storage=fake)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 20, message="the in-process pvcapid to listen")
    sample.nodes(zk)
    with httpx.Client(base_url=base + "/api/v1", headers={"X-Api-Key": API_TOKEN}, timeout=30) as api:
        sample.storage(zk, api, fake)
    yield Served(base, fake)
    server.should_exit = True
    thread.join(15)
    listener.close()


def browse(browser: Any, served: Served, shots: Path, viewport: dict[str, int], **options: Any) -> UI:
    context = browser.new_context(viewport=viewport, **options)
    context.set_default_timeout(15000)
    ui = UI(context, served.base, shots)
    ui.login()
    return ui


@pytest.fixture
def laptop(browser: Any, served: Served, shots: Path) -> Iterator[UI]:
    ui = browse(browser, served, shots, LAPTOP)
    yield ui
    ui.context.close()


@pytest.fixture
def phone(browser: Any, served: Served, shots: Path) -> Iterator[UI]:
    ui = browse(browser, served, shots, PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    yield ui
    ui.context.close()


def errors(ui: UI) -> list[str]:
    """Console errors, less the browser's note on the refusals these tests provoke."""
    return [e for e in ui.console_errors if "status of 400" not in e and "status of 404" not in e]


def inert(ui: UI) -> None:
    assert ui.page.evaluate("window.__pvc_xss") is None, "markup from a name or message ran"
    assert not ui.csp_violations(), ui.csp_violations()


UNLABELLED = ("Array.from(document.querySelectorAll('input, select, textarea'))"
              ".filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length)).map(e => e.id || e.name)")


def test_pages_on_a_laptop_and_a_phone(laptop: UI, phone: UI) -> None:
    volume = "/storage/volumes/vms/app1_sda"
    for ui, width in ((laptop, "laptop"), (phone, "phone")):
        ui.goto("/storage")
        ui.live()
        assert ui.page.locator("#ceph-health").get_attribute("data-health") == "HEALTH_WARN"
        assert ui.page.get_by_text("POOL_APP_NOT_ENABLED").is_visible()
        assert sample.XSS_SCRIPT in ui.page.locator("#ceph-checks").inner_text()     # shown as text
        assert ui.page.locator("#osd-table tbody tr").count() == 3
        ui.shot(f"storage-overview-{width}")
        ui.goto("/storage/pools/vms")
        ui.live()
        assert sample.XSS_VOLUME in ui.page.locator("#volume-table").inner_text()
        ui.shot(f"storage-pool-{width}")
        ui.goto("/storage/volumes?q=app")
        ui.live()
        assert ui.page.locator("#volume-table tbody tr").count() == 1
        ui.shot(f"storage-volumes-{width}")
        ui.goto(volume)
        ui.live()
        assert ui.page.locator("#snapshot-table tbody tr").count() == 2
        assert ui.page.locator("#volume-users").inner_text().startswith("app1")
        ui.shot(f"storage-volume-{width}")
        for path in ("/storage", "/storage/volumes", volume):
            ui.goto(path)
            assert ui.page.evaluate(UNLABELLED) == [], path          # every control has its label
        inert(ui)
        assert not errors(ui), ui.console_errors
    # the keyboard reaches the actions
    laptop.goto("/storage")
    for _ in range(80):
        laptop.page.keyboard.press("Tab")
        if laptop.page.evaluate("document.activeElement.id") == "add-pool":
            break
    else:
        raise AssertionError("Tab never reached Add pool")
    # nothing is wider than the phone's screen
    phone.goto("/storage")
    assert phone.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_snapshot_refusal_and_remove(laptop: UI, served: Served, zk: ZK) -> None:
    ui = laptop
    ui.goto("/storage/volumes/vms/db1_vda")
    ui.live()
    ui.page.get_by_label("Snapshot name").fill("s1")
    ui.page.get_by_role("button", name="Take snapshot").click()
    ui.page.wait_for_selector("#msg-snapshot .flash-ok")
    assert 'Created RBD snapshot "s1"' in ui.page.locator("#msg-snapshot").inner_text()
    ui.page.wait_for_selector("#snapshot-table >> text=s1")        # live: no reload
    assert "s1" in served.fake.list_snapshots("vms", "db1_vda")
    # a refusal in place, in the API's words
    ui.goto("/storage")
    ui.page.get_by_label("Name", exact=True).fill("fast")
    ui.page.get_by_label("Placement groups").fill("30")
    ui.page.get_by_role("button", name="Add pool").click()
    ui.page.wait_for_selector("#msg-pool-add .flash-bad")
    assert "pgs: 30 is not a power of two" in ui.page.locator("#msg-pool-add").inner_text()
    ui.page.get_by_label("Placement groups").fill("32")
    ui.page.get_by_label("Copies", exact=True).fill("5")
    ui.page.get_by_role("button", name="Add pool").click()
    ui.page.wait_for_selector("#msg-pool-add >> text=copies=5 needs 5 separate hosts")
    assert "fast" not in served.fake.list_pools()
    # remove after typing the name
    ui.goto("/storage/volumes/vms/db1_vda")
    ui.page.get_by_label("Type db1_vda to confirm").fill("db1")
    ui.page.get_by_role("button", name="Remove volume").click()
    ui.page.wait_for_selector("#msg-volume-remove .flash-bad")
    ui.page.get_by_label("Type db1_vda to confirm").fill("db1_vda")
    ui.page.get_by_role("button", name="Remove volume").click()
    ui.page.wait_for_url("**/storage/pools/vms")
    assert 'Removed RBD volume "db1_vda"' in ui.page.locator("#flash").inner_text()
    assert not zk.exists(schema.volume("vms", "db1_vda"))
    inert(ui)


def test_upload_into_a_new_volume(laptop: UI, served: Served, tmp_path: Path) -> None:
    ui = laptop
    image = bytes(range(256)) * (16 * 4096)                         # 16 MiB, raw
    path = tmp_path / "disk.raw"
    path.write_bytes(image)
    ui.goto("/storage/volumes?pool=vms")
    ui.wait_true("!document.getElementById('upload-start').disabled")     # the script took the form
    ui.page.get_by_label("New volume's name").fill("uploaded")
    ui.page.get_by_label("Image format").select_option("raw")
    ui.page.get_by_label("Image file").set_input_files(str(path))
    ui.page.get_by_role("button", name="Upload").click()
    ui.page.wait_for_selector("#msg-upload .flash-ok", timeout=60000)
    assert "Wrote uploaded file" in ui.page.locator("#msg-upload").inner_text()
    assert ui.page.locator("#upload-progress").get_attribute("value") == "100"
    assert served.fake.read_volume("vms", "uploaded") == image
    ui.shot("storage-upload-done")
    ui.page.locator("#upload-volume-link").click()
    ui.page.wait_for_url("**/storage/volumes/vms/uploaded")
    assert ui.page.locator("#volume-size").inner_text() == "16M"
    # a name that is taken is refused before the file is sent
    ui.goto("/storage/volumes?pool=vms")
    ui.wait_true("!document.getElementById('upload-start').disabled")
    ui.page.get_by_label("New volume's name").fill("uploaded")
    ui.page.get_by_label("Image file").set_input_files(str(path))
    ui.page.get_by_role("button", name="Upload").click()
    ui.page.wait_for_selector("#msg-upload .flash-bad")
    assert 'Volume "uploaded" already exists' in ui.page.locator("#msg-upload").inner_text()
    inert(ui)
