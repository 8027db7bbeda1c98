"""The serial relay's logic in-process with a stand-in for libvirt's console stream (the lab test
uses the real one): it opens the console at the URI the VM's node publishes, relays both ways,
follows the VM to another node when its status moves, and ends with 4000 when the VM stops."""

from __future__ import annotations

import queue
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pvc.api.app import create_app
from pvc.api.web import wsproxy
from pvc.core import schema
from pvc.core.config import load_config
from pvc.core.records import VMStatus
from pvc.core.zk import ZK
from tests.conftest import API_TOKEN
from tests.ui import sample

OPENED: list[str] = []


class FakeConsole:
    """Says hello with its URI, echoes what it is sent; close() ends its stream."""

    def __init__(self, uri: str, uuid: str) -> None:
        OPENED.append(uri)
        self.queue: queue.Queue[bytes] = queue.Queue()
        self.queue.put(f"hello from {uri}\n".encode())

    def recv(self, size: int = 4096) -> bytes:
        return self.queue.get(timeout=30)

    def send(self, data: bytes) -> None:
        self.queue.put(b"echo:" + data)

    def close(self) -> None:
        self.queue.put(b"")


@pytest.fixture
def client(config_factory: Callable[..., Path], zk: ZK,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setattr(wsproxy, "SerialConsole", FakeConsole)
    monkeypatch.setattr(wsproxy, "WATCH_INTERVAL", 0.2)
    OPENED.clear()
    sample.nodes(zk)
    for node in ("hv1", "hv2"):
        doc = zk.get(schema.node(node))
        zk.put(schema.node(node), {**doc, "libvirt_migration_uri": f"fake://{node}"})
    app = create_app(load_config(str(config_factory())), zk)
    with TestClient(app) as test_client:
        yield test_client


def _login(client: TestClient) -> str:
    form = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token
    answer = client.post("/login", data={"token": API_TOKEN, "csrf_token": token.group(1), "next": "/"},
                         follow_redirects=False)
    assert answer.status_code == 303, answer.text
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', client.get("/").text)
    assert csrf
    return csrf.group(1)


def _until(ws: object, text: str) -> str:
    seen = ""
    while text not in seen:
        seen += ws.receive_bytes().decode()        # type: ignore[attr-defined]
    return seen


def test_serial_follows_the_vm(client: TestClient, zk: ZK) -> None:
    csrf = _login(client)
    uuid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    xml = re.sub(r"<uuid>[^<]+</uuid>", f"<uuid>{uuid}</uuid>", sample.vm_xml("con1", "console test"))
    answer = client.post("/api/v1/vm", params={"node": "hv1"}, data={"xml": xml},
                         headers={"X-Api-Key": API_TOKEN})
    assert answer.status_code == 200, answer.text
    zk.put(schema.vm_status(uuid), VMStatus(node="hv1", running=True, libvirt_state="running").doc())
    with client.websocket_connect(f"/vms/con1/console/serial?csrf={csrf}",
                                  headers={"origin": "http://testserver"}) as ws:
        _until(ws, "hello from fake://hv1")
        ws.send_bytes(b"ls\r")
        _until(ws, "echo:ls\r")
        zk.put(schema.vm_status(uuid), VMStatus(node="hv2", running=True, libvirt_state="running").doc())
        seen = _until(ws, "hello from fake://hv2")
        assert "[pvc: VM con1 moved to hv2; reconnecting]" in seen
        ws.send_bytes(b"after")
        _until(ws, "echo:after")
        zk.put(schema.vm_status(uuid), VMStatus(node="hv2", running=False, libvirt_state="shutoff").doc())
        with pytest.raises(Exception) as ended:
            while True:
                ws.receive_bytes()
        assert getattr(ended.value, "code", None) == wsproxy.MOVED, ended.value
    assert OPENED == ["fake://hv1", "fake://hv2"]
