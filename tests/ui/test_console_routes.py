"""The console page and its websockets against a real pvcapid and a private ZooKeeper, no browser and
no lab: the handshake's refusals (no session, a cross-site Origin, no or a wrong CSRF token), an
unknown VM, a VM not running, a VM without VNC, and the VNC relay to a listener named only by
ZooKeeper (a fake RFB server here; the lab test draws a real guest's screen)."""

from __future__ import annotations

import socket
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from pvc.core import schema
from pvc.core.records import VMStatus
from pvc.core.zk import ZK
from tests.conftest import Api
from tests.integration.uihelp import UIClient
from tests.ui import sample


class WSClient:
    """A minimal websocket client (wsproto over a socket) that sends what a browser sends."""

    def __init__(self, base: str, path: str, origin: str | None, cookie: str = "",
                 protocols: tuple[str, ...] = ("binary",)) -> None:
        url = urllib.parse.urlsplit(base)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=10)
        self.ws = WSConnection(ConnectionType.CLIENT)
        headers = [(b"cookie", cookie.encode())] if cookie else []
        if origin is not None:
            headers.append((b"origin", origin.encode()))
        self.sock.sendall(self.ws.send(Request(host=url.netloc, target=path, extra_headers=headers,
                                               subprotocols=list(protocols))))
        self.status = 0
        self.subprotocol: str | None = None
        self.closed: CloseConnection | None = None
        self.received = b""
        self.pump(until=lambda: self.status != 0)

    def pump(self, until: Any, rounds: int = 50) -> None:
        for _ in range(rounds):
            if until():
                return
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    self.status = 101
                    self.subprotocol = event.subprotocol
                elif isinstance(event, RejectConnection):
                    self.status = event.status_code
                elif isinstance(event, RejectData):
                    pass
                elif isinstance(event, CloseConnection):
                    self.closed = event
                    if self.status == 0:
                        self.status = 101
                elif isinstance(event, BytesMessage):
                    self.received += bytes(event.data)
                elif isinstance(event, TextMessage):
                    self.received += event.data.encode()
            if not data:
                return

    def send(self, data: bytes) -> None:
        self.sock.sendall(self.ws.send(BytesMessage(data=data)))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def ui(api: Api, zk: ZK) -> Iterator[UIClient]:
    sample.nodes(zk)
    sample.define_vms(api.http)
    client = UIClient(api)
    yield client
    client.close()


def _cookie(ui: UIClient) -> str:
    return "; ".join(f"{name}={value}" for name, value in ui.http.cookies.items())


def _uuid(zk: ZK, name: str) -> str:
    return str(zk.get(schema.vm_name(name)))


def _run(zk: ZK, name: str, vnc: str = "") -> str:
    uuid = _uuid(zk, name)
    zk.put(schema.vm_status(uuid), VMStatus(node="hv1", running=True, libvirt_state="running", vnc=vnc).doc())
    return uuid


def _path(uuid: str, kind: str, csrf: str | None) -> str:
    query = f"?csrf={urllib.parse.quote(csrf)}" if csrf is not None else ""
    return f"/vms/{uuid}/console/{kind}{query}"


def test_console_page(ui: UIClient, api: Api, zk: ZK) -> None:
    uuid = _run(zk, "web1", vnc="127.0.0.1:5901")
    page = ui.get(f"/vms/{uuid}/console")
    assert page.status_code == 200, page.text
    assert 'id="serial-screen"' in page.text and 'id="vnc-screen"' in page.text
    assert "<script>" not in page.text and 'type="module"' in page.text
    assert "<script>alert" not in page.text          # the VM's description is not on this page raw
    stopped = ui.get(f"/vms/{_uuid(zk, 'db2')}/console")
    assert stopped.status_code == 200 and "the VM is not running" in stopped.text
    assert ui.get("/vms/nosuchvm/console").status_code == 404
    anonymous = UIClient(api, login=False)
    try:
        assert anonymous.get(f"/vms/{uuid}/console").status_code == 303      # to the login form
    finally:
        anonymous.close()


@pytest.mark.parametrize("kind", ["serial", "vnc"])
def test_handshake_refusals(ui: UIClient, api: Api, zk: ZK, kind: str) -> None:
    uuid = _run(zk, "web1", vnc="127.0.0.1:1")
    own = api.base
    cases = {
        "no session": (own, "", ui.csrf),
        "cross-site origin": ("https://evil.example", _cookie(ui), ui.csrf),
        "no origin": (None, _cookie(ui), ui.csrf),
        "no csrf": (own, _cookie(ui), None),
        "wrong csrf": (own, _cookie(ui), "x" * 43),
    }
    for what, (origin, cookie, csrf) in cases.items():
        client = WSClient(api.base, _path(uuid, kind, csrf), origin, cookie)
        try:
            assert client.status == 403, f"{kind}: {what} was not refused ({client.status})"
        finally:
            client.close()
    output = api.daemon.output()
    assert "a cross-site request from the origin https://evil.example" in output
    assert "no valid session" in output and "the csrf parameter is missing" in output


@pytest.mark.parametrize("kind", ["serial", "vnc"])
def test_unknown_and_stopped_vms(ui: UIClient, api: Api, zk: ZK, kind: str) -> None:
    for vm, code, reason in (("nosuchvm", 4404, "VM nosuchvm not found"),
                             (_uuid(zk, "db2"), 4409, "VM db2 is not running")):
        client = WSClient(api.base, _path(vm, kind, ui.csrf), api.base, _cookie(ui))
        try:
            client.pump(until=lambda c=client: c.closed is not None)
            assert client.closed is not None, f"{kind} of {vm}: not closed"
            assert (client.closed.code, client.closed.reason) == (code, reason)
        finally:
            client.close()


def test_vnc_without_display(ui: UIClient, api: Api, zk: ZK) -> None:
    uuid = _run(zk, "web2", vnc="")
    client = WSClient(api.base, _path(uuid, "vnc", ui.csrf), api.base, _cookie(ui))
    try:
        client.pump(until=lambda: client.closed is not None)
        assert client.closed is not None and client.closed.code == 4503
        assert client.closed.reason == "VM web2 has no VNC display"
    finally:
        client.close()


def test_vnc_relays_to_the_listener_zookeeper_names(ui: UIClient, api: Api, zk: ZK) -> None:
    """A fake RFB server stands for QEMU's listener: its banner reaches the websocket and what the
    browser sends reaches the server; the client never names a host or port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"RFB 003.008\n")
            data = conn.recv(100)
            got.append(data)
            conn.sendall(b"echo:" + data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    uuid = _run(zk, "web1", vnc=f"127.0.0.1:{server.getsockname()[1]}")
    client = WSClient(api.base, _path(uuid, "vnc", ui.csrf) + "&host=10.0.0.1&port=22", api.base, _cookie(ui))
    try:
        assert (client.status, client.subprotocol) == (101, "binary")
        client.pump(until=lambda: b"RFB 003.008\n" in client.received)
        client.send(b"RFB 003.008\n")
        client.pump(until=lambda: b"echo:RFB 003.008\n" in client.received)
        assert got == [b"RFB 003.008\n"]
        client.pump(until=lambda: client.closed is not None)     # the listener went: 4000, reconnect
        assert client.closed is not None and client.closed.code == 4000
    finally:
        client.close()
        server.close()
        thread.join(5)
