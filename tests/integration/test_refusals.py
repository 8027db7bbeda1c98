"""Input that would break the cluster's own health is refused (issue #17, item 5), through the real
CLI (a subprocess) and the API (a uvicorn server in this process, over a FakeStorage with three
OSD hosts) against a real ZooKeeper: each refusal is an HTTP 400 naming the field, the reason and
the limit, the CLI exits non-zero with the same message, and nothing changes. `force` accepts
only what an administrator can mean (copies for hosts still to come, memory for a bigger node,
a limit naming a node not registered yet).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from pvc.adapters.ceph.fake import FakeStorage
from pvc.api.app import create_app
from pvc.core import schema
from pvc.core.config import load_config
from pvc.core.records import Memory
from pvc.core.zk import ZK
from pvc.lab.zkserver import free_port
from tests.conftest import API_TOKEN
from tests.integration.apihelp import node_record, register_nodes

GLOBAL_ENV = ("PVC_CONNECTION", "PVC_DEBUG", "PVC_QUIET", "PVC_SILENT", "PVC_UNSAFE", "PVC_COLOUR",
              "PVC_CLIENT_VERIFY_SSL", "NO_COLOR")
NODE_MIB = 8192


@dataclass
class Cluster:
    zk: ZK
    fake: FakeStorage
    http: httpx.Client
    env: dict[str, str]
    tmp: Path

    def pvc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pvc.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=90)

    def refused(self, response: httpx.Response, *words: str) -> str:
        assert response.status_code == 400, response.text
        text = str(response.json()["message"])
        for word in words:
            assert word in text, text
        return text

    def cli_refused(self, message: str, *args: str) -> None:
        """The CLI fails (non-zero) with the API's message."""
        result = self.pvc(*args)
        assert result.returncode != 0, result.stdout
        flat = " ".join((result.stderr + result.stdout).split())
        assert " ".join(message.split()) in flat, flat

    def cli_ok(self, *args: str) -> str:
        result = self.pvc(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def file(self, name: str, text: str) -> str:
        path = self.tmp / name
        path.write_text(text)
        return str(path)


@pytest.fixture
def cluster(config_factory: Callable[..., Path], zk: ZK, tmp_path: Path) -> Iterator[Cluster]:
    fake = FakeStorage()                      # osd.0..2 on hosts hv1..hv3 (class hdd)
    records = [node_record(name, memory=Memory(total=NODE_MIB, free=6000, used=NODE_MIB - 6000), cpu_count=8)
               for name in ("hv1", "hv2", "hv3")]
    zk.put(schema.PRIMARY_NODE, "hv1")
    register_nodes(zk, None, *records)
    app = create_app(load_config(str(config_factory())), zk, storage=fake)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=base + "/api/v1", headers={"X-Api-Key": API_TOKEN}, timeout=60)
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.05)
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    (client_dir / "pvc.json").write_text(json.dumps({"test": {
        "description": "refusals", "host": "127.0.0.1", "port": port, "scheme": "http",
        "api_key": API_TOKEN}}))
    env = {k: v for k, v in os.environ.items() if k not in GLOBAL_ENV}
    env.update({"PVC_CLIENT_DIR": str(client_dir), "PVC_CONNECTION": "test", "PYTHONUNBUFFERED": "1",
                "PVC_CONFIG_FILE": str(tmp_path / "no-such.conf")})
    yield Cluster(zk, fake, http, env, tmp_path)
    http.close()
    server.should_exit = True
    thread.join(10)


def no_pools(c: Cluster) -> None:
    assert c.zk.children(schema.CEPH_POOLS) == []
    assert c.fake.list_pools() == []


# -- pools -----------------------------------------------------------------------------------------

def test_replication_beyond_the_hosts_is_refused_unless_forced(cluster: Cluster) -> None:
    c = cluster
    message = c.refused(c.http.post("/storage/ceph/pool", params={"pool": "p1", "pgs": 8,
                                                                   "replcfg": "copies=9,mincopies=1"}),
                        "replcfg: copies=9 needs 9 separate hosts", "only 3 hosts", "(hv1, hv2, hv3)",
                        "at most copies=3", "force")
    no_pools(c)
    c.cli_refused(message, "storage", "pool", "add", "p1", "8", "--replcfg", "copies=9,mincopies=1")
    no_pools(c)
    # the named route, and copies one above the hosts
    c.refused(c.http.post("/storage/ceph/pool/p1", data={"pgs": "8", "replcfg": "copies=4,mincopies=2"}),
              "copies=4 needs 4 separate hosts")
    no_pools(c)
    # what fits is accepted; force accepts more copies than hosts (hosts still to be added)
    c.cli_ok("storage", "pool", "add", "p3", "8", "--replcfg", "copies=3,mincopies=2")
    c.cli_ok("storage", "pool", "add", "p1", "8", "--replcfg", "copies=9,mincopies=1", "--force")
    assert sorted(c.fake.list_pools()) == ["p1", "p3"]
    assert c.zk.get(schema.pool("p1"))["copies"] == 9


def test_an_out_osd_leaves_its_host_no_failure_domain(cluster: Cluster) -> None:
    c = cluster
    c.fake.set_osd_in(2, False)               # hv3's only OSD is out: it holds no data
    c.refused(c.http.post("/storage/ceph/pool",
                          params={"pool": "p1", "pgs": 8, "replcfg": "copies=3,mincopies=2"}),
              "copies=3 needs 3 separate hosts", "only 2 hosts", "(hv1, hv2)")
    no_pools(c)


def test_a_tier_without_osds_is_refused(cluster: Cluster) -> None:
    c = cluster
    message = c.refused(c.http.post("/storage/ceph/pool", params={"pool": "p1", "pgs": 8, "tier": "ssd",
                                                                   "replcfg": "copies=2,mincopies=1"}),
                        "tier: no host has OSDs of device class ssd")
    c.cli_refused(message, "storage", "pool", "add", "p1", "8", "--tier", "ssd", "--replcfg",
                  "copies=2,mincopies=1")
    no_pools(c)
    c.fake.add_osd("hv1", "ssd")
    c.fake.add_osd("hv2", "ssd")
    c.refused(c.http.post("/storage/ceph/pool", params={"pool": "p1", "pgs": 8, "tier": "ssd",
                                                        "replcfg": "copies=3,mincopies=2"}),
              "only 2 hosts with OSDs of device class ssd", "(hv1, hv2)")
    c.cli_ok("storage", "pool", "add", "p1", "8", "--tier", "ssd", "--replcfg", "copies=2,mincopies=1")


@pytest.mark.parametrize(("pgs", "replcfg", "words"), [
    (7, "copies=3,mincopies=2", ("pgs: 7 is not a power of two",)),
    (96, "copies=3,mincopies=2", ("pgs: 96 is not a power of two",)),
    (8, "copies=2,mincopies=3", ("replcfg: mincopies=3 must be between 1 and copies (2)",)),
])
def test_pgs_and_mincopies_are_refused_even_with_force(cluster: Cluster, pgs: int, replcfg: str,
                                                       words: tuple[str, ...]) -> None:
    c = cluster
    params = {"pool": "p1", "pgs": pgs, "replcfg": replcfg, "force": "true"}
    message = c.refused(c.http.post("/storage/ceph/pool", params=params), *words)
    c.cli_refused(message, "storage", "pool", "add", "p1", str(pgs), "--replcfg", replcfg, "--force")
    no_pools(c)


def test_set_pgs_refuses_a_count_that_is_not_a_power_of_two(cluster: Cluster) -> None:
    c = cluster
    c.cli_ok("storage", "pool", "add", "p1", "8", "--replcfg", "copies=3,mincopies=2")
    message = c.refused(c.http.put("/storage/ceph/pool/p1", params={"pgs": 48}),
                        "pgs: 48 is not a power of two")
    c.cli_refused(message, "-u", "storage", "pool", "set-pgs", "p1", "48")
    assert c.zk.get(schema.pool("p1"))["pgs"] == 8


# -- VMs -------------------------------------------------------------------------------------------

def vm_xml(name: str, mib: int = 512, vcpus: int = 1, uuid: str | None = None) -> str:
    return (f"<domain type='kvm'><name>{name}</name><uuid>{uuid or uuidlib.uuid4()}</uuid>"
            f"<memory unit='MiB'>{mib}</memory><vcpu>{vcpus}</vcpu>"
            "<os><type arch='x86_64'>hvm</type></os><devices/></domain>")


def no_vms(c: Cluster) -> None:
    assert c.zk.children(schema.VMS) == []
    assert c.zk.children(schema.VM_NAMES) == []


def test_a_vm_bigger_than_every_node_is_refused_unless_forced(cluster: Cluster) -> None:
    c = cluster
    for params, mib, vcpus, words in [
        ({}, NODE_MIB, 1, ("xml: no node of this cluster could ever run VM big", f"{NODE_MIB} MiB of memory",
                           f"({NODE_MIB} MiB)", "force")),
        ({}, 1024, 16, ("xml: no node of this cluster could ever run VM big", "16 vCPUs is more than node",
                        "(8)")),
        ({"node": "hv2"}, 20000, 1, ("xml: VM big: 20000 MiB of memory is not less than node hv2's total",)),
    ]:
        xml = vm_xml("big", mib, vcpus)
        message = c.refused(c.http.post("/vm", params=params, data={"xml": xml}), *words)
        no_vms(c)
        args = ["vm", "define", c.file("big.xml", xml)] + (["--target", params["node"]] if params else [])
        c.cli_refused(message, *args)
        no_vms(c)
    # force: a bigger node is still to be added
    c.cli_ok("vm", "define", c.file("big.xml", vm_xml("big", 16384)), "--force")
    assert c.zk.children(schema.VM_NAMES) == ["big"]


def test_modify_refuses_memory_beyond_every_node_unless_forced(cluster: Cluster) -> None:
    c = cluster
    uuid = str(uuidlib.uuid4())
    c.cli_ok("vm", "define", c.file("app.xml", vm_xml("app", 512, uuid=uuid)), "--target", "hv1")
    # its node gone from the cluster (replaced): judged by the nodes there are
    c.zk.delete(schema.node("hv1"))
    before = c.zk.get(schema.vm(uuid))
    message = c.refused(c.http.put("/vm/app", data={"xml": vm_xml("app", 16384, uuid=uuid)}),
                        "xml: no node of this cluster could ever run VM app", f"({NODE_MIB} MiB)")
    assert c.zk.get(schema.vm(uuid)) == before
    c.cli_refused(message, "-u", "vm", "memory", "set", "app", "16G")
    c.cli_refused(message, "-u", "vm", "modify", "app", c.file("app2.xml", vm_xml("app", 16384, uuid=uuid)))
    assert c.zk.get(schema.vm(uuid)) == before
    c.cli_ok("-u", "vm", "memory", "set", "app", "16G", "--force")
    assert "16384" in c.zk.get(schema.vm(uuid))["xml"]


def test_a_node_limit_naming_no_node_is_refused_unless_forced(cluster: Cluster) -> None:
    c = cluster
    xml = vm_xml("lim")
    message = c.refused(c.http.post("/vm", params={"limit": "hv1,hv9"}, data={"xml": xml}),
                        "limit: 'hv9' is not a node of this cluster (its nodes: hv1, hv2, hv3)", "force")
    c.cli_refused(message, "vm", "define", c.file("lim.xml", xml), "--limit", "hv1,hv9")
    no_vms(c)
    c.refused(c.http.post("/vm", params={"limit": ["hv8", "hv9"]}, data={"xml": xml}),
              "limit: 'hv8', 'hv9' are not nodes of this cluster")
    no_vms(c)
    c.cli_ok("vm", "define", c.file("lim.xml", xml), "--limit", "hv1,hv9", "--force")   # hv9 to come
    assert c.zk.children(schema.VM_NAMES) == ["lim"]
    # the same on the VM's metadata
    uuid = c.zk.get(schema.vm_name("lim"))
    before = c.zk.get(schema.vm(uuid))
    message = c.refused(c.http.post("/vm/lim/meta", params={"limit": "hv7"}), "limit: 'hv7' is not a node")
    c.cli_refused(message, "vm", "meta", "lim", "--limit", "hv7")
    assert c.zk.get(schema.vm(uuid)) == before
    c.cli_ok("vm", "meta", "lim", "--limit", "hv2,hv7", "--force")
    assert c.zk.get(schema.vm(uuid))["node_limit"] == ["hv2", "hv7"]
    c.cli_ok("vm", "meta", "lim", "--limit", "")                  # clearing it needs no node


# -- networks --------------------------------------------------------------------------------------

NET = ["network", "add", "100", "-d", "refused", "-p", "managed", "-i", "10.100.0.0/24", "-g", "10.100.0.1",
       "--dhcp"]


@pytest.mark.parametrize(("start", "end", "words"), [
    ("10.100.0.1", "10.100.0.100", ("dhcp4_start, dhcp4_end: the range 10.100.0.1 - 10.100.0.100 contains "
                                    "the gateway 10.100.0.1",)),
    ("10.100.0.50", "10.100.0.200", ()),            # accepted (the control)
    ("10.100.0.200", "10.100.0.50", ("dhcp4_end: 10.100.0.50 comes before dhcp4_start 10.100.0.200",)),
    ("10.100.0.10", "10.100.1.20", ("dhcp4_end: 10.100.1.20 is not inside the network 10.100.0.0/24",)),
    ("10.99.0.10", "10.100.0.20", ("dhcp4_start: 10.99.0.10 is not inside the network 10.100.0.0/24",)),
    ("10.100.0.10", "10.100.0.255", ("dhcp4_end: 10.100.0.255 is the broadcast address of 10.100.0.0/24",)),
])
def test_dhcp_ranges_that_break_the_network_are_refused(cluster: Cluster, start: str, end: str,
                                                        words: tuple[str, ...]) -> None:
    c = cluster
    params = {"vni": 100, "description": "refused", "nettype": "managed", "ip4_network": "10.100.0.0/24",
              "ip4_gateway": "10.100.0.1", "dhcp4": "true", "dhcp4_start": start, "dhcp4_end": end}
    if not words:
        c.cli_ok(*NET, "--dhcp-start", start, "--dhcp-end", end)
        assert c.zk.exists(schema.network(100))
        return
    message = c.refused(c.http.post("/network", params=params), *words)
    c.cli_refused(message, *NET, "--dhcp-start", start, "--dhcp-end", end)
    assert not c.zk.exists(schema.network(100))


def test_moving_the_gateway_into_the_range_is_refused(cluster: Cluster) -> None:
    c = cluster
    c.cli_ok(*NET, "--dhcp-start", "10.100.0.50", "--dhcp-end", "10.100.0.200")
    before = c.zk.get(schema.network(100))
    message = c.refused(c.http.put("/network/100", params={"ip4_gateway": "10.100.0.60"}),
                        "contains the gateway 10.100.0.60")
    c.cli_refused(message, "network", "modify", "100", "-g", "10.100.0.60")
    message = c.refused(c.http.put("/network/100", params={"dhcp4_start": "10.100.0.1"}),
                        "contains the gateway 10.100.0.1")
    c.cli_refused(message, "network", "modify", "100", "--dhcp-start", "10.100.0.1")
    assert c.zk.get(schema.network(100)) == before


def test_openapi_documents_force_where_it_exists(cluster: Cluster) -> None:
    paths = cluster.http.get("/openapi.json").json()["paths"]
    for path, method, words in [("/api/v1/storage/ceph/pool", "post", "more copies than hosts"),
                                ("/api/v1/storage/ceph/pool/{pool}", "post", "more copies than hosts"),
                                ("/api/v1/vm", "post", "exceed every node"),
                                ("/api/v1/vm/{vm}", "put", "exceed every node"),
                                ("/api/v1/vm/{vm}/meta", "post", "not registered yet")]:
        params = {p["name"]: p for p in paths[path][method]["parameters"]}
        assert words in params["force"]["description"], (path, params["force"])
        assert not params["force"].get("required")
    pgs = {p["name"]: p for p in paths["/api/v1/storage/ceph/pool"]["post"]["parameters"]}["pgs"]
    assert "power of two" in pgs["description"]


# -- provisioner -----------------------------------------------------------------------------------

SCRIPT = ("from pvcapid.vmbuilder import VMBuilder\n\n\nclass VMBuilderScript(VMBuilder):\n"
          "    def setup(self):\n        pass\n")

def test_a_profile_whose_vm_no_node_could_run_is_refused_before_queueing(cluster: Cluster) -> None:
    c = cluster
    base = "/provisioner"
    for path, params, data in [
        ("/template/system", {"name": "huge", "vcpus": 1, "vram": 16384, "serial": "true", "vnc": "false"},
         None),
        ("/template/network", {"name": "n"}, None),
        ("/template/storage", {"name": "st"}, None),
        ("/script", {"name": "s"}, {"data": SCRIPT}),
        ("/profile", {"name": "p", "profile_type": "provisioner", "system_template": "huge", "script": "s",
                      "network_template": "n", "storage_template": "st"}, None),
    ]:
        response = c.http.post(base + path, params=params, data=data)
        assert response.status_code == 200, response.text
    message = c.refused(c.http.post(base + "/create", params={"name": "bigvm", "profile": "p"}),
                        "profile (system template huge): no node of this cluster could ever run VM bigvm",
                        f"({NODE_MIB} MiB)")
    assert c.zk.children(schema.TASKS) == []
    c.cli_refused(message, "provisioner", "create", "bigvm", "p")
    assert c.zk.children(schema.TASKS) == []
    # a job that only runs the script (no define) is not judged by the nodes' size
    response = c.http.post(base + "/create", params={"name": "bigvm", "profile": "p", "define_vm": "false"})
    assert response.status_code == 202, response.text
