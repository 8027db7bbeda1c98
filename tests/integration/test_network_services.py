"""The primary's network helpers over a real ZooKeeper: dnsmasq's lease hook and the metadata
service's answers (lease -> MAC -> VM -> profile -> userdata)."""

from __future__ import annotations

import json
import uuid as uuidlib
from pathlib import Path

import httpx

from pvc.core import schema
from pvc.core.records import VMRecord
from pvc.core.zk import ZK
from pvc.lab.zkserver import free_port
from pvc.node import dnsmasq_hook
from pvc.node.metadata import MetadataService, answer

MAC = "52:54:00:12:34:56"


def vm_xml(name: str, uuid: str, mac: str) -> str:
    return f"""<domain type='kvm'><name>{name}</name><uuid>{uuid}</uuid>
  <memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>
  <devices><interface type='bridge'><mac address='{mac}'/><source bridge='vmbr100'/>
  <model type='virtio'/></interface></devices></domain>"""


def put_vm(zk: ZK, name: str, mac: str, profile: str = "") -> VMRecord:
    uuid = str(uuidlib.uuid4())
    record = VMRecord(uuid=uuid, name=name, xml=vm_xml(name, uuid, mac), profile=profile)
    zk.put(schema.vm(uuid), record.doc())
    return record


def test_lease_hook_records_and_forgets_leases(zk: ZK, tmp_path: Path, config_factory, monkeypatch) -> None:
    schema.migrate(zk)
    config = config_factory("hv1")
    for key, value in {"PVC_CONFIG_FILE": str(config), "PVC_NETWORK_VNI": "100",
                       "DNSMASQ_LEASE_EXPIRES": "1900000000", "DNSMASQ_CLIENT_ID": "01:52:54"}.items():
        monkeypatch.setenv(key, value)
    assert dnsmasq_hook.main(["add", MAC.upper(), "10.1.0.100", "guest1"]) == 0
    lease = zk.get(schema.network_lease(100, MAC))
    assert lease["ip4_address"] == "10.1.0.100" and lease["hostname"] == "guest1"
    assert lease["expiry"] == 1900000000 and lease["clientid"] == "01:52:54"
    assert dnsmasq_hook.main(["old", MAC, "10.1.0.101"]) == 0             # a renewal may move it
    assert zk.get(schema.network_lease(100, MAC))["ip4_address"] == "10.1.0.101"
    assert dnsmasq_hook.main(["del", MAC, "10.1.0.101"]) == 0
    assert not zk.exists(schema.network_lease(100, MAC))
    assert dnsmasq_hook.main(["tftp", "1", "x"]) == 0                     # ignored events
    assert dnsmasq_hook.main(["add", "00:11", "10.1.0.7"]) == 0           # not an Ethernet MAC


def test_lease_hook_init_replays_the_snapshot(tmp_path: Path, monkeypatch, capsys) -> None:
    snapshot = tmp_path / "leases.init"
    snapshot.write_text(f"1900000000 {MAC} 10.1.0.100 guest1 *\n")
    monkeypatch.setenv("PVC_LEASE_SNAPSHOT", str(snapshot))
    assert dnsmasq_hook.main(["init"]) == 0
    assert capsys.readouterr().out == f"1900000000 {MAC} 10.1.0.100 guest1 *\n"


def test_metadata_answers_for_the_vm_behind_the_address(zk: ZK) -> None:
    schema.migrate(zk)
    zk.put(schema.userdata("web"), {"name": "web", "userdata": "#cloud-config\nhostname: web1\n"})
    zk.put(schema.profile("webprof"), {"name": "webprof", "userdata": "web"})
    record = put_vm(zk, "web1", MAC, profile="webprof")
    other = put_vm(zk, "db1", "52:54:00:00:00:99")
    zk.put(schema.network_lease(100, MAC), {"mac_address": MAC, "ip4_address": "10.1.0.100"})
    zk.put(schema.network_reservation(100, "52:54:00:00:00:99"),
           {"mac_address": "52:54:00:00:00:99", "ip4_address": "10.1.0.50", "hostname": "db1"})

    status, _, body = answer(zk, "10.1.0.100", "/")
    assert status == 209 and json.loads(body)["message"].startswith("PVC Provisioner Metadata API")
    assert answer(zk, "10.1.0.100", "/latest/meta-data/")[2] == "instance-id\nname\nprofile"
    assert answer(zk, "10.1.0.100", "/latest/meta-data/instance-id")[2] == record.uuid
    assert answer(zk, "10.1.0.100", "/2009-04-04/meta-data/name")[2] == "web1"
    assert answer(zk, "10.1.0.100", "/latest/meta-data/profile")[2] == "webprof"
    assert answer(zk, "10.1.0.100", "/latest/user-data")[2] == "#cloud-config\nhostname: web1\n"
    # a reservation also identifies the VM; no profile means no userdata (a clear 404)
    assert answer(zk, "10.1.0.50", "/latest/meta-data/instance-id")[2] == other.uuid
    status, _, body = answer(zk, "10.1.0.50", "/latest/user-data")
    assert status == 404 and "db1" in body
    status, _, body = answer(zk, "10.9.9.9", "/latest/meta-data/name")
    assert status == 404 and "10.9.9.9" in body
    assert answer(zk, "10.1.0.100", "/latest/meta-data/nothing")[0] == 404


def test_metadata_service_serves_http(zk: ZK) -> None:
    schema.migrate(zk)
    put_vm(zk, "web1", MAC)
    zk.put(schema.network_lease(100, MAC), {"mac_address": MAC, "ip4_address": "127.0.0.1"})
    service = MetadataService(zk, "127.0.0.1", free_port())
    service.start()
    service.start()                                       # idempotent (every primary pass)
    try:
        response = httpx.get(f"http://127.0.0.1:{service.port}/latest/meta-data/name", timeout=5)
        assert response.status_code == 200 and response.text == "web1"
    finally:
        service.stop()
    assert not service.running
