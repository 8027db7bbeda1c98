"""SR-IOV against a real ZooKeeper: the node's SR-IOV service publishes synthetic sysfs trees, the
API (in-process pvcapid) serves upstream's /sriov routes and claims VFs for VMs.

Checked: the routes and their shapes against upstream's swagger.json, PUT validation (every
refusal a 400 naming the problem, ZooKeeper unchanged) and the node applying a PUT, a VF refused to
a second VM, released when its NIC or its VM is removed, the domain XML policy allowing managed VFs
only, and the migration rules (hostdev not live, macvtap to a free VF of the same PF).
"""

from __future__ import annotations

import threading
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pvc.adapters.sriov import SysfsSriov
from pvc.adapters.sriov.fake import RecordingNetlink, build_sysfs
from pvc.api.app import create_app
from pvc.core import schema
from pvc.core.config import NetworkingSettings, load_config
from pvc.core.records import Memory
from pvc.core.zk import ZK
from pvc.node.services.sriov import SriovService
from tests.conftest import API_TOKEN
from tests.integration.apihelp import node_record, ok, refused, register_nodes

# What upstream's API document (PVC 1.0.3, swagger 2.0) declares for SR-IOV, kept here so the suite
# needs nothing outside the repository: the PUT's query parameters and the two definitions' keys
# (the VF's config values with their JSON types).
UPSTREAM_VF_PUT_QUERY = {"vlan_id", "vlan_qos", "tx_rate_min", "tx_rate_max", "link_state", "spoof_check",
                         "trust", "query_rss"}
UPSTREAM_PF_KEYS = {"phy", "mtu", "vfs"}
UPSTREAM_VF_KEYS = {"phy", "pf", "mtu", "mac", "config", "usage"}
UPSTREAM_VF_CONFIG = {"vlan_id": "string", "vlan_qos": "string", "tx_rate_min": "string",
                      "tx_rate_max": "string", "link_state": "string", "spoof_check": "boolean",
                      "trust": "boolean", "query_rss": "boolean"}
UPSTREAM_VF_USAGE = {"used", "domain"}
SRIOV_PATHS = {"/sriov/pf": {"get"}, "/sriov/pf/{node}": {"get"}, "/sriov/vf": {"get"},
               "/sriov/vf/{node}": {"get"}, "/sriov/vf/{node}/{vf}": {"get", "put"}}


class Node:
    """One node's SR-IOV side: a synthetic sysfs tree, a recording netlink and the real service."""

    def __init__(self, zk: ZK, root: Path, name: str, pfs: dict[str, dict[str, Any]]) -> None:
        class Settings:
            node_name = name
            networking = NetworkingSettings(
                sriov_enable=True, sriov_device=[{"phy": p, "vfcount": s["numvfs"]} for p, s in pfs.items()])

        self.netlink = RecordingNetlink()
        build_sysfs(root, pfs)
        self.service = SriovService(Settings(), zk, SysfsSriov(root, self.netlink),  # type: ignore[arg-type]
                                    threading.Event())
        self.service.run_pass()


@pytest.fixture
def client(config_factory: Callable[..., Path], zk: ZK) -> Iterator[TestClient]:
    register_nodes(zk, None, *(node_record(n, memory=Memory(total=8192, free=6000, used=2192), cpu_count=8)
                               for n in ("hv1", "hv2", "hv3")))
    zk.put(schema.PRIMARY_NODE, "hv1")
    app = create_app(load_config(str(config_factory())), zk)
    with TestClient(app, headers={"X-Api-Key": API_TOKEN}) as test_client:
        yield test_client


@pytest.fixture
def nodes(zk: ZK, tmp_path: Path, client: TestClient) -> dict[str, Node]:
    """hv1: ens1f0 with 4 VFs (bus 3b), ens1f1 with 2 (bus 5e); hv2: ens1f0 with 2 VFs (bus 3b);
    hv3: no SR-IOV."""
    return {"hv1": Node(zk, tmp_path / "hv1", "hv1", {"ens1f0": {"bus": "3b", "numvfs": 4, "mtu": 9000},
                                                      "ens1f1": {"bus": "5e", "numvfs": 2}}),
            "hv2": Node(zk, tmp_path / "hv2", "hv2", {"ens1f0": {"bus": "3b", "numvfs": 2}})}


def dump(zk: ZK) -> dict[str, bytes]:
    return {path: raw for path, (raw, _ephemeral) in zk.walk("/").items()}


def vm_xml(name: str, nics: str, uuid: str | None = None) -> str:
    return (f"<domain type='kvm'><name>{name}</name><uuid>{uuid or uuidlib.uuid4()}</uuid>"
            f"<memory unit='MiB'>256</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>"
            f"<devices>{nics}</devices></domain>")


def macvtap(vf: str, mac: str = "52:54:00:aa:00:01") -> str:
    return (f"<interface type='direct'><mac address='{mac}'/><source dev='{vf}' mode='passthrough'/>"
            f"<model type='virtio'/></interface>")


def hostdev(vf: str, function: int, bus: str = "3b", mac: str = "52:54:00:aa:00:02") -> str:
    return (f"<interface type='hostdev' managed='yes'><mac address='{mac}'/><source><address type='pci' "
            f"domain='0x0000' bus='0x{bus}' slot='0x02' function='0x{function}'/></source>"
            f"<sriov_device>{vf}</sriov_device><model type='virtio'/></interface>")


def define(client: TestClient, name: str, nics: str, uuid: str | None = None, **params: Any) -> Any:
    """POST /vm of a VM with these NICs; the response."""
    return client.post("/api/v1/vm", params=params, data={"xml": vm_xml(name, nics, uuid)})


def vf_doc(zk: ZK, node: str, vf: str) -> dict[str, Any]:
    doc = zk.get(schema.node_sriov_vf(node, vf))
    assert isinstance(doc, dict)
    return doc


# -- routes and shapes -------------------------------------------------------------------------------------

def test_routes_match_upstreams_swagger(client: TestClient, nodes: dict[str, Node]) -> None:
    paths = ok(client.get("/api/v1/openapi.json"))["paths"]
    for path, methods in SRIOV_PATHS.items():
        assert set(paths["/api/v1" + path]) == methods, path
    ours = {p["name"] for p in paths["/api/v1/sriov/vf/{node}/{vf}"]["put"]["parameters"]}
    assert ours >= UPSTREAM_VF_PUT_QUERY
    assert client.get("/api/v1/sriov").json() is None           # upstream's placeholder

    pfs = ok(client.get("/api/v1/sriov/pf/hv1"))
    assert pfs == ok(client.get("/api/v1/sriov/pf", params={"node": "hv1"}))
    assert pfs == [{"phy": "ens1f0", "mtu": "9000", "vfs": [f"ens1f0v{i}" for i in range(4)]},
                   {"phy": "ens1f1", "mtu": "1500", "vfs": ["ens1f1v0", "ens1f1v1"]}]
    assert set(pfs[0]) == UPSTREAM_PF_KEYS

    vfs = ok(client.get("/api/v1/sriov/vf/hv1"))
    assert [v["phy"] for v in vfs] == [f"ens1f0v{i}" for i in range(4)] + ["ens1f1v0", "ens1f1v1"]
    assert [v["phy"] for v in ok(client.get("/api/v1/sriov/vf/hv1", params={"pf": "ens1f1"}))] == \
        ["ens1f1v0", "ens1f1v1"]
    assert ok(client.get("/api/v1/sriov/vf", params={"node": "hv1", "pf": "ens1f1"})) == vfs[4:]
    vf = ok(client.get("/api/v1/sriov/vf/hv1/ens1f0v2"))
    assert set(vf) >= UPSTREAM_VF_KEYS and set(vf) - UPSTREAM_VF_KEYS == {"pci"}
    assert set(vf["config"]) == set(UPSTREAM_VF_CONFIG)
    assert set(vf["usage"]) == UPSTREAM_VF_USAGE
    json_types = {"string": str, "boolean": bool, "integer": int}
    for key, kind in UPSTREAM_VF_CONFIG.items():
        assert isinstance(vf["config"][key], json_types[kind]), key
    assert isinstance(vf["mtu"], int) and vf["mtu"] == 9000 and vf["pf"] == "ens1f0"
    assert vf["pci"] == {"domain": "0000", "bus": "3b", "slot": "02", "function": "2"}
    assert vf["usage"] == {"used": False, "domain": ""}


def test_list_refusals(client: TestClient, nodes: dict[str, Node]) -> None:
    refused(client.get("/api/v1/sriov/pf"), 400, "node")
    refused(client.get("/api/v1/sriov/pf/hv9"), 400, "Specified node 'hv9' is invalid")
    refused(client.get("/api/v1/sriov/pf/hv3"), 404, "This node has no SR-IOV PFs.")
    refused(client.get("/api/v1/sriov/vf/hv3"), 404, "This node has no SR-IOV VFs.")
    refused(client.get("/api/v1/sriov/vf/hv1", params={"pf": "eth9"}), 404, "eth9")
    refused(client.get("/api/v1/sriov/vf/hv1/ens1f0v9"), 404, "ens1f0v9", "hv1")
    refused(client.get("/api/v1/sriov/vf/hv1/..%2F..%2Fconfig"), 404)


# -- VF settings -------------------------------------------------------------------------------------------

def test_put_validation_and_the_node_applying_it(client: TestClient, zk: ZK, nodes: dict[str, Node]) -> None:
    url = "/api/v1/sriov/vf/hv1/ens1f0v1"
    before = dump(zk)
    for params, words in (({}, ("No changes",)),
                          ({"vlan_id": 5000}, ("vlan_id", "4095")),
                          ({"vlan_id": "abc"}, ("vlan_id",)),
                          ({"vlan_qos": 9}, ("vlan_qos", "0..7")),
                          ({"vlan_qos": 3}, ("vlan_qos", "needs a vlan_id")),
                          ({"tx_rate_min": 500, "tx_rate_max": 100}, ("tx_rate_min", "above tx_rate_max")),
                          ({"link_state": "up"}, ("link_state", "up")),
                          ({"spoof_check": "maybe"}, ("spoof_check",)),
                          ({"trust": "x"}, ("trust",))):
        refused(client.put(url, params=params), 400, *words)
    refused(client.put("/api/v1/sriov/vf/hv1/ens1f0v9", params={"vlan_id": 1}), 404, "ens1f0v9")
    refused(client.put("/api/v1/sriov/vf/hv9/ens1f0v1", params={"vlan_id": 1}), 400, "hv9")
    assert dump(zk) == before

    applied = len(nodes["hv1"].netlink.calls)
    ok(client.put(url, params={"vlan_id": 100, "vlan_qos": 2, "tx_rate_max": 1000, "link_state": "enable",
                               "spoof_check": "false", "trust": "true"}))
    config = ok(client.get(url))["config"]
    assert config == {"vlan_id": "100", "vlan_qos": "2", "tx_rate_min": "0", "tx_rate_max": "1000",
                      "link_state": "enable", "spoof_check": False, "trust": True, "query_rss": False}
    nodes["hv1"].service.run_pass()          # what the VF document's watch wakes on the node
    assert nodes["hv1"].netlink.calls[applied:] == [("ens1f0", {
        "vf": 1, "vlan": {"vlan": 100, "qos": 2}, "rate": {"min_tx_rate": 0, "max_tx_rate": 1000},
        "spoofchk": 0, "link_state": 1, "trust": 1, "rss_query_en": 0})]
    ok(client.put(url, params={"query_rss": "true"}))      # only what is given changes
    assert ok(client.get(url))["config"]["vlan_id"] == "100"


# -- VMs on VFs --------------------------------------------------------------------------------------------

def test_one_vf_one_vm_and_release(client: TestClient, zk: ZK, nodes: dict[str, Node]) -> None:
    uuid = str(uuidlib.uuid4())
    ok(define(client, "vf1", macvtap("ens1f0v1"), uuid, node="hv1"))
    assert (vf_doc(zk, "hv1", "ens1f0v1")["used"], vf_doc(zk, "hv1", "ens1f0v1")["used_by"]) == (True, uuid)
    usage = ok(client.get("/api/v1/sriov/vf/hv1/ens1f0v1"))["usage"]
    assert usage == {"used": True, "domain": uuid}

    before = dump(zk)
    for nic in (macvtap("ens1f0v1", "52:54:00:bb:00:01"), hostdev("ens1f0v1", 1)):
        refused(define(client, "vf2", nic, node="hv1"), 400,
                "SR-IOV VF 'ens1f0v1'", "already used by VM 'vf1'")
    assert dump(zk) == before

    # a second NIC on another VF, then the first removed: its VF is free again
    xml2 = vm_xml("vf1", macvtap("ens1f0v1") + macvtap("ens1f0v2", "52:54:00:aa:00:03"), uuid)
    ok(client.put("/api/v1/vm/vf1", data={"xml": xml2}))
    assert vf_doc(zk, "hv1", "ens1f0v2")["used_by"] == uuid
    only_second = vm_xml("vf1", macvtap("ens1f0v2", "52:54:00:aa:00:03"), uuid)
    ok(client.put("/api/v1/vm/vf1", data={"xml": only_second}))
    freed = vf_doc(zk, "hv1", "ens1f0v1")
    assert (freed["used"], freed["used_by"], freed["mac"]) == (False, "", freed["phy_mac"])
    # another VM may take it now; removing vf1 frees ens1f0v2
    ok(define(client, "vf2", macvtap("ens1f0v1"), node="hv1"))
    ok(client.delete("/api/v1/vm/vf1"))
    assert vf_doc(zk, "hv1", "ens1f0v2")["used"] is False
    # the node's next pass keeps the claims the API wrote
    nodes["hv1"].service.run_pass()
    assert vf_doc(zk, "hv1", "ens1f0v1")["used"] is True


def test_policy_allows_managed_vfs_only(client: TestClient, zk: ZK, nodes: dict[str, Node]) -> None:
    before = dump(zk)
    refused(define(client, "x", macvtap("eth0"), node="hv1"), 400, "eth0")
    refused(client.post("/api/v1/vm", params={"node": "hv1"},
                        data={"xml": vm_xml("x", hostdev("ens9", 0, bus="99"))}), 400, "0000:99:02.0")
    # a VF of another node does not exist here
    refused(define(client, "x", macvtap("ens1f0v1"), node="hv3"),
            400, "SR-IOV VF 'ens1f0v1' does not exist on node 'hv3'")
    # a hostdev NIC whose PCI address is not the named VF's
    refused(client.post("/api/v1/vm", params={"node": "hv1"},
                        data={"xml": vm_xml("x", hostdev("ens1f0v0", 3))}), 400, "ens1f0v0", "0000:3b:02.3")
    assert dump(zk) == before
    # without a node, placement picks one that has the VF
    ok(client.post("/api/v1/vm", data={"xml": vm_xml("y", macvtap("ens1f1v0"))}))
    assert zk.get(schema.vm(vf_doc(zk, "hv1", "ens1f1v0")["used_by"]))["node"] == "hv1"


def _vm(zk: ZK, uuid: str) -> dict[str, Any]:
    doc = zk.get(schema.vm(uuid))
    assert isinstance(doc, dict)
    return doc


def test_hostdev_vm_does_not_migrate_live(client: TestClient, zk: ZK, nodes: dict[str, Node]) -> None:
    uuid = str(uuidlib.uuid4())
    ok(client.post("/api/v1/vm", params={"node": "hv1", "migration_method": "live"},
                   data={"xml": vm_xml("pt", hostdev("ens1f0v0", 0), uuid)}))
    assert _vm(zk, uuid)["migration_method"] == "shutdown"      # as upstream
    ok(client.post("/api/v1/vm/pt/state", params={"state": "start"}))
    before = dump(zk)
    migrate = {"action": "migrate", "node": "hv2"}
    refused(client.post("/api/v1/vm/pt/node", params={**migrate, "force_live": "true"}), 400,
            "pt", "ens1f0v0", "cannot be migrated live")
    ok(client.post("/api/v1/vm/pt/meta", params={"migration_method": "live"}))
    refused(client.post("/api/v1/vm/pt/node", params={"action": "migrate", "node": "hv2"}), 400,
            "cannot be migrated live", "migration method to shutdown")
    ok(client.post("/api/v1/vm/pt/meta", params={"migration_method": "shutdown"}))

    def vfs(tree: dict[str, bytes]) -> dict[str, bytes]:
        return {k: v for k, v in tree.items() if "sriov" in k}

    assert vfs(dump(zk)) == vfs(before)
    # shut down and moved: the VF usage moves to hv2's VF of that name, the XML follows
    ok(client.post("/api/v1/vm/pt/node", params={"action": "migrate", "node": "hv2"}))
    assert _vm(zk, uuid)["node"] == "hv2"
    assert vf_doc(zk, "hv2", "ens1f0v0")["used_by"] == uuid and vf_doc(zk, "hv1", "ens1f0v0")["used"] is False


def test_macvtap_vm_moves_to_a_free_vf_of_the_same_pf(client: TestClient, zk: ZK,
                                                      nodes: dict[str, Node]) -> None:
    taker = str(uuidlib.uuid4())
    ok(define(client, "other", macvtap("ens1f0v1"), taker, node="hv2"))
    uuid = str(uuidlib.uuid4())
    ok(define(client, "mv", macvtap("ens1f0v1"), uuid, node="hv1"))
    ok(client.post("/api/v1/vm/mv/state", params={"state": "start"}))
    # hv2's ens1f0v1 is taken: only ens1f0v0 is free there, and a live migration keeps the name
    refused(client.post("/api/v1/vm/mv/node", params={"action": "migrate", "node": "hv2"}), 400,
            "ens1f0v1", "ens1f0v0", "migration method to shutdown")
    # a PF the target lacks: refused naming the PF
    pf1 = str(uuidlib.uuid4())
    ok(define(client, "pf1", macvtap("ens1f1v0"), pf1, node="hv1"))
    refused(client.post("/api/v1/vm/pf1/node", params={"action": "move", "node": "hv2"}), 400,
            "no free SR-IOV VF on PF 'ens1f1'")
    # stopped, it moves: hv2's free VF is claimed, the XML rewritten, hv1's VF freed
    ok(client.post("/api/v1/vm/mv/state", params={"state": "stop"}))
    ok(client.post("/api/v1/vm/mv/node", params={"action": "move", "node": "hv2"}))
    record = _vm(zk, uuid)
    assert record["node"] == "hv2" and "dev=\"ens1f0v0\"" in record["xml"].replace("'", '"')
    assert vf_doc(zk, "hv2", "ens1f0v0")["used_by"] == uuid
    assert vf_doc(zk, "hv1", "ens1f0v1")["used"] is False
    assert vf_doc(zk, "hv2", "ens1f0v1")["used_by"] == taker


# -- the CLI against a running pvcapid -----------------------------------------------------------------------

from tests.integration.test_cli_api import Pvc, pvc  # noqa: E402,F401


def test_cli_sriov_commands(api: Any, pvc: Pvc, zk: ZK, tmp_path: Path) -> None:  # noqa: F811
    register_nodes(zk, api, node_record("hv1", memory=Memory(total=8192, free=6000, used=2192), cpu_count=8))
    Node(zk, tmp_path / "hv1", "hv1", {"ens1f0": {"bus": "3b", "numvfs": 2}})
    assert pvc.json("network", "sriov", "pf", "list", "hv1") == [
        {"phy": "ens1f0", "mtu": "1500", "vfs": ["ens1f0v0", "ens1f0v1"]}]
    listing = pvc.ok("network", "sriov", "vf", "list", "hv1")
    assert "ens1f0v0" in listing and "ens1f0v1" in listing
    assert "Successfully modified" in pvc.ok("network", "sriov", "vf", "set", "hv1", "ens1f0v1",
                                             "--vlan-id", "7", "--no-spoof-check", "--link-state", "disable")
    info = pvc.json("network", "sriov", "vf", "info", "hv1", "ens1f0v1")
    assert (info["config"]["vlan_id"], info["config"]["spoof_check"], info["config"]["link_state"]) == \
        ("7", False, "disable")
    bad = pvc("network", "sriov", "vf", "set", "hv1", "ens1f0v1", "--vlan-id", "5000")
    assert bad.returncode != 0 and "vlan_id" in bad.stderr + bad.stdout
    # a VM gets a VF with `vm network add --sriov`; the API records the claim, a second VM is refused
    uuid = str(uuidlib.uuid4())
    ok(api.post("/vm", params={"node": "hv1"}, data={"xml": vm_xml("cli1", "", uuid)}))
    pvc.ok("vm", "network", "add", "cli1", "ens1f0v0", "--sriov", "--sriov-mode", "hostdev", "-y")
    assert vf_doc(zk, "hv1", "ens1f0v0")["used_by"] == uuid
    ok(api.post("/vm", params={"node": "hv1"}, data={"xml": vm_xml("cli2", "")}))
    second = pvc("vm", "network", "add", "cli2", "ens1f0v0", "--sriov", "-y")
    assert second.returncode != 0 and "ens1f0v0" in second.stderr + second.stdout
    pvc.ok("vm", "network", "remove", "cli1", "ens1f0v0", "--sriov", "-y")
    assert vf_doc(zk, "hv1", "ens1f0v0")["used"] is False
