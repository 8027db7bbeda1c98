"""An image upload in Chromium into the lab's real Ceph: the Storage page's upload form creates
the volume, the browser sends the file to the API's upload route with its progress bar moving to
100 %, the bytes are in the RBD image (`rbd export` on the lab, compared byte for byte, with a
marker at a known offset), and the volume is removed through its page after typing its name.

The browser's upload is throttled (Chromium's network emulation) so the page is seen, and
photographed, mid-upload; without it 8 MiB over loopback is sent before anyone can look. Run
alone:

    .venv/bin/pytest -q tests/ui/test_storage_lab.py
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pvc.lab import ceph, labtls
from pvc.lab.plan import LabPlan
from tests.system import helpers
from tests.ui.conftest import LAPTOP, UI

pytestmark = pytest.mark.system
POOL = "vms"
VOLUME = "webupload1"
SIZE = 8 << 20
MARK_AT = 5 * (1 << 20) + 4321          # a byte offset inside an RBD object, not at its start
MARK = b"PVC-WEB-UPLOAD-MARK-19"
THROUGHPUT = 2 << 20                      # bytes/s the browser may send: ~4 s for the image

# Every percentage the upload's progress bar showed (a MutationObserver: a value that passed
# between two polls is still seen), and a mark of the same page (a reload would lose it).
RECORD_PROGRESS = """() => {
    window.__pvc_same_page = 1;
    window.__pvc_progress = [];
    const bar = document.getElementById('upload-progress');
    const note = () => {
        const seen = window.__pvc_progress;
        const value = Number(bar.getAttribute('value'));
        if (seen[seen.length - 1] !== value) seen.push(value);
    };
    new MutationObserver(note).observe(bar, {attributes: true, attributeFilter: ['value']});
}"""


def image(path: Path) -> bytes:
    """8 MiB of a repeating pattern with a marker at MARK_AT: a shifted or truncated write shows."""
    data = bytearray(bytes(range(256)) * (SIZE // 256))
    data[MARK_AT:MARK_AT + len(MARK)] = MARK
    path.write_bytes(data)
    return bytes(data)


def throttle(ui: UI, throughput: int) -> None:
    """Limit what the page may upload per second (DevTools protocol; -1: no limit)."""
    session = ui.context.new_cdp_session(ui.page)
    session.send("Network.enable")
    session.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": throughput})


def upload_in_page(ui: UI, pool: str, volume: str, path: Path, timeout_ms: int = 120_000) -> list[int]:
    """Upload `path` as a raw image into a new volume through the volume list's form; the
    progress values the bar showed. Screenshots mid-upload and at the end."""
    page = ui.page
    ui.goto(f"/storage/volumes?pool={pool}")
    ui.wait_true("!document.getElementById('upload-start').disabled")     # the script took the form
    page.evaluate(RECORD_PROGRESS)
    page.locator("#upload-pool").select_option(pool)
    page.get_by_label("New volume's name").fill(volume)
    page.get_by_label("Image format").select_option("raw")
    page.get_by_label("Image file").set_input_files(str(path))
    page.get_by_role("button", name="Upload").click()
    ui.wait_true("(() => { const v = Number(document.getElementById('upload-progress')"
                 ".getAttribute('value')); return (v >= 25 && v < 100) || "
                 "!!document.querySelector('#msg-upload .flash'); })()", 60)
    ui.shot("lab-storage-upload-midway")
    page.wait_for_selector("#msg-upload .flash-ok, #msg-upload .flash-bad", timeout=timeout_ms)
    ui.shot("lab-storage-upload-done")
    message = page.locator("#msg-upload").inner_text()
    assert page.locator("#msg-upload .flash-ok").count() == 1, f"the upload failed: {message}"
    assert "Wrote uploaded file" in message, message
    assert page.locator("#upload-progress").get_attribute("value") == "100"
    assert page.locator("#upload-pct").inner_text() == "100%"
    assert page.evaluate("window.__pvc_same_page") == 1, "the page was reloaded"
    return [int(v) for v in page.evaluate("window.__pvc_progress")]


def remove_in_page(ui: UI, pool: str, volume: str) -> tuple[str, str]:
    """Open the new volume from the upload's link and remove it after typing its name; (the
    size its page showed, the flash message after the removal)."""
    page = ui.page
    page.locator("#upload-volume-link").click()
    page.wait_for_url(f"**/storage/volumes/{pool}/{volume}")
    ui.shot("lab-storage-uploaded-volume")
    size = page.locator("#volume-size").inner_text().strip()
    page.get_by_label(f"Type {volume} to confirm").fill(volume)
    page.get_by_role("button", name="Remove volume").click()
    page.wait_for_url(f"**/storage/pools/{pool}")
    return size, page.locator("#flash").inner_text()


def exported(lab: LabPlan, image_spec: str) -> bytes:
    """The RBD image's bytes, read back with the lab's `rbd export`."""
    out = lab.state_dir / "webupload-export.raw"
    out.unlink(missing_ok=True)
    try:
        ceph.rbd(lab, "export", "--no-progress", image_spec, str(out))
        return out.read_bytes()
    finally:
        out.unlink(missing_ok=True)


def _forget(api: httpx.Client) -> None:
    """The test's volume, if an interrupted run left it."""
    if api.get(f"/storage/ceph/volume/{POOL}/{VOLUME}").status_code == 200:
        helpers.call(api, "DELETE", f"/storage/ceph/volume/{POOL}/{VOLUME}")


@pytest.fixture
def lab_ui(browser: Any, lab: Any, shots: Path) -> Iterator[UI]:
    context = browser.new_context(viewport=LAPTOP, ignore_https_errors=True)   # the lab's own CA
    context.set_default_timeout(20000)
    handle = UI(context, labtls.api_base(lab).removesuffix("/api/v1"), shots)
    handle.login(str(lab.extra["api_token"]))
    yield handle
    context.close()


def test_upload_into_ceph_and_remove(lab: LabPlan, lab_ui: UI, lab_api: httpx.Client, tmp_path: Path) -> None:
    _forget(lab_api)
    data = image(tmp_path / "webupload.raw")
    throttle(lab_ui, THROUGHPUT)
    try:
        seen = upload_in_page(lab_ui, POOL, VOLUME, tmp_path / "webupload.raw")
        print(f"upload progress as the page showed it: {seen}")
        assert any(0 < v < 100 for v in seen), f"no progress between 0 and 100 was shown: {seen}"
        assert seen[-1] == 100 and seen == sorted(seen), seen

        # the bytes are in Ceph: the size the API reports, and the content rbd reads back
        item = helpers.call(lab_api, "GET", f"/storage/ceph/volume/{POOL}/{VOLUME}")
        item = item[0] if isinstance(item, list) else item
        assert item["stats"]["size"] == "8M", item                     # the API's human size
        assert ceph.rbd(lab, "info", f"{POOL}/{VOLUME}", json_out=True)["size"] == SIZE
        back = exported(lab, f"{POOL}/{VOLUME}")
        assert back[MARK_AT:MARK_AT + len(MARK)] == MARK
        assert len(back) == SIZE and hashlib.sha256(back).digest() == hashlib.sha256(data).digest()

        size, flash = remove_in_page(lab_ui, POOL, VOLUME)
        assert size == "8M", size
        assert f'Removed RBD volume "{VOLUME}"' in flash, flash
        assert lab_api.get(f"/storage/ceph/volume/{POOL}/{VOLUME}").status_code == 404
        assert VOLUME not in ceph.rbd(lab, "ls", POOL, json_out=True)
        lab_ui.shot("lab-storage-removed")
        assert lab_ui.csp_violations() == []
        assert [e for e in lab_ui.console_errors if "status of 4" not in e] == []
    finally:
        _forget(lab_api)
