"""Consoles in Chromium against the lab (real nodes, libvirt, QEMU): the serial console shows the
tiny guest's heartbeat lines and takes typed input (the guest echoes each line), guest output with
HTML in it stays text, the VNC canvas draws the guest's screen, and both follow the VM across a
live migration: the serial console reopens on the new node and takes input there; the VNC view
drops its connection when the source's QEMU ends, reconnects (a new noVNC canvas on the same page)
through pvcapid to the listener ZooKeeper names on the new node (an established connection to that
port in the new node's namespace) and draws the guest's screen again. Run alone:

    .venv/bin/pytest -q tests/ui/test_console_lab.py
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pvc.lab import guest, labtls, proc
from tests.system import helpers
from tests.ui.conftest import LAPTOP, UI

NAME = "webconsole"
EVIL = "<img src=x onerror=alert(1)><script>alert(2)</script>"


@pytest.fixture
def vm(lab: Any, lab_api: httpx.Client) -> Iterator[str]:
    uuid = str(uuidlib.uuid4())
    xml = guest.domain_xml(NAME, guest.from_files(lab.extra["guest_files"]), uuid=uuid, vnc=True,
                           cmdline_extra="vmdhcp=0")
    helpers.call(lab_api, "POST", "/vm", data={"xml": xml, "node": "hv1"})
    helpers.call(lab_api, "POST", f"/vm/{NAME}/state", params={"state": "start"})
    helpers.wait("heartbeat", lambda: "PVC-GUEST-HEARTBEAT" in helpers.console(lab_api, NAME), 120)
    yield NAME
    helpers.call(lab_api, "POST", f"/vm/{NAME}/state", params={"state": "stop", "wait": "true"})
    helpers.call(lab_api, "DELETE", f"/vm/{NAME}")


@pytest.fixture
def lab_ui(browser: Any, lab: Any, shots: Path) -> Iterator[UI]:
    context = browser.new_context(viewport=LAPTOP, ignore_https_errors=True)   # the lab's own CA
    context.set_default_timeout(20000)
    base = labtls.api_base(lab).removesuffix("/api/v1")
    handle = UI(context, base, shots)
    handle.login(str(lab.extra["api_token"]))
    yield handle
    context.close()


def _serial(ui: UI) -> str:
    return str(ui.page.evaluate("document.getElementById('serial-screen').textContent"))


def _canvas_colours(ui: UI) -> int:
    """How many distinct colours a sample of the VNC canvas has (1: blank)."""
    return int(ui.page.evaluate("""() => {
        const c = document.querySelector('#vnc-screen canvas');
        if (!c || !c.width || !c.height) return 0;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < d.length; i += 4 * 97) seen.add(d[i] << 16 | d[i + 1] << 8 | d[i + 2]);
        return seen.size;
    }"""))


# The VNC status line's every text from now on (a MutationObserver: a state that passed between two
# polls is still seen), the canvas noVNC draws into now (a reconnect makes a new one), and a mark
# of the same page (a reload would lose it).
RECORD_VNC = """() => {
    window.__pvc_same_page = 1;
    window.__pvc_vnc_states = [];
    window.__pvc_old_canvas = document.querySelector('#vnc-screen canvas');
    const state = document.getElementById('vnc-state');
    const note = () => {
        const all = window.__pvc_vnc_states;
        if (all[all.length - 1] !== state.textContent) all.push(state.textContent);
    };
    note();
    new MutationObserver(note).observe(state, {childList: true, characterData: true, subtree: true});
}"""
NEW_CANVAS_CONNECTED = ("(() => { const c = document.querySelector('#vnc-screen canvas');"
                        " return !!c && c !== window.__pvc_old_canvas"
                        " && document.getElementById('vnc-state').textContent === 'Connected.'; })()")


def _vnc_clients(lab: Any, node: str, port: str) -> list[str]:
    """Established TCP connections to `port` in the node's network namespace (its QEMU's end)."""
    out = proc.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                   netns=lab.node(node).netns).stdout
    return [line for line in out.splitlines() if line.strip()]


def _wait_drawn(ui: UI, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while _canvas_colours(ui) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    return _canvas_colours(ui)


def test_consoles_in_the_browser(lab: Any, lab_ui: UI, lab_api: httpx.Client, vm: str) -> None:
    ui = lab_ui
    dialogs: list[str] = []
    ui.page.on("dialog", lambda d: dialogs.append(d.message))
    ui.goto(f"/vms/{vm}/console")
    ui.wait_true("document.getElementById('serial-screen').textContent.includes('PVC-GUEST-HEARTBEAT')", 30)

    # typed input reaches the guest, which echoes the line
    ui.page.locator("#serial-screen").focus()
    ui.page.keyboard.type("hello from chromium")
    ui.page.keyboard.press("Enter")
    ui.wait_true("document.getElementById('serial-screen').textContent"
                 ".includes('PVC-GUEST-ECHO hello from chromium')", 20)

    # guest output with HTML and script in it is text
    ui.page.keyboard.type(EVIL)
    ui.page.keyboard.press("Enter")
    echoed = "PVC-GUEST-ECHO " + EVIL
    ui.wait_true(f"document.getElementById('serial-screen').textContent.includes({echoed!r})", 20)
    assert ui.page.locator("#serial-screen img, #serial-screen script").count() == 0
    time.sleep(0.5)
    assert dialogs == []

    # the VNC canvas draws the guest's screen
    ui.wait_true("document.getElementById('vnc-state').textContent === 'Connected.'", 30)
    assert _wait_drawn(ui) >= 2, "the VNC canvas stayed blank"
    ui.shot("console-lab")
    assert ui.csp_violations() == []
    ui.page.evaluate(RECORD_VNC)

    # both follow a live migration
    helpers.call(lab_api, "POST", f"/vm/{vm}/node",
                 params={"action": "migrate", "node": "hv2", "wait": "true"})
    ui.wait_true("document.getElementById('serial-screen').textContent.includes('moved to hv2')", 30)
    # keys typed while pvcapid reopens the console are dropped: type once it is open on hv2
    reopened = f"console of {vm} on hv2"
    ui.wait_true(f"document.getElementById('serial-screen').textContent.includes({reopened!r})", 30)
    ui.page.locator("#serial-screen").focus()
    ui.page.keyboard.type("after the move")
    ui.page.keyboard.press("Enter")
    ui.wait_true("document.getElementById('serial-screen').textContent"
                 ".includes('PVC-GUEST-ECHO after the move')", 30)
    assert "PVC-GUEST-BOOT-OK" not in _serial(ui).split("moved to hv2")[-1], "the guest rebooted"

    # the VNC view reconnected (a new canvas, same page) to the listener on hv2 and draws again
    ui.wait_true(NEW_CANVAS_CONNECTED, 60)
    drawn = _wait_drawn(ui)
    states = ui.page.evaluate("window.__pvc_vnc_states")
    print(f"VNC status after the migration: {' -> '.join(states)}; colours drawn: {drawn}")
    ui.shot("console-lab-migrated")
    assert drawn >= 2, f"the VNC canvas stayed blank after the migration: {states}"
    assert "Connected." in states[1:], f"no reconnect was seen: {states}"
    assert ui.page.evaluate("window.__pvc_same_page") == 1, "the console page was reloaded"
    status = helpers.call(lab_api, "GET", f"/vm/{vm}")[0]
    assert status["node"] == "hv2" and status["vnc"]["port"], status["vnc"]
    helpers.wait(f"pvcapid's VNC connection to {vm}'s listener on hv2 (port {status['vnc']['port']})",
                 lambda: _vnc_clients(lab, "hv2", status["vnc"]["port"]), 20)
    assert ui.csp_violations() == []
