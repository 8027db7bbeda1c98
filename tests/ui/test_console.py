"""The console page in Chromium against a real pvcapid and a private ZooKeeper (no lab): noVNC,
loaded as ES modules under the UI's CSP, draws a real QEMU's VGA screen (a diskless QEMU showing
its BIOS, standing for a VM's VNC listener that ZooKeeper names), and the serial console shows
pvcapid's refusal when the VM's node publishes no libvirt URI. The lab test
(test_console_lab.py) does both against a running guest."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pvc.core import schema
from pvc.core.records import VMStatus
from pvc.core.zk import ZK
from tests.ui.conftest import UI

QEMU = "/usr/bin/qemu-system-x86_64"


def _free_display() -> int:
    for display in range(60, 99):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", 5900 + display)) != 0:
                return display
    raise AssertionError("no free VNC display 60..98")


@pytest.fixture
def vnc_port() -> Iterator[int]:
    if not shutil.which(QEMU):
        pytest.skip(f"no {QEMU}")
    display = _free_display()
    qemu = subprocess.Popen([QEMU, "-nodefaults", "-machine", "pc", "-m", "32", "-vga", "std",
                             "-display", "none", "-vnc", f"127.0.0.1:{display}", "-no-reboot"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port = 5900 + display
    deadline = time.monotonic() + 15
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert qemu.poll() is None and time.monotonic() < deadline, "QEMU's VNC did not come up"
        time.sleep(0.1)
    yield port
    qemu.terminate()
    qemu.wait(10)


def _canvas_colours(ui: UI) -> int:
    return int(ui.page.evaluate("""() => {
        const c = document.querySelector('#vnc-screen canvas');
        if (!c || !c.width || !c.height) return 0;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < d.length; i += 4 * 97) seen.add(d[i] << 16 | d[i + 1] << 8 | d[i + 2]);
        return seen.size;
    }"""))


def test_vnc_canvas_and_serial_refusal(ui: UI, cluster: dict[str, Any], zk: ZK, vnc_port: int) -> None:
    uuid = str(zk.get(schema.vm_name("web1")))
    zk.put(schema.vm_status(uuid), VMStatus(node="hv1", running=True, libvirt_state="running",
                                            vnc=f"127.0.0.1:{vnc_port}").doc())
    ui.login()
    ui.goto(f"/vms/{uuid}/console")
    try:
        ui.wait_true("document.getElementById('vnc-state').textContent === 'Connected.'", 20)
    except AssertionError as exc:
        raise AssertionError(f"{ui.page.locator('#vnc-state').inner_text()} {ui.console_errors}") from exc
    deadline = time.monotonic() + 20
    while _canvas_colours(ui) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _canvas_colours(ui) >= 2, "the VNC canvas stayed blank"
    ui.wait_true("document.getElementById('serial-state').textContent.startsWith('Not connected: no')")
    assert "no console of VM web1 on hv1" in ui.page.locator("#serial-state").inner_text()
    ui.shot("console")
    assert ui.csp_violations() == [], ui.console_errors


def test_console_of_a_stopped_vm(ui: UI, cluster: dict[str, Any], zk: ZK) -> None:
    ui.login()
    ui.goto("/vms/db2/console")
    assert "the VM is not running" in ui.page.locator("#serial-state").inner_text()
    assert ui.page.locator("#vnc-screen canvas").count() == 0
    ui.shot("console-stopped")


HOSTILE = (b"\x1b[31mPVC-GUEST-HEARTBEAT\x1b[0m n=1\r\n<img src=x onerror=alert(1)><script>alert(2)</script>"
           b"\x1b]0;title\x07 <b>bold</b>\r\n")


def test_serial_output_is_text_and_keys_are_sent(ui: UI, cluster: dict[str, Any], zk: ZK) -> None:
    """Without the lab: Playwright stands in for pvcapid's serial websocket and sends hostile guest
    output; the page shows it as text with the escapes removed, and sends what is typed as bytes."""
    uuid = str(zk.get(schema.vm_name("web1")))
    zk.put(schema.vm_status(uuid), VMStatus(node="hv1", running=True, libvirt_state="running").doc())
    typed: list[bytes] = []
    dialogs: list[str] = []

    def serve(route: Any) -> None:
        assert "csrf=" in route.url
        route.on_message(lambda m: typed.append(m if isinstance(m, bytes) else m.encode()))
        route.send(HOSTILE)

    ui.page.route_web_socket("**/console/serial*", serve)
    ui.page.on("dialog", lambda d: dialogs.append(d.message))
    ui.login()
    ui.goto(f"/vms/{uuid}/console")
    ui.wait_true("document.getElementById('serial-screen').textContent.includes('<b>bold</b>')")
    text = ui.page.locator("#serial-screen").text_content() or ""
    assert "PVC-GUEST-HEARTBEAT n=1\n<img src=x onerror=alert(1)><script>alert(2)</script> <b>bold</b>" \
        in text
    assert "\x1b" not in text and "title" not in text
    assert ui.page.locator("#serial-screen img, #serial-screen script, #serial-screen b").count() == 0
    ui.page.locator("#serial-screen").focus()
    ui.page.keyboard.type("ls")
    ui.page.keyboard.press("Enter")
    ui.page.keyboard.press("Control+c")
    deadline = time.monotonic() + 10
    while b"".join(typed) != b"ls\r\x03" and time.monotonic() < deadline:
        ui.page.wait_for_timeout(100)
    assert b"".join(typed) == b"ls\r\x03"
    assert dialogs == []
    ui.shot("console-serial-text")
