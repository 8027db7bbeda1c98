"""Wire compatibility with upstream PVC 1.0.3: each test pins one shape upstream's client relies on.

Sources: upstream PVC 1.0.3's API document (swagger 2.0) and its client's formatting. The
API runs in-process (create_app + TestClient) against a real ZooKeeper; storage routes use the
FakeStorage. Upstream's CLI formats many fields with a width (`"{x: <8}".format(value)`), which
raises on None: `formats()` does the same to every field it names.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pvc.adapters.ceph.fake import FakeStorage
from pvc.api.app import create_app
from pvc.cluster import faults, state
from pvc.core import domainxml, schema
from pvc.core.config import load_config
from pvc.core.records import Memory, VCpu, VMStatus
from pvc.core.zk import ZK
from pvc.node.storage import health_faults
from tests.conftest import API_TOKEN
from tests.integration.apihelp import node_record, ok, register_nodes, storage_client

BASE = "/api/v1"
FAULT_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


@pytest.fixture
def client(config_factory: Callable[..., Path], zk: ZK) -> Iterator[TestClient]:
    app = create_app(load_config(str(config_factory())), zk)
    with TestClient(app, headers={"X-Api-Key": API_TOKEN}) as test_client:
        yield test_client


def formats(item: dict[str, Any], *paths: str) -> None:
    """Format each field as upstream's client does (with a width): None would raise TypeError."""
    for path in paths:
        value: Any = item
        for part in path.split("."):
            value = value[part]
        assert value is not None, f"{path} is null"
        f"{value: <12}"


def three_nodes(zk: ZK) -> None:
    """hv1..hv3 ready with 8 GiB; hv2 has the most free memory."""
    free = {"hv1": 4000, "hv2": 6000, "hv3": 5000}
    zk.put(schema.PRIMARY_NODE, "hv1")
    register_nodes(zk, None, *[
        node_record(name, memory=Memory(total=8192, free=free[name], used=8192 - free[name]), cpu_count=8)
        for name in free])


def vm_xml(name: str, vcpus: int = 1, vnc: bool = False) -> str:
    graphics = "<graphics type='vnc' port='5901' listen='0.0.0.0'/>" if vnc else ""
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <uuid>{uuidlib.uuid4()}</uuid>
  <memory unit='MiB'>512</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='vmbr100'/>
      <model type='virtio'/></interface>
    <serial type='pty'/>
    {graphics}
  </devices>
</domain>"""


def vm_item(client: TestClient, name: str) -> dict[str, Any]:
    body = ok(client.get(f"{BASE}/vm/{name}"))
    assert isinstance(body, list) and len(body) == 1
    return body[0]


# -- 1. networks: upstream's types for every field its client formats ---------------------------------

def test_network_items_have_upstream_wire_types(client: TestClient) -> None:
    ok(client.post(f"{BASE}/network", params={"vni": 100, "description": "vlan100", "nettype": "bridged",
                                              "mtu": ""}))
    ok(client.post(f"{BASE}/network", params={
        "vni": 10001, "description": "managed1", "nettype": "managed", "mtu": "1400",
        "ip4_network": "10.1.0.0/24", "ip4_gateway": "10.1.0.1", "dhcp4": "true",
        "dhcp4_start": "10.1.0.100", "dhcp4_end": "10.1.0.199"}))
    bridged, managed = ok(client.get(f"{BASE}/network"))
    # upstream sends text for the MTU, "" when unset (its `network list` crashed on our null)
    assert bridged["mtu"] == "" and managed["mtu"] == "1400"
    # its client tests `network != "None"` and `dhcp_flag == "True"`, as upstream stores them
    assert bridged["ip4"] == {"network": "None", "gateway": "None", "dhcp_flag": "False",
                              "dhcp_start": "None", "dhcp_end": "None"}
    assert bridged["ip6"] == {"network": "None", "gateway": "None", "dhcp_flag": "False"}
    assert managed["ip4"] == {"network": "10.1.0.0/24", "gateway": "10.1.0.1", "dhcp_flag": "True",
                              "dhcp_start": "10.1.0.100", "dhcp_end": "10.1.0.199"}
    assert isinstance(managed["vni"], int) and bridged["domain"] == ""
    for item in (bridged, managed, ok(client.get(f"{BASE}/network/100"))[0]):
        formats(item, "vni", "description", "type", "mtu", "domain", "ip4.network", "ip4.gateway",
                "ip4.dhcp_flag", "ip4.dhcp_start", "ip4.dhcp_end", "ip6.network", "ip6.gateway",
                "ip6.dhcp_flag")
        assert isinstance(item["name_servers"], list)


# -- 2. pools: numbers before the first statistics pass -------------------------------------------------

def test_pool_statistics_are_numbers_right_after_add(config_factory: Callable[..., Path], zk: ZK) -> None:
    with storage_client(config_factory, zk, FakeStorage(), pool=True) as client:
        # as right after `pool add`, before the primary's statistics pass
        zk.update(schema.pool("vms"), lambda d: {**d, "stats": {"id": None, "used_percent": None}})
        for item in (ok(client.get(f"{BASE}/storage/ceph/pool"))[0],
                     ok(client.get(f"{BASE}/storage/ceph/pool/vms"))[0]):
            stats = item["stats"]
            for key in ("id", "stored_bytes", "free_bytes", "used_bytes", "num_objects", "num_object_clones",
                        "num_object_copies", "num_objects_missing_on_primary", "num_objects_unfound",
                        "num_objects_degraded", "read_ops", "read_bytes", "write_ops", "write_bytes"):
                assert type(stats[key]) is int, key
                int(stats[key])                    # what upstream's client does with them
            assert isinstance(stats["used_percent"], int | float)
            float(stats["used_percent"])
            assert isinstance(item["pgs"], int) and isinstance(item["volume_count"], int)
            formats(item, "name", "tier", "pgs", "volume_count")
        zk.update(schema.pool("vms"), lambda d: {**d, "stats": {"id": 7, "stored_bytes": 1024}})
        stats = ok(client.get(f"{BASE}/storage/ceph/pool/vms"))[0]["stats"]
        assert stats["id"] == 7 and stats["stored_bytes"] == 1024 and stats["free_bytes"] == 0
        # a volume whose `rbd info` was not read yet: what the client formats is still there
        ok(client.post(f"{BASE}/storage/ceph/volume", params={"pool": "vms", "volume": "v1", "size": "1G"}))
        zk.update(schema.volume("vms", "v1"), lambda d: {**d, "stats": {}})
        volume = ok(client.get(f"{BASE}/storage/ceph/volume"))[0]
        assert volume["stats"] == {"size": "", "objects": 0, "order": 0, "format": 0, "features": []}
        formats(volume, "name", "pool", "stats.size", "stats.objects", "stats.order", "stats.format")


def test_provisioner_template_items_have_every_key_upstream_formats(config_factory: Callable[..., Path],
                                                                    zk: ZK) -> None:
    """Upstream's client str()s these columns (null is fine) but indexes every key (absent is not)."""
    with storage_client(config_factory, zk, FakeStorage(), pool=True) as client:
        ok(client.post(f"{BASE}/provisioner/template/system", params={
            "name": "sys1", "vcpus": 2, "vram": 1024, "serial": "true", "vnc": "false"}))
        ok(client.post(f"{BASE}/provisioner/template/network", params={"name": "net1"}))
        ok(client.post(f"{BASE}/provisioner/template/storage", params={"name": "sto1"}))
        ok(client.post(f"{BASE}/provisioner/template/storage/sto1/disk",
                       params={"disk_id": "sda", "pool": "vms", "disk_size": 8}))
        system = ok(client.get(f"{BASE}/provisioner/template/system"))[0]
        assert {"name", "id", "vcpu_count", "vram_mb", "serial", "vnc", "vnc_bind", "node_limit",
                "node_selector", "node_autostart", "migration_method"} <= set(system)
        network = ok(client.get(f"{BASE}/provisioner/template/network"))[0]
        assert {"name", "id", "mac_template", "networks"} <= set(network)
        disk = ok(client.get(f"{BASE}/provisioner/template/storage"))[0]["disks"][0]
        assert {"disk_id", "pool", "source_volume", "disk_size_gb", "filesystem", "filesystem_args",
                "mountpoint"} <= set(disk)


# -- 3. the provisioner's XML carries <cpu><topology> ---------------------------------------------------

def test_provisioner_xml_has_a_cpu_topology(client: TestClient, zk: ZK) -> None:
    from types import SimpleNamespace

    from pvc.worker.provisioner import helpers

    builder = SimpleNamespace(
        vm_name="prov1", vm_uuid=str(uuidlib.uuid4()), vm_id=0, vm_profile="p",
        vm_data={"system_details": {"vram_mb": 512, "vcpu_count": 4, "vnc": False},
                 "volumes": [], "networks": [{"eth_bridge": "vmbr100"}], "mac_template": None})
    xml = helpers.domain_xml(builder)
    domainxml.check_domain(xml)                          # the domain XML policy lets it pass
    assert domainxml.summary(domainxml.parse(xml))["vcpu_topology"] == "1/4/1"
    three_nodes(zk)
    ok(client.post(f"{BASE}/vm", data={"xml": xml}))
    item = vm_item(client, "prov1")
    assert item["vcpu"] == 4 and item["vcpu_topology"] == "1/4/1"   # what `pvc vm vcpu get` reads


# -- 4. GET /vm: null selector and method, VNC only from the running VM ---------------------------------

def test_vm_defaults_and_vnc_as_upstream(client: TestClient, zk: ZK) -> None:
    three_nodes(zk)
    ok(client.post(f"{BASE}/vm", data={"xml": vm_xml("v1", vnc=True)}))
    item = vm_item(client, "v1")
    assert item["node_selector"] is None and item["migration_method"] is None
    # the stored XML has a VNC <graphics>, but the VM does not run: nothing to connect to
    assert item["vnc"] == {"listen": None, "port": None}
    record = zk.get(schema.vm(item["uuid"]))
    assert record["migration_method"] == "none" and record["node_selector"] == "none"
    # "none" places the VM by the cluster's default selector (mem: the most free memory)
    assert item["node"] == "hv2"
    assert ok(client.get(f"{BASE}/vm/v1/meta"))["migration_method"] == "none"
    # the node writes listen:port from the running VM's live XML
    zk.put(schema.vm_status(item["uuid"]), VMStatus(node="hv2", running=True, vnc="10.0.0.2:5900").doc())
    assert vm_item(client, "v1")["vnc"] == {"listen": "10.0.0.2", "port": "5900"}
    listed = next(v for v in ok(client.get(f"{BASE}/vm")) if v["name"] == "v1")
    assert listed["vnc"] == {"listen": "10.0.0.2", "port": "5900"}
    # a stale address of a VM that no longer runs is not shown
    zk.put(schema.vm_status(item["uuid"]), VMStatus(node="hv2", running=False, vnc="10.0.0.2:5900").doc())
    assert vm_item(client, "v1")["vnc"] == {"listen": None, "port": None}
    ok(client.post(f"{BASE}/vm", data={"xml": vm_xml("v2")},
                   params={"migration_method": "live", "selector": "vcpus"}))
    chosen = vm_item(client, "v2")
    assert chosen["migration_method"] == "live" and chosen["node_selector"] == "vcpus"
    ok(client.post(f"{BASE}/vm/v2/meta", params={"migration_method": "none", "selector": "none"}))
    reset = vm_item(client, "v2")
    assert reset["migration_method"] is None and reset["node_selector"] is None


# -- 5. GET /status: totals over all nodes, KiB, upstream's messages and state lists --------------------

def test_status_as_upstream(client: TestClient, zk: ZK) -> None:
    zk.put(schema.PRIMARY_NODE, "hv1")
    register_nodes(zk, None,
                   node_record("hv1", coordinator_state="primary", cpu_count=8, load=2.0,
                               memory=Memory(total=8000, used=2000, free=6000, allocated=1000),
                               vcpu=VCpu(total=8, allocated=2),
                               health=90, health_details=[
                                   {"name": "disk", "health_delta": 10, "message": "sda failing"},
                                   {"name": "load", "health_delta": 0, "message": "OK"}]),
                   node_record("hv2", daemon_state="dead", cpu_count=4, load=0.0,
                               memory=Memory(total=4000, used=0, free=4000)),
                   node_record("hv3", daemon_state="shutdown", cpu_count=4,
                               memory=Memory(total=4000, used=1000, free=3000)))
    for osd_id, (kb, used, util) in enumerate([(1000, 100, 10.0), (3000, 600, 20.0)]):
        zk.put(schema.osd(osd_id), {"id": str(osd_id), "node": "hv1", "stats": {
            "up": 1, "in": 1 if osd_id else 0, "kb": kb, "kb_used": used, "kb_avail": kb - used,
            "utilization": util}})
    faults.raise_fault(zk, "VM_FAILED_a", 10, "VM a failed")
    faults.raise_fault(zk, "DEAD_NODE_hv2", 50, "Node hv2 is dead")
    faults.raise_fault(zk, "NETWORK_NFT_hv1", 10, "Node hv1: nft")
    zk.update(schema.fault("NETWORK_NFT_hv1"), lambda d: {**d, "last_reported": "2099-01-01 00:00:00"})
    status = ok(client.get(f"{BASE}/status"))
    resources = status["resources"]
    assert resources["memory"]["total"] == 16000 and resources["memory"]["used"] == 3000
    assert resources["cpu"]["total"] == 16 and resources["cpu"]["allocated"] == 2
    assert resources["disk"] == {"total": 4000, "used": 700, "free": 3300, "utilization": 15.0}
    # shutdown,<domain> is no upstream combination: counted in the total only
    assert status["nodes"] == {"total": 3, "run,ready": 1, "dead,ready": 1}
    assert status["osds"] == {"total": 2, "up,in": 1, "up,out": 1}
    assert status["node_health"]["hv1"] == {"health": 90, "messages": ["'disk': sda failing"]}
    assert [m["id"] for m in status["cluster_health"]["messages"]] == \
        ["DEAD_NODE_hv2", "NETWORK_NFT_hv1", "VM_FAILED_a"]
    assert status["cluster_health"]["health"] == 30


def test_status_counts_only_upstreams_vm_states(client: TestClient, zk: ZK) -> None:
    three_nodes(zk)
    for name in ("a", "b"):
        ok(client.post(f"{BASE}/vm", data={"xml": vm_xml(name)}))
    uuid = vm_item(client, "b")["uuid"]
    zk.update(schema.vm(uuid), lambda d: {**d, "state": "migrate-live"})
    assert ok(client.get(f"{BASE}/status"))["vms"] == {"total": 2, "stop": 1}


# -- 6. faults: upstream's names and times; none raised in maintenance ---------------------------------

def test_fault_ids_are_names_and_maintenance_raises_none(client: TestClient, zk: ZK) -> None:
    dead = faults.raise_fault(zk, "DEAD_NODE_hv3", 50, "Node hv3 is dead")
    assert dead is not None and dead.id == "DEAD_NODE_hv3"
    assert FAULT_TIME.match(dead.first_reported) and FAULT_TIME.match(dead.last_reported)
    item = ok(client.get(f"{BASE}/faults/DEAD_NODE_hv3"))[0]
    assert item["id"] == "DEAD_NODE_hv3" and item["status"] == "new"
    ok(client.put(f"{BASE}/faults/DEAD_NODE_hv3"))
    assert FAULT_TIME.match(ok(client.get(f"{BASE}/faults/DEAD_NODE_hv3"))[0]["acknowledged_at"])
    state.set_maintenance(zk, True)
    assert faults.raise_fault(zk, "VM_FAILED_web", 10, "VM web failed") is None
    assert not zk.exists(schema.fault("VM_FAILED_web"))
    again = faults.raise_fault(zk, "DEAD_NODE_hv3", 50, "Node hv3 is still dead")
    assert again is not None and again.message == "Node hv3 is still dead"   # existing ones: updated
    state.set_maintenance(zk, False)
    assert faults.raise_fault(zk, "VM_FAILED_web", 10, "VM web failed") is not None
    faults.clear_fault(zk, "VM_FAILED_web")                           # ours: the condition ended
    assert [f["id"] for f in ok(client.get(f"{BASE}/faults"))] == ["DEAD_NODE_hv3"]
    # a name that cannot stand in a URL is made into one
    assert faults.fault_id("NETWORK_DOC/1_hv1") == "NETWORK_DOC_1_hv1"


def test_ceph_health_faults_are_named_per_check() -> None:
    assert [name for name, _delta, _text in health_faults({"status": "HEALTH_ERR", "checks": {
        "OSDMAP_FLAGS": {"severity": "HEALTH_WARN", "summary": {"message": "noout flag(s) set"}},
        "PG_DAMAGED": {"severity": "HEALTH_ERR", "summary": {"message": "1 pg inconsistent"}}}})] == \
        ["CEPH_WARN_OSDMAP_FLAGS", "CEPH_ERR_PG_DAMAGED"]


# -- 7. filters and argument errors ---------------------------------------------------------------------

def test_unknown_node_state_filter_is_404(client: TestClient, zk: ZK) -> None:
    three_nodes(zk)
    response = client.get(f"{BASE}/node", params={"daemon_state": "sleeping"})
    assert response.status_code == 404 and response.json() == {"message": "Node not found."}
    assert len(ok(client.get(f"{BASE}/node", params={"daemon_state": "run"}))) == 3


def test_argument_errors_are_keyed_by_argument(client: TestClient, zk: ZK) -> None:
    three_nodes(zk)
    missing = client.post(f"{BASE}/vm")
    assert missing.status_code == 400
    message = missing.json()["message"]
    assert isinstance(message, dict) and set(message) == {"xml"} and isinstance(message["xml"], str)
    choice = client.post(f"{BASE}/vm", data={"xml": vm_xml("e1")}, params={"migration_method": "fast"})
    assert choice.status_code == 400 and set(choice.json()["message"]) == {"migration_method"}
    assert "fast" in choice.json()["message"]["migration_method"]
    assert client.get(f"{BASE}/vm/e1").status_code == 404                       # nothing was defined
    # a refusal of the operation itself stays a text message
    ok(client.post(f"{BASE}/vm", data={"xml": vm_xml("e2")}))
    duplicate = client.post(f"{BASE}/vm", data={"xml": vm_xml("e2")})
    assert duplicate.status_code == 400 and isinstance(duplicate.json()["message"], str)
    # the OpenAPI document says so
    schema_doc = ok(client.get(f"{BASE}/openapi.json"))["components"]["schemas"]["Message"]
    branches = schema_doc["properties"]["message"]["anyOf"]
    assert {"type": "string"} in branches and any(b.get("type") == "object" for b in branches)


def test_provisioner_root_is_404(client: TestClient) -> None:
    response = client.get(f"{BASE}/provisioner")
    assert response.status_code == 404 and isinstance(response.json()["message"], str)


# -- 8. /vm/autobackup and /vm/automirror are not taken for VM definitions ------------------------------

def test_autobackup_and_automirror_are_not_vm_definitions(client: TestClient, zk: ZK) -> None:
    three_nodes(zk)
    for route in ("autobackup", "automirror"):
        response = client.post(f"{BASE}/vm/{route}", data={"xml": vm_xml(route)})
        assert response.status_code == 404, response.text
        assert "is not configured on this cluster" in response.json()["message"]   # no such section
        assert route in response.json()["message"] and "xml" not in response.json()["message"]
        assert client.get(f"{BASE}/vm/{route}").status_code == 404             # no VM was defined
        assert client.options(f"{BASE}/vm/{route}").headers["allow"] == "POST"  # its own resource
    # as upstream, a VM may still carry such a name (defined through POST /vm)
    ok(client.post(f"{BASE}/vm", data={"xml": vm_xml("autobackup")}))
    assert vm_item(client, "autobackup")["name"] == "autobackup"
