"""Network routes against a real ZooKeeper and the real `nft --check`, and the CLI against a real pvcapid.

Every route of pvc-facts §8.3 "Networks" is exercised in-process (create_app + TestClient). Every
refusal is checked to be a 400/404 whose message names the problem and which leaves ZooKeeper
exactly as it was (a dump of the whole cluster tree before and after). ACL rules go through a real
LinuxNftables inside a throwaway network namespace (`nft --check` applies nothing; the test checks
that too). The last test runs upstream's acceptance sequence for networks (pvc-facts §10 step 5)
with the `pvc` CLI as a subprocess against a running pvcapid.
"""

from __future__ import annotations

import subprocess
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pvc.adapters.network import LinuxNftables
from pvc.api.app import create_app
from pvc.api.routers.networks import get_nft
from pvc.cluster import state
from pvc.core import schema
from pvc.core.config import load_config
from pvc.core.records import Memory, VCpu, VMRecord
from pvc.core.zk import ZK
from tests.conftest import API_TOKEN, Api
from tests.integration.apihelp import ok, refused
from tests.integration.test_cli_api import Pvc, register

BASE = "/api/v1/network"
NETWORK_PATHS = {
    "/network": {"get", "post"},
    "/network/{vni}": {"get", "post", "put", "delete"},
    "/network/{vni}/lease": {"get", "post"},
    "/network/{vni}/lease/{mac}": {"get", "post", "delete"},
    "/network/{vni}/acl": {"get", "post"},
    "/network/{vni}/acl/{description}": {"get", "post", "delete"},
}
TESTING = {"vni": 10001, "description": "testing", "nettype": "managed", "domain": "testing.local",
           "ip4_network": "10.100.100.0/24", "ip4_gateway": "10.100.100.1", "dhcp4": "true",
           "dhcp4_start": "10.100.100.100", "dhcp4_end": "10.100.100.199"}


@pytest.fixture
def netns() -> Iterator[str]:
    """A throwaway network namespace for `nft --check` (never the root namespace's rules)."""
    name = f"pvcnet-{uuidlib.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def client(config_factory: Callable[..., Path], zk: ZK, netns: str) -> Iterator[TestClient]:
    app = create_app(load_config(str(config_factory())), zk)
    app.dependency_overrides[get_nft] = lambda: LinuxNftables(netns=netns)
    with TestClient(app, headers={"X-Api-Key": API_TOKEN}) as test_client:
        yield test_client



def dump(zk: ZK) -> dict[str, bytes]:
    """Every znode of the cluster (to prove that a refusal changed nothing)."""
    return {path: raw for path, (raw, _ephemeral) in zk.walk("/").items()}


def add_testing(client: TestClient, **changes: Any) -> None:
    ok(client.post(BASE, params={**TESTING, **changes}))


def define_vm(zk: ZK, name: str, bridge: str) -> VMRecord:
    """A stopped VM with one interface on `bridge`, as the API stores it."""
    uuid = str(uuidlib.uuid4())
    xml = (f"<domain type='kvm'><name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>256</memory>"
           f"<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices><interface type='bridge'>"
           f"<mac address='52:54:00:00:00:01'/><source bridge='{bridge}'/><model type='virtio'/></interface>"
           f"</devices></domain>")
    record = VMRecord(uuid=uuid, name=name, xml=xml, state="stop", node="hv1")
    zk.create(schema.vm(uuid), record.doc())
    zk.create(schema.vm_name(name), uuid)
    return record


# -- OpenAPI ---------------------------------------------------------------------------------------------

def test_openapi_documents_every_network_route(client: TestClient) -> None:
    paths = ok(client.get("/api/v1/openapi.json"))["paths"]
    for path, methods in NETWORK_PATHS.items():
        assert set(paths["/api/v1" + path]) == methods, path
    add = paths["/api/v1/network"]["post"]
    assert add["x-pvc-required-inputs"] == ["description", "nettype", "vni"]
    assert {"200", "400", "401", "503"} <= set(add["responses"])
    assert {"400", "404"} <= set(paths["/api/v1/network/{vni}"]["delete"]["responses"])
    listing = paths["/api/v1/network"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listing["items"]["$ref"].endswith("/Network")
    names = {p["name"] for p in paths["/api/v1/network/{vni}/acl"]["post"]["parameters"]}
    assert {"description", "direction", "order", "rule"} <= names


# -- networks ----------------------------------------------------------------------------------------------

def test_network_lifecycle(client: TestClient, zk: ZK) -> None:
    refused(client.get(BASE), 404, "Network not found.")
    assert ok(client.post(BASE, params=TESTING)) == {"message": "Network 'testing' added successfully!"}
    # the element route, with form fields as upstream's reqparse also reads them
    ok(client.post(f"{BASE}/101", data={"description": "vlan101", "nettype": "bridged", "mtu": "",
                                        "dhcp4": "False"}))
    ok(client.post(BASE, params={"vni": 7, "description": "six", "nettype": "managed",
                                 "ip6_network": "fd00:7::/64", "name_servers": ["10.0.0.53", "10.0.0.54"],
                                 "mtu": "1400"}))
    items = ok(client.get(BASE))
    assert [n["vni"] for n in items] == [7, 101, 10001]
    six, vlan, testing = items
    assert testing == {
        "vni": 10001, "description": "testing", "type": "managed", "mtu": "", "domain": "testing.local",
        "name_servers": [],
        "ip4": {"network": "10.100.100.0/24", "gateway": "10.100.100.1", "dhcp_flag": "True",
                "dhcp_start": "10.100.100.100", "dhcp_end": "10.100.100.199"},
        "ip6": {"network": "None", "gateway": "None", "dhcp_flag": "False"}}
    assert six["ip6"] == {"network": "fd00:7::/64", "gateway": "fd00:7::1", "dhcp_flag": "True"}
    assert six["name_servers"] == ["10.0.0.53", "10.0.0.54"] and six["mtu"] == "1400"
    assert six["domain"] == "six.local"
    assert vlan["type"] == "bridged" and vlan["domain"] == "" and vlan["mtu"] == ""
    assert zk.get(schema.network(101))["domain"] is None
    assert zk.get(schema.network_acls(10001)) == {"in": [], "out": []}
    assert zk.exists(schema.network_reservations(10001)) and zk.exists(schema.network_leases(10001))

    # element GETs: one-element arrays, by VNI or description
    assert ok(client.get(f"{BASE}/10001")) == [testing]
    assert ok(client.get(f"{BASE}/testing")) == [testing]
    refused(client.get(f"{BASE}/10002"), 404, "Network not found.")
    refused(client.get(f"{BASE}/nothing"), 404, "Network not found.")
    # list limits match the VNI or the description, fuzzily unless anchored
    assert [n["vni"] for n in ok(client.get(BASE, params={"limit": "10"}))] == [101, 10001]
    assert [n["vni"] for n in ok(client.get(BASE, params={"limit": "^vlan"}))] == [101]
    refused(client.get(BASE, params={"limit": "^1$"}), 404, "Network not found.")
    refused(client.get(BASE, params={"limit": "("}), 400, "limit:")
    assert ok(client.get("/api/v1/status"))["networks"] == 3

    # PUT changes only what is given ("" clears)
    ok(client.put(f"{BASE}/10001", params={"domain": "test10001.local"}))
    after = ok(client.get(f"{BASE}/10001"))[0]
    assert after == {**testing, "domain": "test10001.local"}
    ok(client.put(f"{BASE}/testing", data={"mtu": "1450", "name_servers": "10.100.100.1",
                                           "ip6_network": "fd00:10::/64"}))
    after = ok(client.get(f"{BASE}/10001"))[0]
    assert after["mtu"] == "1450" and after["name_servers"] == ["10.100.100.1"]
    assert after["ip6"] == {"network": "fd00:10::/64", "gateway": "fd00:10::1", "dhcp_flag": "True"}
    ok(client.put(f"{BASE}/10001", params={"mtu": "", "ip6_network": "", "dhcp4": "false"}))
    after = ok(client.get(f"{BASE}/10001"))[0]
    assert after["mtu"] == "" and after["ip6"]["network"] == "None" and after["ip4"]["dhcp_flag"] == "False"
    ok(client.put(f"{BASE}/10001", params={"description": "renamed"}))
    assert ok(client.get(f"{BASE}/renamed"))[0]["vni"] == 10001
    refused(client.put(f"{BASE}/10002", params={"mtu": "1400"}), 404, "Network '10002' not found")

    # DELETE takes everything with it
    zk.put(schema.network_lease(10001, "52:54:00:00:00:09"), {"mac_address": "52:54:00:00:00:09",
                                                              "ip4_address": "10.100.100.150", "expiry": 1})
    assert ok(client.delete(f"{BASE}/10001")) == {"message": "Network 'renamed' removed successfully!"}
    for path in (schema.network(10001), schema.network_acls(10001), schema.network_reservations(10001),
                 schema.network_leases(10001)):
        assert not zk.exists(path), path
    refused(client.delete(f"{BASE}/10001"), 404, "not found")
    ok(client.delete(f"{BASE}/vlan101"))
    assert [n["vni"] for n in ok(client.get(BASE))] == [7]


def _net(**changes: Any) -> dict[str, Any]:
    return {**TESTING, **changes}


BAD_ADDS: list[tuple[dict[str, Any], str]] = [
    (_net(vni=0), "vni: 0 is out of range"),
    (_net(vni=16777216), "vni: 16777216 is out of range"),
    (_net(vni="x"), "vni: 'x' is not an integer"),
    ({"vni": 5000, "description": "vlan", "nettype": "bridged"}, "vni: 5000 is out of range for a bridged "
                                                                 "network"),
    (_net(vni=200), "vni: a network with VNI 200 already exists"),
    (_net(description="existing"), "description: network 200 is already named 'existing'"),
    (_net(nettype="routed"), "nettype: 'routed' is not one of managed, bridged"),
    ({"vni": 5, "nettype": "managed"}, "description: required"),
    (_net(description="two words"), "description: 'two words' is not a valid name"),
    (_net(mtu="70000"), "mtu: 70000 is out of range"),
    (_net(domain="bad_domain"), "domain: 'bad_domain' is not a DNS domain name"),
    (_net(name_servers="ns.example.org"), "name_servers: 'ns.example.org' is not an IP address"),
    (_net(ip4_network="10.200.0.0/24", ip4_gateway="10.200.0.1", dhcp4="false", dhcp4_start="",
          dhcp4_end=""), "ip4_network: 10.200.0.0/24 overlaps 10.200.0.0/16 of network 200 ('existing')"),
    (_net(ip4_network="10.0.0.0/8", ip4_gateway="10.0.0.1", dhcp4="false", dhcp4_start="", dhcp4_end=""),
     "ip4_network: 10.0.0.0/8 overlaps 10.200.0.0/16 of network 200"),
    (_net(ip6_network="fd00:200::/64"), "ip6_network: fd00:200::/64 overlaps fd00:200::/64 of network 200"),
    (_net(ip4_network="10.100.100.7/24"), "ip4_network: '10.100.100.7/24' has host bits set"),
    (_net(ip4_gateway="10.100.101.1"), "ip4_gateway: 10.100.101.1 is not inside the network 10.100.100.0/24"),
    (_net(ip4_gateway="10.100.100.255"), "ip4_gateway: 10.100.100.255 is the broadcast address"),
    (_net(dhcp4_start="10.100.99.100"), "dhcp4_start: 10.100.99.100 is not inside the network "
                                        "10.100.100.0/24"),
    (_net(dhcp4_end="10.100.101.199"), "dhcp4_end: 10.100.101.199 is not inside the network 10.100.100.0/24"),
    (_net(dhcp4_start="10.100.100.200"), "dhcp4_end: 10.100.100.199 comes before dhcp4_start"),
    (_net(dhcp4_start="10.100.100.1"), "contains the gateway 10.100.100.1"),
    (_net(dhcp4_end=""), "dhcp4_end: DHCPv4 needs the start and end addresses"),
    (_net(dhcp4="perhaps"), "dhcp4: 'perhaps' is not a boolean"),
    (_net(ip6_network="fd00:1::/56"), "ip6_network: a /56 network is not allowed"),
    (_net(ip6_network="fd00:1::/64", ip6_gateway="fd00:2::1"),
     "ip6_gateway: fd00:2::1 is not inside the network"),
    ({"vni": 300, "description": "vlan300", "nettype": "bridged", "ip4_network": "10.3.0.0/24"},
     "ip4_network: bridged networks carry no IP, DHCP or DNS configuration"),
]


@pytest.mark.parametrize(("params", "words"), BAD_ADDS, ids=[w.split(":")[0] + f"-{i}" for i, (_p, w)
                                                              in enumerate(BAD_ADDS)])
def test_bad_network_changes_nothing(client: TestClient, zk: ZK, params: dict[str, Any], words: str) -> None:
    ok(client.post(BASE, params={"vni": 200, "description": "existing", "nettype": "managed",
                                 "ip4_network": "10.200.0.0/16", "ip4_gateway": "10.200.0.1",
                                 "ip6_network": "fd00:200::/64"}))
    before = dump(zk)
    refused(client.post(BASE, params=params), 400, words)
    assert dump(zk) == before


BAD_MODIFIES: list[tuple[dict[str, Any], str]] = [
    ({"nettype": "bridged"}, "nettype: a network's type cannot be changed"),
    ({"description": "existing"}, "description: network 200 is already named 'existing'"),
    ({"ip4_network": "10.200.1.0/24", "ip4_gateway": "10.200.1.1", "dhcp4_start": "10.200.1.10",
      "dhcp4_end": "10.200.1.20"}, "ip4_network: 10.200.1.0/24 overlaps 10.200.0.0/16 of network 200"),
    ({"ip4_network": "10.50.0.0/24"}, "ip4_gateway: 10.100.100.1 is not inside the network 10.50.0.0/24"),
    ({"ip4_gateway": "10.100.100.150"}, "contains the gateway 10.100.100.150"),
    ({"dhcp4_end": "10.100.101.5"}, "dhcp4_end: 10.100.101.5 is not inside the network"),
    ({"ip4_network": ""}, "ip4_network: network 10001 has DHCP reservations (52:54:00:aa:bb:cc)"),
    ({"ip4_network": "10.100.100.0/25", "dhcp4_start": "10.100.100.10", "dhcp4_end": "10.100.100.20"},
     "ip4_network: the DHCP reservation 52:54:00:aa:bb:cc (10.100.100.200) would be outside 10.100.100.0/25"),
    ({"ip6_gateway": "fd00::1"}, "ip6_gateway: needs an IPv6 network"),
    ({"mtu": "100"}, "mtu: 100 is out of range"),
    ({"domain": "x..y"}, "domain: 'x..y' is not a DNS domain name"),
    ({"dhcp4": "maybe"}, "dhcp4: 'maybe' is not a boolean"),
]


@pytest.mark.parametrize(("params", "words"), BAD_MODIFIES,
                         ids=[f"modify-{i}" for i in range(len(BAD_MODIFIES))])
def test_bad_modification_changes_nothing(client: TestClient, zk: ZK, params: dict[str, Any],
                                          words: str) -> None:
    ok(client.post(BASE, params={"vni": 200, "description": "existing", "nettype": "managed",
                                 "ip4_network": "10.200.0.0/16", "ip4_gateway": "10.200.0.1"}))
    add_testing(client)
    ok(client.post(f"{BASE}/10001/lease", params={"macaddress": "52:54:00:aa:bb:cc",
                                                  "ipaddress": "10.100.100.200"}))
    before = dump(zk)
    refused(client.put(f"{BASE}/10001", params=params), 400, words)
    assert dump(zk) == before


def test_remove_is_refused_while_vms_use_the_network(client: TestClient, zk: ZK) -> None:
    add_testing(client)
    web = define_vm(zk, "web1", "vmbr10001")
    define_vm(zk, "db1", "vmbr10001")
    define_vm(zk, "other", "vmbr100")
    before = dump(zk)
    refused(client.delete(f"{BASE}/10001"), 400,
            "Cannot remove network 10001: VMs 'db1', 'web1' have an interface on it (vmbr10001)")
    refused(client.delete(f"{BASE}/testing"), 400, "'web1'")
    assert dump(zk) == before
    zk.delete(schema.vm(web.uuid))
    refused(client.delete(f"{BASE}/10001"), 400, "VM 'db1' has an interface on it")
    for name in ("db1",):
        zk.delete(schema.vm(zk.get(schema.vm_name(name))))
    ok(client.delete(f"{BASE}/10001"))


# -- ACLs ----------------------------------------------------------------------------------------------------

def test_acls(client: TestClient, zk: ZK, netns: str) -> None:
    add_testing(client)
    acl = f"{BASE}/10001/acl"
    refused(client.get(acl), 404, "ACL not found.")
    ok(client.post(acl, params={"description": "ssh-in", "rule": "tcp dport 22 ct state new accept"}))
    ok(client.post(acl, params={"description": "web-in", "direction": "in", "order": 0,
                                "rule": "tcp dport { 80, 443 } accept"}))
    ok(client.post(acl, data={"description": "deny-in", "direction": "in", "order": 99, "rule": "drop"}))
    ok(client.post(f"{acl}/dns-out", params={"direction": "out", "rule": "udp dport 53 accept"}))
    ok(client.post(acl, params={"description": "mid", "order": "1", "rule": "'ip daddr 10.0.0.0/8 counter'"}))
    listed = ok(client.get(acl))
    assert [(a["direction"], a["order"], a["description"]) for a in listed] == [
        ("in", 0, "web-in"), ("in", 1, "mid"), ("in", 2, "ssh-in"), ("in", 3, "deny-in"),
        ("out", 0, "dns-out")]
    assert listed[1]["rule"] == "ip daddr 10.0.0.0/8 counter"
    assert listed[2]["rule"] == "tcp dport 22 ct state new accept"  # each rule's own text (§13.7)
    assert zk.get(schema.network_acls(10001))["out"] == [{"description": "dns-out",
                                                          "rule": "udp dport 53 accept"}]
    assert [a["description"] for a in ok(client.get(acl, params={"direction": "out"}))] == ["dns-out"]
    assert [a["description"] for a in ok(client.get(acl, params={"limit": "-in$"}))] == ["web-in", "ssh-in",
                                                                                         "deny-in"]
    assert ok(client.get(f"{acl}/ssh-in")) == [{"direction": "in", "order": 2, "description": "ssh-in",
                                                "rule": "tcp dport 22 ct state new accept"}]
    assert ok(client.get(f"{BASE}/testing/acl/dns-out"))[0]["direction"] == "out"
    refused(client.get(f"{acl}/nothing"), 404, "ACL 'nothing' not found")

    before = dump(zk)
    for params, status, words in [
        ({"description": "ssh-in", "direction": "out", "rule": "accept"}, 400,
         "description: network 10001 already has a rule 'ssh-in' (in)"),
        ({"description": "x", "direction": "sideways", "rule": "accept"}, 400,
         "direction: 'sideways' is not one of in, out"),
        ({"description": "x", "direction": "", "rule": "accept"}, 400, "direction:"),
        ({"description": "x", "rule": "accept", "order": "-1"}, 400, "order:"),
        ({"description": "bad name", "rule": "accept"}, 400, "description: 'bad name' is not a valid name"),
        ({"description": "x"}, 400, "rule: required"),
        ({"description": "x", "rule": "ip daddr 10.0.0.0/8 countr"}, 400, "Error: syntax error"),
        ({"description": "x", "rule": "tcp dport 22 acept"}, 400,
         "rule: nft refuses the rule 'tcp dport 22 acept'"),
        ({"description": "x", "rule": "accept; flush ruleset"}, 400, "rule: the rule must be one rule"),
        ({"description": "x", "rule": "accept\n}\ntable inet evil {"}, 400,
         "rule: the rule must be one line"),
        ({"description": "x", "rule": "} chain x { accept"}, 400, "rule: the rule closes a '}'"),
        ({"description": "x", "rule": "   "}, 400, "rule: the rule is empty"),
    ]:
        refused(client.post(acl, params=params), status, words)
    message = refused(client.post(acl, params={"description": "x", "rule": "ip daddr 10.0.0.0/8 countr"}),
                      400)
    assert message.startswith("rule: nft refuses the rule 'ip daddr 10.0.0.0/8 countr': ")
    refused(client.post(f"{BASE}/10002/acl", params={"description": "x", "rule": "accept"}), 404, "not found")
    ok(client.post(f"{BASE}/101", params={"description": "vlan101", "nettype": "bridged"}))
    before_bridged = dump(zk)
    refused(client.post(f"{BASE}/101/acl", params={"description": "x", "rule": "accept"}), 400,
            "Network 101 is a bridged network: PVC manages no firewall rules on it")
    assert dump(zk) == before_bridged
    ok(client.delete(f"{BASE}/101"))
    assert dump(zk) == before
    # nft --check applied nothing in its namespace
    tables = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "tables"], capture_output=True,
                            text=True, check=True).stdout
    assert tables.strip() == ""

    # removal renumbers
    ok(client.delete(f"{acl}/mid"))
    refused(client.delete(f"{acl}/mid"), 404, "No firewall rule exists matching description 'mid'")
    assert [(a["order"], a["description"]) for a in ok(client.get(acl, params={"direction": "in"}))] == [
        (0, "web-in"), (1, "ssh-in"), (2, "deny-in")]


# -- DHCP reservations and leases ----------------------------------------------------------------------------

def test_reservations_and_leases(client: TestClient, zk: ZK) -> None:
    add_testing(client)
    lease = f"{BASE}/10001/lease"
    refused(client.get(lease), 404, "Lease not found.")
    assert ok(client.post(lease, params={"macaddress": "12:34:56:78:90:AB", "ipaddress": "10.100.100.200",
                                         "hostname": "test99"})) == {
        "message": "DHCP reservation '12:34:56:78:90:ab' added successfully!"}
    ok(client.post(f"{lease}/52-54-00-00-00-02", data={"ipaddress": "10.100.100.201"}))
    assert zk.get(schema.network_reservation(10001, "12:34:56:78:90:ab")) == {
        "mac_address": "12:34:56:78:90:ab", "ip4_address": "10.100.100.200", "hostname": "test99"}
    # a dynamic lease as the primary's dnsmasq hook writes it
    zk.put(schema.network_lease(10001, "52:54:00:00:00:03"), {
        "mac_address": "52:54:00:00:00:03", "ip4_address": "10.100.100.150", "hostname": "dyn1",
        "clientid": "*", "expiry": 1700003600, "timestamp": 1700000000})
    assert ok(client.get(lease)) == [
        {"hostname": "test99", "ip4_address": "10.100.100.200", "mac_address": "12:34:56:78:90:ab",
         "timestamp": "static"},
        {"hostname": "", "ip4_address": "10.100.100.201", "mac_address": "52:54:00:00:00:02",
         "timestamp": "static"},
        {"hostname": "dyn1", "ip4_address": "10.100.100.150", "mac_address": "52:54:00:00:00:03",
         "timestamp": 1700003600}]
    assert [x["mac_address"] for x in ok(client.get(lease, params={"static": "true"}))] == [
        "12:34:56:78:90:ab", "52:54:00:00:00:02"]
    assert [x["mac_address"] for x in ok(client.get(lease, params={"limit": "dyn"}))] == ["52:54:00:00:00:03"]
    assert ok(client.get(f"{lease}/12:34:56:78:90:AB"))[0]["hostname"] == "test99"
    assert ok(client.get(f"{BASE}/testing/lease/52:54:00:00:00:03"))[0]["timestamp"] == 1700003600
    refused(client.get(f"{lease}/52:54:00:00:00:09"), 404, "not found")

    before = dump(zk)
    for params, words in [
        ({"macaddress": "12:34:56:78:90", "ipaddress": "10.100.100.210"},
         "macaddress: '12:34:56:78:90' is not a MAC address"),
        ({"macaddress": "ff:ff:ff:ff:ff:ff", "ipaddress": "10.100.100.210"}, "is the broadcast address"),
        ({"macaddress": "01:00:5e:00:00:01", "ipaddress": "10.100.100.210"}, "is a multicast address"),
        ({"macaddress": "52:54:00:00:00:10", "ipaddress": "10.100.100.300"},
         "ipaddress: '10.100.100.300' is not an IPv4 address"),
        ({"macaddress": "52:54:00:00:00:10", "ipaddress": "10.100.101.5"},
         "ipaddress: 10.100.101.5 is not inside the network 10.100.100.0/24"),
        ({"macaddress": "52:54:00:00:00:10", "ipaddress": "10.100.100.255"}, "is the broadcast address"),
        ({"macaddress": "52:54:00:00:00:10", "ipaddress": "10.100.100.0"}, "is the network address"),
        ({"macaddress": "52:54:00:00:00:10", "ipaddress": "10.100.100.1"}, "is the gateway of network 10001"),
        ({"macaddress": "52:54:00:00:00:10", "ipaddress": "fd00::5"}, "is not an IPv4 address"),
        ({"macaddress": "52:54:00:00:00:10", "ipaddress": "10.100.100.200"},
         "ipaddress: 10.100.100.200 is already reserved for 12:34:56:78:90:ab"),
        ({"macaddress": "12:34:56:78:90:ab", "ipaddress": "10.100.100.210"},
         "macaddress: a reservation with MAC '12:34:56:78:90:ab' already exists"),
        ({"macaddress": "52:54:00:00:00:10", "ipaddress": "10.100.100.210", "hostname": "bad_host"},
         "hostname: 'bad_host' is not a host name"),
        ({"ipaddress": "10.100.100.210"}, "macaddress: required"),
    ]:
        refused(client.post(lease, params=params), 400, words)
    refused(client.post(f"{lease}/52:54:00:00:00:11", params={"ipaddress": "10.100.100.211",
                                                              "macaddress": "52:54:00:00:00:12"}), 400,
            "macaddress: '52:54:00:00:00:12' is not the MAC address in the path")
    refused(client.post(f"{BASE}/10002/lease", params={"macaddress": "52:54:00:00:00:10",
                                                       "ipaddress": "10.100.100.210"}), 404, "not found")
    assert dump(zk) == before
    ok(client.post(BASE, params={"vni": 8, "description": "l2only", "nettype": "managed"}))
    ok(client.post(f"{BASE}/9", params={"description": "vlan9", "nettype": "bridged"}))
    before = dump(zk)
    stray = {"macaddress": "52:54:00:00:00:10", "ipaddress": "10.0.0.5"}
    refused(client.post(f"{BASE}/8/lease", params=stray), 400,
            "Network 8 has no IPv4 network: DHCP reservations need one")
    refused(client.post(f"{BASE}/9/lease", params=stray), 400, "Network 9 is a bridged network")
    assert dump(zk) == before

    # removal matches the MAC, host name or address; reservations first, then dynamic leases
    assert ok(client.delete(f"{lease}/test99")) == {
        "message": "DHCP static reservation '12:34:56:78:90:ab' removed successfully!"}
    assert ok(client.delete(f"{lease}/10.100.100.150")) == {
        "message": "DHCP dynamic lease '52:54:00:00:00:03' removed successfully!"}
    assert not zk.exists(schema.network_lease(10001, "52:54:00:00:00:03"))
    refused(client.delete(f"{lease}/test99"), 404, "No DHCP reservation or lease exists matching 'test99'")
    ok(client.delete(f"{lease}/52:54:00:00:00:02"))
    refused(client.get(lease), 404, "Lease not found.")


# -- the CLI against a running pvcapid (pvc-facts §10 step 5) -----------------------------------------------

@pytest.fixture
def pvc(api: Api, tmp_path: Path) -> Pvc:
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    config = client_dir / "pvc.conf"
    config.write_text(api.daemon.config.read_text())  # the API's own file: the implicit "local" connection
    return Pvc(client_dir, config)


VM_XML = """<domain type="kvm">
  <name>testx</name>
  <uuid>0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0</uuid>
  <memory unit="MiB">512</memory>
  <vcpu>1</vcpu>
  <os><type arch="x86_64" machine="pc">hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>
"""


def test_acceptance_sequence_through_the_cli(pvc: Pvc, zk: ZK, tmp_path: Path) -> None:
    state.ensure_cluster(zk, "test")
    big = {"cpu_count": 16, "memory": Memory(total=65536, used=2048, free=63488, allocated=0, provisioned=0),
           "vcpu": VCpu(total=16, allocated=0)}
    register(zk, "hv1", coordinator_state="primary", **big)
    zk.put(schema.PRIMARY_NODE, "hv1")
    xml = tmp_path / "testx.xml"
    xml.write_text(VM_XML)
    pvc.ok("-q", "vm", "define", str(xml), "--node", "hv1")

    def run(*args: str) -> str:
        return pvc.ok("--quiet", *args)

    missing = pvc("-q", "vm", "network", "add", "testx", "10001", "-y")
    assert missing.returncode == 1 and "Network 10001 does not exist" in missing.stderr

    out = run("network", "add", "10001", "--description", "testing", "--type", "managed", "--domain",
              "testing.local", "--ipnet", "10.100.100.0/24", "--gateway", "10.100.100.1", "--dhcp",
              "--dhcp-start", "10.100.100.100", "--dhcp-end", "10.100.100.199")
    assert out.strip() == "Network 'testing' added successfully!"
    run("vm", "network", "add", "--restart", "--yes", "testx", "10001")
    busy = pvc("-q", "network", "remove", "--yes", "10001")
    assert busy.returncode == 1 and "VM 'testx' has an interface on it" in busy.stderr
    run("vm", "network", "remove", "--restart", "--yes", "testx", "10001")
    run("network", "acl", "add", "10001", "--in", "--description", "test-acl", "--order", "0", "--rule",
        "'ip daddr 10.0.0.0/8 counter'")
    listed = run("network", "acl", "list", "10001")
    assert listed.splitlines()[1].split() == ["in", "0", "test-acl", "ip", "daddr", "10.0.0.0/8", "counter"]
    bad = pvc("-q", "network", "acl", "add", "10001", "--out", "-d", "bad", "-r",
              "ip daddr 10.0.0.0/8 countr")
    assert bad.returncode == 1 and "syntax error" in bad.stderr
    run("network", "acl", "remove", "--yes", "10001", "test-acl")
    assert run("network", "acl", "list", "10001").strip() == "No ACLs found."
    run("network", "dhcp", "add", "10001", "10.100.100.200", "test99", "12:34:56:78:90:ab")
    leases = run("network", "dhcp", "list", "10001")
    assert leases.splitlines()[1].split() == ["test99", "10.100.100.200", "12:34:56:78:90:ab", "static"]
    bad = pvc("-q", "network", "dhcp", "add", "10001", "10.100.101.200", "test98", "12:34:56:78:90:ac")
    assert bad.returncode == 1 and "not inside the network 10.100.100.0/24" in bad.stderr
    run("network", "dhcp", "remove", "--yes", "10001", "12:34:56:78:90:ab")
    run("network", "modify", "--domain", "test10001.local", "10001")
    table = run("network", "list")
    assert table.splitlines()[1].split() == ["10001", "testing", "managed", "default", "test10001.local",
                                             "False", "False", "True", "True"]
    info = run("network", "info", "--format", "long", "10001")
    assert "test10001.local" in info and "10.100.100.100 - 10.100.100.199" in info
    assert "No ACLs found." in info
    assert pvc.json("network", "info", "10001")["ip4"]["gateway"] == "10.100.100.1"
    run("vm", "network", "add", "testx", "10001", "--model", "virtio", "--restart", "--yes")
    assert run("vm", "network", "get", "testx", "-f", "raw").strip() == "10001"
    run("vm", "network", "remove", "testx", "10001", "--restart", "--yes")
    assert run("network", "remove", "--yes", "10001").strip() == "Network 'testing' removed successfully!"
    assert pvc.json("network", "list") == []
    assert not zk.exists(schema.network_acls(10001))
