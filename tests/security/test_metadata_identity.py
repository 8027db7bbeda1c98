"""The metadata service only answers a guest about itself (DESIGN D14), on a real ZooKeeper and
the real asyncio server, with the node's neighbour table and bridge FDB scripted.

Attacks: a guest that takes another guest's address (its MAC is not the lease's), a guest that
also takes the other's MAC (its tap does not carry that MAC), a flood of idle connections from
one address (capped, cut off), and a request that would make the service scan every lease and VM.
"""

from __future__ import annotations

import socket
import time
import uuid as uuidlib
from typing import Any

import httpx
import pytest

from pvc.adapters.network import Link
from pvc.core import schema
from pvc.core.records import VMRecord
from pvc.core.zk import ZK
from pvc.lab.zkserver import free_port
from pvc.node.metadata import MetadataService

VNI = 100
MAC_V, MAC_A = "52:54:00:aa:00:01", "52:54:00:aa:00:02"
SECRET = "#cloud-config\npassword: victim-secret\n"


class Host:
    """The neighbour table and bridge FDB of the primary, as the test says they are."""

    def __init__(self) -> None:
        self.neigh: dict[str, str] = {}
        self.fdb: dict[str, str] = {}
        self.taps: dict[str, str] = {"vnet0": "fe:54:00:aa:00:01", "vnet1": "fe:54:00:aa:00:02"}

    def neighbour(self, device: str, ip: str) -> str | None:
        assert device == f"vmbr{VNI}"
        return self.neigh.get(ip)

    def bridge_port(self, bridge: str, mac: str) -> str | None:
        return self.fdb.get(mac)

    def links(self) -> dict[str, Link]:
        found = {n: Link(n, "tun", 1500, m, True, master=f"vmbr{VNI}") for n, m in self.taps.items()}
        found[f"vxlan{VNI}"] = Link(f"vxlan{VNI}", "vxlan", 1500, "02:00:00:00:00:01", True,
                                    master=f"vmbr{VNI}")
        return found


def vm(zk: ZK, name: str, mac: str, profile: str = "") -> VMRecord:
    uuid = str(uuidlib.uuid4())
    xml = (f"<domain type='kvm'><name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>128</memory>"
           f"<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices><interface type='bridge'>"
           f"<mac address='{mac}'/><source bridge='vmbr{VNI}'/><model type='virtio'/></interface>"
           f"</devices></domain>")
    record = VMRecord(uuid=uuid, name=name, xml=xml, profile=profile)
    zk.put(schema.vm(uuid), record.doc())
    return record


@pytest.fixture
def cluster(zk: ZK) -> dict[str, Any]:
    schema.migrate(zk)
    zk.put(schema.userdata("secret"), {"name": "secret", "userdata": SECRET})
    zk.put(schema.profile("victim"), {"name": "victim", "userdata": "secret"})
    victim = vm(zk, "victim", MAC_V, profile="victim")
    vm(zk, "attacker", MAC_A)
    # the victim's lease is on 127.0.0.1: the address the test's requests come from
    zk.put(schema.network_lease(VNI, MAC_V), {"mac_address": MAC_V, "ip4_address": "127.0.0.1"})
    zk.put(schema.network_lease(VNI, MAC_A), {"mac_address": MAC_A, "ip4_address": "10.1.0.66"})
    return {"victim": victim}


def serve(zk: ZK, host: Host, **kwargs: Any) -> MetadataService:
    service = MetadataService(zk, "127.0.0.1", free_port(), host=host, **kwargs)  # type: ignore[arg-type]
    service.start()
    return service


def answer_of(sock: socket.socket) -> bytes:
    """What the server sent before closing (a reset, for data it never read, is no answer)."""
    try:
        return sock.recv(4096)
    except ConnectionResetError:
        return b""


def get(service: MetadataService, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{service.port}{path}", timeout=10)


def test_only_the_guest_at_the_leases_mac_and_port_gets_its_userdata(zk: ZK, cluster: dict[str, Any]) -> None:
    host = Host()
    service = serve(zk, host)
    try:
        # the attacker took the victim's address: the neighbour entry names the attacker's MAC
        host.neigh["127.0.0.1"], host.fdb[MAC_A] = MAC_A, "vnet1"
        for path in ("/latest/user-data", "/latest/meta-data/instance-id", "/latest/meta-data/name"):
            response = get(service, path)
            assert response.status_code == 403 and "victim" not in response.text
            assert "refused" in response.text
        # it also took the victim's MAC, but its tap (vnet1) does not carry that MAC
        host.neigh["127.0.0.1"], host.fdb[MAC_V] = MAC_V, "vnet1"
        response = get(service, "/latest/user-data")
        assert response.status_code == 403 and "secret" not in response.text
        # the MAC arrives through some other port of the bridge (not a tap, not the VXLAN)
        host.fdb[MAC_V] = "eth9"
        assert get(service, "/latest/user-data").status_code == 403
        # the real victim: its MAC, through its own tap (or the VXLAN, from another node)
        for port in ("vnet0", f"vxlan{VNI}"):
            host.fdb[MAC_V] = port
            response = get(service, "/latest/user-data")
            assert response.status_code == 200 and response.text == SECRET
        assert get(service, "/latest/meta-data/instance-id").text == cluster["victim"].uuid
        # nothing was changed by the refusals
        assert zk.get(schema.network_lease(VNI, MAC_V))["ip4_address"] == "127.0.0.1"
    finally:
        service.stop()


def test_requests_use_the_index_not_a_scan(zk: ZK, cluster: dict[str, Any],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    host = Host()
    host.neigh["127.0.0.1"], host.fdb[MAC_V] = MAC_V, "vnet0"
    service = serve(zk, host)
    try:
        assert get(service, "/latest/meta-data/name").text == "victim"       # index built
        listed: list[str] = []
        original = zk.children

        def children(path: str, *args: Any, **kwargs: Any) -> Any:
            listed.append(path)
            return original(path, *args, **kwargs)

        monkeypatch.setattr(zk, "children", children)
        for _ in range(20):
            assert get(service, "/latest/meta-data/name").text == "victim"
        assert listed == []                   # no listing of leases or VMs per request
    finally:
        service.stop()


def test_idle_connections_are_capped_per_source_and_cut_off(zk: ZK, cluster: dict[str, Any]) -> None:
    host = Host()
    host.neigh["127.0.0.1"], host.fdb[MAC_V] = MAC_V, "vnet0"
    service = serve(zk, host, max_per_source=3, request_timeout=1.0)
    idle = []
    try:
        for _ in range(3):                    # slowloris: connect, send nothing
            idle.append(socket.create_connection(("127.0.0.1", service.port), timeout=10))
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", service.port), timeout=10)
        extra.sendall(b"GET /latest/user-data HTTP/1.0\r\n\r\n")
        assert answer_of(extra) == b""        # over the cap: closed without an answer
        extra.close()
        for sock in idle:                     # the idle ones are cut off (no answer either)
            assert answer_of(sock) == b""
            sock.close()
        response = get(service, "/latest/user-data")   # and the guest is served again
        assert response.status_code == 200 and response.text == SECRET
    finally:
        for sock in idle:
            sock.close()
        service.stop()


def test_a_stale_index_never_answers_for_another_vm(zk: ZK, cluster: dict[str, Any]) -> None:
    """The victim is deleted and a new VM made with its MAC (and the same lease): the index
    still names the victim, but the answer is confirmed against ZooKeeper, so the new VM gets
    its own (empty) data, never the victim's."""
    host = Host()
    host.neigh["127.0.0.1"], host.fdb[MAC_V] = MAC_V, "vnet0"
    service = serve(zk, host)
    try:
        assert get(service, "/latest/user-data").text == SECRET             # index built
        zk.delete(schema.vm(cluster["victim"].uuid))
        newcomer = vm(zk, "newcomer", MAC_V)
        seen = []
        deadline = time.monotonic() + 20      # the index is rebuilt at most every few seconds
        while time.monotonic() < deadline:
            seen.append(get(service, "/latest/user-data"))
            if get(service, "/latest/meta-data/instance-id").text == newcomer.uuid:
                break
            time.sleep(0.2)
        assert get(service, "/latest/meta-data/instance-id").text == newcomer.uuid
        assert all(r.status_code == 404 and "secret" not in r.text for r in seen)
        # the lease moves to another address: the old address answers nothing
        zk.put(schema.network_lease(VNI, MAC_V), {"mac_address": MAC_V, "ip4_address": "10.1.0.77"})
        assert get(service, "/latest/meta-data/name").status_code == 404
    finally:
        service.stop()
