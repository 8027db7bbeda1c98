"""Provisioner data routes against a real ZooKeeper (create_app + TestClient, a FakeStorage for Ceph).

Every route of pvc-facts §8.3 "Provisioner" except create, job status and OVA upload is exercised.
Every refusal is a 400/404 whose message names the problem and leaves ZooKeeper exactly as it was
(a dump of the whole cluster tree before and after). Removing what a profile uses is refused,
naming the profile. The last test runs upstream's acceptance sequence for the provisioner data
(pvc-facts §10 steps 2 and 7) with the `pvc` CLI as a subprocess against a running pvcapid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pvc.adapters.ceph.fake import FakeStorage
from pvc.cluster import networks as nets
from pvc.cluster import provisioner as prov
from pvc.cluster import state
from pvc.core import schema
from pvc.core.errors import InvalidInput, NotFound
from pvc.core.zk import ZK
from tests.conftest import Api
from tests.integration.apihelp import ok, refused, storage_client
from tests.integration.test_cli_api import Pvc

BASE = "/api/v1/provisioner"
SYS = f"{BASE}/template/system"
PROVISIONER_PATHS = {
    "/provisioner": {"get"},
    "/provisioner/template": {"get"},
    "/provisioner/template/system": {"get", "post"},
    "/provisioner/template/system/{template}": {"get", "post", "put", "delete"},
    "/provisioner/template/network": {"get", "post"},
    "/provisioner/template/network/{template}": {"get", "post", "delete"},
    "/provisioner/template/network/{template}/net": {"get", "post"},
    "/provisioner/template/network/{template}/net/{vni}": {"get", "post", "delete"},
    "/provisioner/template/storage": {"get", "post"},
    "/provisioner/template/storage/{template}": {"get", "post", "delete"},
    "/provisioner/template/storage/{template}/disk": {"get", "post"},
    "/provisioner/template/storage/{template}/disk/{disk_id}": {"get", "post", "delete"},
    "/provisioner/userdata": {"get", "post"},
    "/provisioner/userdata/{userdata}": {"get", "post", "put", "delete"},
    "/provisioner/script": {"get", "post"},
    "/provisioner/script/{script}": {"get", "post", "put", "delete"},
    "/provisioner/profile": {"get", "post"},
    "/provisioner/profile/{profile}": {"get", "post", "put", "delete"},
    "/provisioner/ova": {"get", "post"},
    "/provisioner/ova/{ova}": {"get", "post", "delete"},
}
SCRIPT = '''#!/usr/bin/env python3
from pvcapid.vmbuilder import VMBuilder


class VMBuilderScript(VMBuilder):
    def create(self):
        return "<domain/>"
'''
CLOUD_CONFIG = "#cloud-config\nusers:\n  - name: admin\n    ssh_authorized_keys: [ssh-ed25519 AAAA]\n"
MULTIPART = """Content-Type: multipart/mixed; boundary="==BOUNDARY=="
MIME-Version: 1.0

--==BOUNDARY==
Content-Type: text/cloud-config; charset="us-ascii"
MIME-Version: 1.0

#cloud-config
hostname: test
--==BOUNDARY==
Content-Type: text/x-shellscript; charset="us-ascii"
MIME-Version: 1.0

#!/bin/sh
echo hello
--==BOUNDARY==--
"""
SYSTEM = {"name": "system-test", "vcpus": 1, "vram": 1024, "serial": "true", "vnc": "true",
          "vnc_bind": "0.0.0.0", "node_limit": "hv1", "node_selector": "mem", "node_autostart": "true",
          "migration_method": "live"}


@pytest.fixture
def fake() -> FakeStorage:
    return FakeStorage()


@pytest.fixture
def client(config_factory: Callable[..., Path], zk: ZK, fake: FakeStorage) -> Iterator[TestClient]:
    with storage_client(config_factory, zk, fake, pool=True) as test_client:
        nets.add_network(zk, 10000, "net10000", "managed")
        nets.add_network(zk, 10001, "net10001", "managed")
        prov.ensure_empty_userdata(zk)
        yield test_client


def dump(zk: ZK) -> dict[str, bytes]:
    """Every znode of the cluster (to prove that a refusal changed nothing)."""
    return {path: raw for path, (raw, _ephemeral) in zk.walk("/").items()}


def build_profile(client: TestClient) -> None:
    """upstream's acceptance set: system-test, network-test (10000), storage-test (sda), script-test, test."""
    ok(client.post(f"{BASE}/template/system", params=SYSTEM))
    ok(client.post(f"{BASE}/template/network", params={"name": "network-test"}))
    ok(client.post(f"{BASE}/template/network/network-test/net", params={"vni": 10000}))
    ok(client.post(f"{BASE}/template/storage", params={"name": "storage-test"}))
    ok(client.post(f"{BASE}/template/storage/storage-test/disk",
                   params={"disk_id": "sda", "pool": "vms", "disk_size": 8, "filesystem": "ext4",
                           "mountpoint": "/"}))
    ok(client.post(f"{BASE}/script", params={"name": "script-test"}, data={"data": SCRIPT}))
    ok(client.post(f"{BASE}/profile", params={
        "name": "test", "profile_type": "provisioner", "system_template": "system-test",
        "network_template": "network-test", "storage_template": "storage-test", "userdata": "empty",
        "script": "script-test", "arg": ["deb_release=bullseye"]}))


# -- OpenAPI ---------------------------------------------------------------------------------------------

def test_openapi_documents_every_provisioner_route(client: TestClient) -> None:
    paths = ok(client.get("/api/v1/openapi.json"))["paths"]
    for path, methods in PROVISIONER_PATHS.items():
        assert set(paths["/api/v1" + path]) == methods, path
    add = paths["/api/v1/provisioner/template/system"]["post"]
    assert add["x-pvc-required-inputs"] == ["vcpus", "vram", "serial", "vnc", "name"]
    assert {"200", "400", "401", "503"} <= set(add["responses"])
    assert {"400", "404"} <= set(paths["/api/v1/provisioner/script/{script}"]["delete"]["responses"])
    disk_add = paths["/api/v1/provisioner/template/storage/{template}/disk"]["post"]
    disk = {p["name"] for p in disk_add["parameters"]}
    assert {"disk_id", "pool", "source_volume", "disk_size", "filesystem", "filesystem_arg",
            "mountpoint"} <= disk
    profile = {p["name"] for p in paths["/api/v1/provisioner/profile"]["post"]["parameters"]}
    assert {"name", "profile_type", "system_template", "network_template", "storage_template", "userdata",
            "script", "ova", "arg"} <= profile


# -- system templates --------------------------------------------------------------------------------------

def test_system_template_lifecycle(client: TestClient, zk: ZK) -> None:
    refused(client.get(f"{BASE}/template/system"), 404, "No system templates found.")
    assert refused(client.get(BASE), 404, "not found")           # as upstream: abort(404)
    assert ok(client.post(f"{BASE}/template/system", params=SYSTEM)) == {
        "message": "Added new system template 'system-test'."}
    # the element route, with form fields as upstream's reqparse also reads them
    ok(client.post(f"{BASE}/template/system/ext-lg", data={"vcpus": "4", "vram": "8192", "serial": "False",
                                                           "vnc": "False"}))
    items = ok(client.get(f"{BASE}/template/system"))
    assert [t["name"] for t in items] == ["ext-lg", "system-test"]
    ext, test = items
    assert test == {"id": test["id"], "name": "system-test", "vcpu_count": 1, "vram_mb": 1024, "serial": True,
                    "vnc": True, "vnc_bind": "0.0.0.0", "node_limit": "hv1", "node_selector": "mem",
                    "node_autostart": True, "migration_method": "live", "migration_max_downtime": 300,
                    "ova": None}
    assert isinstance(test["id"], int) and ext["id"] != test["id"]
    assert ext["node_limit"] is None and ext["migration_method"] is None and ext["vnc_bind"] is None
    assert zk.get(schema.system_template("system-test"))["node_limit"] == ["hv1"]
    assert ok(client.get(f"{BASE}/template/system/ext-lg")) == [ext]
    refused(client.get(f"{SYS}/nothing"), 404, "The system template 'nothing' does not exist.")
    assert [t["name"] for t in ok(client.get(SYS, params={"limit": "^ext"}))] == ["ext-lg"]
    refused(client.get(SYS, params={"limit": "^zzz"}), 404, "No system templates found.")

    assert ok(client.put(f"{BASE}/template/system/ext-lg", params={
        "vcpus": 8, "node_limit": "hv1,hv2", "migration_max_downtime": 500, "node_selector": "none"})) == {
        "message": "Modified system template 'ext-lg'."}
    ext2 = ok(client.get(f"{BASE}/template/system/ext-lg"))[0]
    assert (ext2["vcpu_count"], ext2["vram_mb"], ext2["node_limit"], ext2["migration_max_downtime"]) == \
        (8, 8192, "hv1,hv2", 500)
    ok(client.put(f"{BASE}/template/system/ext-lg", params={"node_limit": ""}))
    assert ok(client.get(f"{BASE}/template/system/ext-lg"))[0]["node_limit"] is None
    before = dump(zk)
    refused(client.put(f"{BASE}/template/system/ext-lg", params={"vram": 1}), 400, "vram")
    refused(client.put(f"{BASE}/template/system/ext-lg", params={"serial": "maybe"}), 400, "serial")
    refused(client.put(f"{BASE}/template/system/nothing", params={"vcpus": 2}), 404, "nothing")
    refused(client.post(f"{BASE}/template/system", params={**SYSTEM, "name": "ext-lg"}), 400,
            "name: the system template 'ext-lg' already exists.")
    assert dump(zk) == before
    assert ok(client.delete(f"{SYS}/ext-lg")) == {"message": "Removed system template 'ext-lg'."}
    refused(client.delete(f"{BASE}/template/system/ext-lg"), 404, "does not exist")


@pytest.mark.parametrize(("changes", "words"), [
    ({"name": "bad name"}, ["name: 'bad name' is not a valid name"]),
    ({"name": ""}, ["name"]),
    ({"vcpus": "x"}, ["vcpus: 'x' is not an integer"]),
    ({"vcpus": 0}, ["vcpus", "at least 1"]),
    ({"vcpus": 100000}, ["vcpus", "at most"]),
    ({"vram": "1G"}, ["vram: '1G' is not an integer"]),
    ({"vram": 8}, ["vram", "at least 32"]),
    ({"serial": "sometimes"}, ["serial: 'sometimes' is not a boolean"]),
    ({"vnc": None}, ["vnc: required"]),
    ({"vnc_bind": "everywhere"}, ["vnc_bind: 'everywhere' is not an IP address"]),
    ({"node_limit": "hv1,bad node"}, ["node_limit: 'bad node' is not a valid name"]),
    ({"node_selector": "random"}, ["node_selector: 'random' is not one of mem"]),
    ({"node_autostart": "2"}, ["node_autostart"]),
    ({"migration_method": "teleport"}, ["migration_method: 'teleport' is not one of live, shutdown, none"]),
    ({"migration_max_downtime": 0}, ["migration_max_downtime", "at least 1"]),
    ({"migration_max_downtime": "soon"}, ["migration_max_downtime: 'soon' is not an integer"]),
])
def test_system_template_refusals_change_nothing(client: TestClient, zk: ZK, changes: dict[str, Any],
                                                 words: list[str]) -> None:
    before = dump(zk)
    params = {k: v for k, v in {**SYSTEM, **changes}.items() if v is not None}
    refused(client.post(f"{BASE}/template/system", params=params), 400, *words)
    assert dump(zk) == before


# -- network templates -------------------------------------------------------------------------------------

def test_network_template_lifecycle(client: TestClient, zk: ZK) -> None:
    refused(client.get(f"{BASE}/template/network"), 404, "No network templates found.")
    assert ok(client.post(f"{BASE}/template/network", params={"name": "ext-11X"})) == {
        "message": "Added new network template 'ext-11X'."}
    ok(client.post(f"{BASE}/template/network/fixed-mac",
                   data={"mac_template": "{prefix}:ff:ff:{vmid}{netid}"}))
    refused(client.get(f"{BASE}/template/network/ext-11X/net"), 404, "No network template networks found.")
    assert ok(client.post(f"{BASE}/template/network/ext-11X/net", params={"vni": 10001})) == {
        "message": "Added new network '10001' to network template 'ext-11X'."}
    ok(client.post(f"{BASE}/template/network/ext-11X/net/10000"))
    ok(client.post(f"{BASE}/template/network/ext-11X/net/upstream"))
    template = ok(client.get(f"{BASE}/template/network/ext-11X"))[0]
    tid = template["id"]
    assert template["mac_template"] is None and template["ova"] is None
    assert [(n["vni"], n["network_template"]) for n in template["networks"]] == \
        [("10001", tid), ("10000", tid), ("upstream", tid)]
    assert ok(client.get(f"{BASE}/template/network/ext-11X/net")) == template["networks"]
    assert ok(client.get(f"{BASE}/template/network/ext-11X/net/10000")) == template["networks"][1]
    refused(client.get(f"{BASE}/template/network/ext-11X/net/10002"), 404, "not in network template")
    fixed = ok(client.get(f"{BASE}/template/network", params={"limit": "fixed"}))
    assert [(t["name"], t["mac_template"]) for t in fixed] == [("fixed-mac", "{prefix}:ff:ff:{vmid}{netid}")]

    before = dump(zk)
    refused(client.post(f"{BASE}/template/network/ext-11X/net", params={"vni": 10000}), 400,
            "vni: the VNI '10000' in network template 'ext-11X' already exists")
    refused(client.post(f"{BASE}/template/network/ext-11X/net", params={"vni": 10002}), 400,
            "vni: the network 10002 does not exist")
    refused(client.post(f"{BASE}/template/network/ext-11X/net", params={"vni": "lan"}), 400,
            "vni: 'lan' is not a VNI")
    refused(client.post(f"{BASE}/template/network/ext-11X/net", params={"vni": "0"}), 400,
            "vni: 0 is out of range")
    refused(client.post(f"{BASE}/template/network/nothing/net", params={"vni": 10000}), 404,
            "The network template 'nothing' does not exist.")
    refused(client.post(f"{BASE}/template/network/ext-11X/net/10000", params={"permit_duplicate": "perhaps"}),
            400, "permit_duplicate")
    refused(client.post(f"{BASE}/template/network", params={"name": "ext-11X"}), 400, "already exists")
    for bad, word in (("{prefix}:ff:ff:{vmid}{netid}{nope}", "only {prefix}, {vmid} and {netid}"),
                      ("{prefix}:ff:{vmid}{netid}", "does not make a unicast MAC address"),
                      ("01:00:00:00:00:{netid}", "does not make a unicast MAC address"),
                      ("{prefix", "not a MAC template")):
        refused(client.post(f"{BASE}/template/network", params={"name": "bad", "mac_template": bad}), 400,
                "mac_template", word)
    refused(client.delete(f"{BASE}/template/network/ext-11X/net/10002"), 404, "not in network template")
    assert dump(zk) == before

    ok(client.post(f"{BASE}/template/network/ext-11X/net", params={"vni": 10000, "permit_duplicate": "true"}))
    vnis = [n["vni"] for n in ok(client.get(f"{BASE}/template/network/ext-11X/net"))]
    assert vnis == ["10001", "10000", "upstream", "10000"]
    assert ok(client.delete(f"{BASE}/template/network/ext-11X/net/10000")) == {
        "message": "Removed network '10000' from network template 'ext-11X'."}
    assert [n["vni"] for n in ok(client.get(f"{BASE}/template/network/ext-11X/net"))] == \
        ["10001", "10000", "upstream"]
    ok(client.delete(f"{BASE}/template/network/fixed-mac"))
    assert [t["name"] for t in ok(client.get(f"{BASE}/template/network"))] == ["ext-11X"]


# -- storage templates -------------------------------------------------------------------------------------

def test_storage_template_lifecycle(client: TestClient, zk: ZK) -> None:
    refused(client.get(f"{BASE}/template/storage"), 404, "No storage templates found.")
    assert ok(client.post(f"{BASE}/template/storage", params={"name": "standard-ext4"})) == {
        "message": "Added new storage template 'standard-ext4'."}
    ok(client.post(f"{BASE}/template/storage/large-cloned"))
    disk = f"{BASE}/template/storage/standard-ext4/disk"
    refused(client.get(disk), 404, "No storage template disks found.")
    ok(client.post(disk, params={"disk_id": "sdc", "pool": "vms", "disk_size": 4, "filesystem": "ext4",
                                 "filesystem_arg": ["-L=log"], "mountpoint": "/var/log"}))
    assert ok(client.post(disk, params={"disk_id": "sda", "pool": "vms", "disk_size": 2, "filesystem": "ext4",
                                        "filesystem_arg": "-L=root", "mountpoint": "/"})) == {
        "message": "Added new disk 'sda' to storage template 'standard-ext4'."}
    ok(client.post(f"{disk}/sdb", data={"pool": "vms", "disk_size": "4", "filesystem": "ext4",
                                        "filesystem_arg": "-L=var", "mountpoint": "/var/"}))
    ok(client.post(f"{BASE}/template/storage/large-cloned/disk/sda",
                   params={"pool": "vms", "source_volume": "template_sda"}))
    ok(client.post(f"{BASE}/template/storage/large-cloned/disk/sdb", params={"pool": "vms", "disk_size": 40}))
    std, cloned = ok(client.get(f"{BASE}/template/storage", params={"limit": ""}))[::-1]
    assert std["name"] == "standard-ext4"
    assert [(d["disk_id"], d["disk_size_gb"], d["filesystem_args"], d["mountpoint"])
            for d in std["disks"]] == [("sda", 2, "-L=root", "/"), ("sdb", 4, "-L=var", "/var"),
                                       ("sdc", 4, "-L=log", "/var/log")]
    assert all(d["storage_template"] == std["id"] and d["pool"] == "vms" for d in std["disks"])
    assert cloned["disks"][0] == {"id": cloned["disks"][0]["id"], "storage_template": cloned["id"],
                                  "disk_id": "sda", "pool": "vms", "source_volume": "template_sda",
                                  "disk_size_gb": None, "filesystem": None, "filesystem_args": "",
                                  "mountpoint": None}
    assert zk.get(schema.storage_template("standard-ext4"))["disks"][0]["filesystem_args"] == ["-L=root"]
    assert ok(client.get(f"{disk}/sdb"))["mountpoint"] == "/var"
    assert ok(client.get(disk)) == std["disks"]
    assert ok(client.get(f"{BASE}/template/storage/large-cloned")) == [cloned]
    refused(client.get(f"{disk}/sdz"), 404, "The disk 'sdz' is not in storage template 'standard-ext4'.")

    before = dump(zk)
    for params, words in (
        ({"disk_id": "sda", "pool": "vms", "disk_size": 2}, ["disk_id: the disk 'sda'", "already exists"]),
        ({"disk_id": "sdd", "pool": "vms", "disk_size": 2, "filesystem": "ext4", "mountpoint": "/var"},
         ["mountpoint: /var is already the mountpoint of disk 'sdb'"]),
        ({"disk_id": "hda", "pool": "vms", "disk_size": 2}, ["disk_id: 'hda' is not a disk id"]),
        ({"disk_id": "sdd", "pool": "ssd", "disk_size": 2}, ["pool: the storage pool 'ssd' does not exist"]),
        ({"disk_id": "sdd", "pool": "vms"}, ["disk_size: a size in GB is required"]),
        ({"disk_id": "sdd", "pool": "vms", "disk_size": 0}, ["disk_size", "at least 1"]),
        ({"disk_id": "sdd", "pool": "vms", "disk_size": "2G"}, ["disk_size: '2G' is not an integer"]),
        ({"disk_id": "sdd", "pool": "vms", "disk_size": 2, "mountpoint": "/srv"},
         ["mountpoint: a filesystem is required"]),
        ({"disk_id": "sdd", "pool": "vms", "disk_size": 2, "filesystem": "ntfs"},
         ["filesystem: 'ntfs' is not one of ext2"]),
        ({"disk_id": "sdd", "pool": "vms", "source_volume": "base", "disk_size": 2},
         ["disk_size: a disk cloned from source_volume 'base' takes no disk_size"]),
        ({"disk_id": "sdd", "pool": "vms", "source_volume": "base", "filesystem": "ext4"},
         ["filesystem: a disk cloned from source_volume"]),
        ({"disk_id": "sdd", "pool": "vms", "source_volume": "base", "mountpoint": "/srv"},
         ["mountpoint: a disk cloned from source_volume"]),
        ({"disk_id": "sdd", "pool": "vms", "disk_size": 2, "filesystem": "ext4", "mountpoint": "srv"},
         ["mountpoint: 'srv' is not an absolute path"]),
        ({"disk_id": "sdd", "pool": "vms", "disk_size": 2, "filesystem": "ext4", "filesystem_arg": "L=x"},
         ["filesystem_arg: 'L=x' is not an mkfs argument"]),
        ({"disk_id": "sdd", "pool": "vms", "disk_size": 2, "filesystem_arg": "-L=x"},
         ["filesystem_arg: mkfs arguments need a filesystem"]),
        ({"pool": "vms", "disk_size": 2}, ["disk_id: required"]),
    ):
        refused(client.post(disk, params=params), 400, *words)
    refused(client.post(f"{BASE}/template/storage/nothing/disk", params={"disk_id": "sda", "pool": "vms",
                                                                          "disk_size": 2}), 404, "nothing")
    refused(client.post(f"{BASE}/template/storage", params={"name": "large-cloned"}), 400, "already exists")
    refused(client.post(f"{BASE}/template/storage/large-cloned"), 400, "already exists")
    refused(client.delete(f"{disk}/sdz"), 404, "sdz")
    assert dump(zk) == before

    assert ok(client.delete(f"{disk}/sdb")) == {"message": "Removed disk 'sdb' from storage template "
                                                           "'standard-ext4'."}
    assert [d["disk_id"] for d in ok(client.get(disk))] == ["sda", "sdc"]
    ok(client.delete(f"{BASE}/template/storage/large-cloned"))
    all_templates = ok(client.get(f"{BASE}/template"))
    assert set(all_templates) == {"system_templates", "network_templates", "storage_templates"}
    assert [t["name"] for t in all_templates["storage_templates"]] == ["standard-ext4"]
    assert all_templates["system_templates"] == [] == all_templates["network_templates"]


def test_missing_mkfs_is_refused(zk: ZK) -> None:
    before = dump(zk)
    with pytest.raises(InvalidInput, match=r"filesystem: mkfs\.xfs is not installed on this node"):
        prov.add_template_disk(zk, "any", "sda", "vms", disk_size=2, filesystem="xfs", which=lambda _p: None)
    assert dump(zk) == before


# -- userdata and scripts ----------------------------------------------------------------------------------

def test_userdata_lifecycle(client: TestClient, zk: ZK) -> None:
    items = ok(client.get(f"{BASE}/userdata"))
    assert [(u["name"], u["userdata"]) for u in items] == [("empty", "")]
    assert ok(client.post(f"{BASE}/userdata", params={"name": "basic"}, data={"data": CLOUD_CONFIG})) == {
        "message": "Created userdata document 'basic'."}
    ok(client.post(f"{BASE}/userdata/multi", data={"data": MULTIPART}))
    ok(client.post(f"{BASE}/userdata/script", data={"data": "#!/bin/sh\necho hi\n"}))
    single = 'Content-Type: text/cloud-config; charset="us-ascii"\nMIME-Version: 1.0\n\n#cloud-config\na: 1\n'
    ok(client.post(f"{BASE}/userdata/basic-ssh", data={"data": single}))
    assert [u["name"] for u in ok(client.get(f"{BASE}/userdata"))] == ["basic", "basic-ssh", "empty", "multi",
                                                                       "script"]
    assert ok(client.get(f"{BASE}/userdata/multi"))[0]["userdata"] == MULTIPART
    assert ok(client.put(f"{BASE}/userdata/basic", data={"data": "#cloud-config\nhostname: x\n"})) == {
        "message": "Updated userdata document 'basic'."}
    assert zk.get(schema.userdata("basic"))["userdata"] == "#cloud-config\nhostname: x\n"

    before = dump(zk)
    for data, words in (
        ("#cloud-config\nusers: [a\n", ["data: the #cloud-config document is not valid YAML at line"]),
        ("#cloud-config\n- a\n- b\n", ["data: the #cloud-config document must be a YAML mapping", "list"]),
        ("hostname: x\n", ["data: not a cloud-init userdata document"]),
        ('Content-Type: multipart/mixed; boundary="B"\nMIME-Version: 1.0\n\n--B\nContent-Type: '
         'text/cloud-config\n\n#cloud-config\n- x\n--B--\n',
         ["part 1 (text/cloud-config) must be a YAML mapping"]),
        ('Content-Type: multipart/mixed; boundary="B"\nMIME-Version: 1.0\n\nno parts here\n',
         ["data:", "MIME"]),
    ):
        refused(client.post(f"{BASE}/userdata", params={"name": "bad"}, data={"data": data}), 400, *words)
    refused(client.post(f"{BASE}/userdata", params={"name": "bad"}), 400, "data: required")
    refused(client.post(f"{BASE}/userdata", params={"name": "basic"}, data={"data": "#!/bin/sh\n"}), 400,
            "already exists")
    refused(client.put(f"{BASE}/userdata/nothing", data={"data": "#!/bin/sh\n"}), 404, "nothing")
    refused(client.put(f"{BASE}/userdata/basic", data={"data": "plain text"}), 400, "data: not a cloud-init")
    refused(client.delete(f"{BASE}/userdata/empty"), 400, "'empty' is built in and cannot be removed")
    refused(client.put(f"{BASE}/userdata/empty", data={"data": "#!/bin/sh\n"}), 400, "cannot be changed")
    assert dump(zk) == before
    assert ok(client.delete(f"{BASE}/userdata/script")) == {"message": "Removed userdata document 'script'."}
    refused(client.get(f"{BASE}/userdata/script"), 404, "does not exist")


def test_script_lifecycle(client: TestClient, zk: ZK) -> None:
    refused(client.get(f"{BASE}/script"), 404, "No scripts found.")
    assert ok(client.post(f"{BASE}/script", params={"name": "noop"}, data={"data": SCRIPT})) == {
        "message": "Created provisioning script 'noop'."}
    dotted = SCRIPT.replace("VMBuilder)", "vmbuilder.VMBuilder)")
    ok(client.post(f"{BASE}/script/noop2", data={"data": dotted}))
    assert ok(client.get(f"{BASE}/script/noop")) == [{"id": ok(client.get(f"{BASE}/script"))[0]["id"],
                                                      "name": "noop", "script": SCRIPT}]
    before = dump(zk)
    broken = SCRIPT.replace('return "<domain/>"', 'return "<domain/>"(')
    for data, words in (
        (broken, ["data: syntax error at line 7"]),
        ("import os\n\nclass Builder(object):\n    pass\n", ["does not define class VMBuilderScript"]),
        ("class VMBuilderScript:\n    pass\n", ["class VMBuilderScript must extend VMBuilder"]),
        ("", ["data: the script is empty"]),
    ):
        refused(client.post(f"{BASE}/script", params={"name": "bad"}, data={"data": data}), 400, *words)
        refused(client.put(f"{BASE}/script/noop", data={"data": data}), 400, *words)
    refused(client.put(f"{BASE}/script/nothing", data={"data": SCRIPT}), 404, "nothing")
    refused(client.post(f"{BASE}/script", params={"name": "noop"}, data={"data": SCRIPT}), 400,
            "already exists")
    assert dump(zk) == before
    changed = SCRIPT + "\n# changed\n"
    assert ok(client.put(f"{BASE}/script/noop", data={"data": changed})) == {
        "message": "Updated provisioning script 'noop'."}
    assert ok(client.get(f"{BASE}/script/noop"))[0]["script"] == changed
    assert ok(client.delete(f"{BASE}/script/noop2")) == {"message": "Removed provisioning script 'noop2'."}


# -- profiles ----------------------------------------------------------------------------------------------

def test_profile_lifecycle_and_load(client: TestClient, zk: ZK) -> None:
    refused(client.get(f"{BASE}/profile"), 404, "No profiles found.")
    build_profile(client)
    profile = ok(client.get(f"{BASE}/profile/test"))[0]
    assert profile == {"id": profile["id"], "name": "test", "type": "provisioner",
                       "system_template": "system-test", "network_template": "network-test",
                       "storage_template": "storage-test",
                       "userdata": "empty", "script": "script-test", "ova": "N/A",
                       "arguments": ["deb_release=bullseye"]}
    assert ok(client.get(f"{BASE}/profile")) == [profile]

    loaded = prov.load_profile(zk, "test")
    assert loaded.system["vcpu_count"] == 1 and loaded.system["node_limit"] == ["hv1"]
    assert loaded.network is not None and loaded.storage is not None
    assert [n["vni"] for n in loaded.network["networks"]] == ["10000"]
    assert loaded.network["mac_template"] is None
    assert [(v["disk_id"], v["pool"], v["disk_size_gb"], v["filesystem"], v["mountpoint"])
            for v in loaded.storage["disks"]] == [("sda", "vms", 8, "ext4", "/")]
    assert loaded.userdata == "" and loaded.profile["userdata"] == "empty"
    assert loaded.script == SCRIPT and prov.arguments_dict(loaded.arguments) == {"deb_release": "bullseye"}
    assert loaded.ova is None and loaded.profile["profile_type"] == "provisioner"
    with pytest.raises(NotFound, match=r"The profile 'nothing' does not exist\."):
        prov.load_profile(zk, "nothing")

    # refusals: unknown references, bad fields; nothing changes
    ok(client.post(f"{BASE}/userdata/basic", data={"data": CLOUD_CONFIG}))
    before = dump(zk)
    good = {"name": "p2", "profile_type": "provisioner", "system_template": "system-test",
            "network_template": "network-test", "storage_template": "storage-test", "script": "script-test"}
    for changes, words in (
        ({"system_template": "nothing"}, ["system_template: the system template 'nothing' does not"]),
        ({"network_template": "nothing"}, ["network_template: the network template 'nothing' does not"]),
        ({"storage_template": "nothing"}, ["storage_template: the storage template 'nothing' does not"]),
        ({"userdata": "nothing"}, ["userdata: the userdata document 'nothing' does not exist"]),
        ({"script": "nothing"}, ["script: the script 'nothing' does not exist"]),
        ({"ova": "nothing"}, ["ova: the OVA 'nothing' does not exist"]),
        ({"profile_type": "vm"}, ["profile_type: 'vm' is not one of provisioner, ova"]),
        ({"profile_type": "ova"}, ["ova: an ova profile needs the name of its OVA"]),
        ({"network_template": ""}, ["network_template: a provisioner profile needs a network template"]),
        ({"arg": ["novalue"]}, ["arg: 'novalue' is not a key=value argument"]),
        ({"arg": ["a=1", "a=2"]}, ["arg: the argument 'a' is given twice"]),
        ({"name": "test"}, ["name: the profile 'test' already exists."]),
        ({"name": "bad/name"}, ["name: 'bad/name' is not a valid name"]),
    ):
        refused(client.post(f"{BASE}/profile", params={**good, **changes}), 400, *words)
    refused(client.post(f"{BASE}/profile", params={k: v for k, v in good.items() if k != "script"}), 400,
            "script: required")
    refused(client.put(f"{BASE}/profile/test", params={"script": "nothing"}), 400,
            "script: the script 'nothing'")
    refused(client.put(f"{BASE}/profile/test", params={"storage_template": ""}), 400,
            "storage_template: a provisioner profile needs a storage template")
    refused(client.put(f"{BASE}/profile/nothing", params={"script": "script-test"}), 404, "nothing")

    # removing what the profile uses is refused, naming it
    for path, what in (("template/system/system-test", "system template 'system-test'"),
                       ("template/network/network-test", "network template 'network-test'"),
                       ("template/storage/storage-test", "storage template 'storage-test'"),
                       ("script/script-test", "script 'script-test'")):
        refused(client.delete(f"{BASE}/{path}"), 400, f"The {what} is used by profile 'test'")
    assert dump(zk) == before

    # the element route with form fields; modify; userdata removal refused while used
    ok(client.post(f"{BASE}/profile/p2", data={**{k: v for k, v in good.items() if k != "name"},
                                                "userdata": "basic", "arg": ["a=1", "b=x=y"]}))
    refused(client.delete(f"{BASE}/userdata/basic"), 400,
            "The userdata document 'basic' is used by profile 'p2'")
    changes = {"userdata": "basic", "arg": ["deb_release=bookworm"]}
    assert ok(client.put(f"{BASE}/profile/test", params=changes)) == {
        "message": "Modified VM profile 'test'."}
    refused(client.delete(f"{BASE}/userdata/basic"), 400, "used by profiles 'p2', 'test'")
    test = ok(client.get(f"{BASE}/profile/test"))[0]
    assert test["userdata"] == "basic" and test["arguments"] == ["deb_release=bookworm"]
    ok(client.put(f"{BASE}/profile/test", params={"userdata": ""}))
    assert ok(client.get(f"{BASE}/profile/test"))[0]["userdata"] == "N/A"
    assert prov.load_profile(zk, "test").userdata is None
    ok(client.put(f"{BASE}/profile/test", params={"arg": ""}))
    assert ok(client.get(f"{BASE}/profile/test"))[0]["arguments"] == []
    assert prov.arguments_dict(prov.load_profile(zk, "p2").arguments) == {"a": "1", "b": "x=y"}
    assert [p["name"] for p in ok(client.get(f"{BASE}/profile", params={"limit": "p"}))] == ["p2"]

    assert ok(client.delete(f"{BASE}/profile/p2")) == {"message": "Removed VM profile 'p2'."}
    ok(client.delete(f"{BASE}/userdata/basic"))
    ok(client.delete(f"{BASE}/profile/test"))
    for path in ("template/system/system-test", "template/network/network-test",
                 "template/storage/storage-test", "script/script-test"):
        ok(client.delete(f"{BASE}/{path}"))
    refused(client.delete(f"{BASE}/profile/test"), 404, "The profile 'test' does not exist.")


def test_load_profile_names_a_missing_reference(client: TestClient, zk: ZK) -> None:
    build_profile(client)
    zk.delete(schema.script("script-test"))  # as if removed behind the API's back
    with pytest.raises(NotFound, match=r"The script 'script-test' of profile 'test' does not exist\."):
        prov.load_profile(zk, "test")
    assert ok(client.get(f"{BASE}/profile/test"))[0]["script"] == "N/A"


# -- OVAs --------------------------------------------------------------------------------------------------

def test_ova_list_get_remove(client: TestClient, zk: ZK, fake: FakeStorage) -> None:
    refused(client.get(f"{BASE}/ova"), 404, "No OVAs found.")
    for disk in ("sda", "sdb"):
        ok(client.post("/api/v1/storage/ceph/volume", params={"volume": f"ova_debian_{disk}", "pool": "vms",
                                                              "size": "1G"}))
    volumes = [{"pool": "vms", "volume_name": f"ova_debian_{d}", "volume_format": "vmdk", "disk_id": d,
                "disk_size_gb": 1} for d in ("sda", "sdb")]
    zk.create(schema.ova("debian"), {"id": prov.next_id(zk, "ova"), "name": "debian", "ovf": "<Envelope/>",
                                     "volumes": volumes})
    prov.add_system_template(zk, "debian", 2, 2048, True, False, ova="debian")
    ok(client.post(f"{BASE}/script/ova", data={"data": SCRIPT}))
    prov.add_profile(zk, "debian", "ova", "debian", script="ova", ova="debian")
    item = ok(client.get(f"{BASE}/ova/debian"))[0]
    assert item == {"id": item["id"], "name": "debian", "volumes": volumes}
    assert ok(client.get(f"{BASE}/ova")) == [item]
    profile = ok(client.get(f"{BASE}/profile/debian"))[0]
    assert (profile["type"], profile["ova"], profile["network_template"]) == ("ova", "debian", "N/A")
    loaded = prov.load_profile(zk, "debian")
    assert loaded.ova is not None and loaded.ova["volumes"] == volumes
    assert loaded.storage is None and loaded.network is None
    refused(client.delete(f"{BASE}/template/system/debian"), 400, "used by profile 'debian'")

    # another profile using the OVA's system template keeps the OVA
    ok(client.post(f"{BASE}/template/network", params={"name": "net"}))
    ok(client.post(f"{BASE}/template/storage", params={"name": "disk"}))
    prov.add_profile(zk, "mine", "provisioner", "debian", "net", "disk", script="ova")
    before = dump(zk)
    refused(client.delete(f"{BASE}/ova/debian"), 400,
            "its system template 'debian' is used by profile 'mine'")
    refused(client.delete(f"{BASE}/ova/nothing"), 404, "The OVA 'nothing' does not exist.")
    assert dump(zk) == before
    ok(client.delete(f"{BASE}/profile/mine"))

    assert ok(client.delete(f"{BASE}/ova/debian")) == {"message": "Removed OVA image 'debian'."}
    assert not zk.exists(schema.ova("debian"))
    assert not zk.exists(schema.profile("debian")) and not zk.exists(schema.system_template("debian"))
    assert fake.list_volumes("vms") == []
    assert not zk.exists(schema.volume("vms", "ova_debian_sda"))


# -- the CLI against a running pvcapid (pvc-facts §10 steps 2 and 7) ---------------------------------------

@pytest.fixture
def pvc(api: Api, tmp_path: Path) -> Pvc:
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    config = client_dir / "pvc.conf"
    config.write_text(api.daemon.config.read_text())  # the API's own file: the implicit "local" connection
    return Pvc(client_dir, config)


def test_acceptance_sequence_through_the_cli(pvc: Pvc, zk: ZK, tmp_path: Path) -> None:
    state.ensure_cluster(zk, "test")
    nets.add_network(zk, 10000, "net10000", "managed")
    zk.put(schema.pool("vms"), {"name": "vms", "pgs": 32, "tier": "default", "copies": 3, "mincopies": 2})
    script = tmp_path / "3-debootstrap.py"
    script.write_text(SCRIPT)

    def run(*args: str) -> str:
        return pvc.ok("--quiet", *args)

    assert pvc.json("provisioner", "profile", "list", "test") == []
    run("provisioner", "template", "system", "add", "--vcpus", "1", "--vram", "1024", "--serial", "--vnc",
        "--vnc-bind", "0.0.0.0", "--node-limit", "hv1", "--node-selector", "mem", "--node-autostart",
        "--migration-method", "live", "system-test")
    run("provisioner", "template", "network", "add", "network-test")
    run("provisioner", "template", "network", "vni", "add", "network-test", "10000")
    run("provisioner", "template", "storage", "add", "storage-test")
    run("provisioner", "template", "storage", "disk", "add", "--pool", "vms", "--size", "8", "--filesystem",
        "ext4", "--mountpoint", "/", "storage-test", "sda")
    out = run("provisioner", "script", "add", "script-test", str(script))
    assert out.strip() == "Created provisioning script 'script-test'."
    run("provisioner", "profile", "add", "--profile-type", "provisioner", "--system-template", "system-test",
        "--network-template", "network-test", "--storage-template", "storage-test", "--userdata", "empty",
        "--script", "script-test", "--script-arg", "deb_release=bullseye", "test")

    system = run("provisioner", "template", "system", "list").splitlines()
    assert system[0] == "System templates:" and system[1] == ""
    assert system[2].split() == ["Name", "ID", "vCPUs", "vRAM", "[MB]", "Consoles:", "Serial", "VNC", "VNC",
                                 "bind", "Metadata:", "Limit", "Selector", "Autostart", "Migration"]
    assert system[3].split()[0] == "system-test"
    assert system[3].split()[2:] == ["1", "1024", "True", "True", "0.0.0.0", "hv1", "mem", "True", "live"]
    assert system[2].index("Serial") == system[3].index("True")
    network = run("provisioner", "template", "network", "list").splitlines()
    assert network[2].split() == ["Name", "ID", "MAC", "template", "Network", "VNIs"]
    assert network[3].split()[0] == "network-test" and network[3].split()[2:] == ["None", "10000"]
    storage = run("provisioner", "template", "storage", "list").splitlines()
    assert storage[2].split()[:4] == ["Name", "ID", "Disk", "ID"]
    assert storage[3].split()[0] == "storage-test" and len(storage[3].split()) == 2
    assert storage[4].split() == ["sda", "vms", "None", "8", "ext4", "None", "/"]
    assert storage[2].index("Disk ID") == storage[4].index("sda")
    both = run("provisioner", "template", "list")
    assert "System templates:" in both and "Network templates:" in both and "Storage templates:" in both
    profiles = run("provisioner", "profile", "list").splitlines()
    assert profiles[0].split() == ["Name", "ID", "Templates:", "System", "Network", "Storage", "Data:",
                                   "Userdata", "Script", "Script", "Arguments"]
    assert profiles[1].split()[0] == "test"
    assert profiles[1].split()[2:] == ["system-test", "network-test", "storage-test", "empty", "script-test",
                                       "deb_release=bullseye"]
    assert profiles[0].index("System") == profiles[1].index("system-test")
    userdata = run("provisioner", "userdata", "list").splitlines()
    assert userdata[0].split() == ["Name", "ID", "Document"] and userdata[1].split()[0] == "empty"
    assert run("provisioner", "script", "show", "script-test") == SCRIPT
    assert [s["name"] for s in pvc.json("provisioner", "script", "list")] == ["script-test"]
    assert pvc.json("provisioner", "profile", "list", "test")[0]["arguments"] == ["deb_release=bullseye"]

    bad = tmp_path / "bad.py"
    bad.write_text("class Nope:\n    pass\n")
    failed = pvc("-q", "provisioner", "script", "add", "bad", str(bad))
    assert failed.returncode == 1 and "does not define class VMBuilderScript" in failed.stderr
    busy = pvc("-q", "provisioner", "template", "system", "remove", "--yes", "system-test")
    assert busy.returncode == 1 and "used by profile 'test'" in busy.stderr
    userdata_file = tmp_path / "ud.yaml"
    userdata_file.write_text(CLOUD_CONFIG)
    run("provisioner", "userdata", "add", "basic", str(userdata_file))
    userdata_file.write_text("#cloud-config\nhostname: changed\n")
    run("provisioner", "userdata", "modify", "basic", str(userdata_file))
    assert run("provisioner", "userdata", "show", "basic") == "#cloud-config\nhostname: changed\n"
    run("provisioner", "profile", "modify", "--userdata", "basic", "test")
    assert pvc.json("provisioner", "profile", "list", "test")[0]["userdata"] == "basic"
    run("provisioner", "template", "system", "modify", "--vcpus", "2", "system-test")
    assert pvc.json("provisioner", "template", "system", "list")[0]["vcpu_count"] == 2
    run("provisioner", "template", "network", "vni", "remove", "--yes", "network-test", "10000")
    run("provisioner", "template", "storage", "disk", "remove", "--yes", "storage-test", "sda")

    # step 7: teardown
    assert run("provisioner", "profile", "remove", "--yes", "test").strip() == "Removed VM profile 'test'."
    run("provisioner", "userdata", "remove", "--yes", "basic")
    run("provisioner", "script", "remove", "--yes", "script-test")
    run("provisioner", "template", "system", "remove", "--yes", "system-test")
    run("provisioner", "template", "network", "remove", "--yes", "network-test")
    run("provisioner", "template", "storage", "remove", "--yes", "storage-test")
    assert pvc.json("provisioner", "profile", "list") == []
    assert run("provisioner", "template", "system", "list").strip().endswith("No system templates found.")
    assert pvc.json("provisioner", "ova", "list") == []
