"""Pure network logic (pvc.cluster.networks): every validation of a network document, of DHCP
reservations and ACL rules, the merge of a modification, overlap checks; and the `pvc network`
CLI's formatters and requests (against a scripted API).

Hypothesis drives the subnet arithmetic (gateway and DHCP range inside the subnet, overlaps)
against a straightforward integer model of the same rules.
"""

# ruff: noqa: F811 - the fixtures imported from test_cli_flows are (by pytest's design) re-bound as arguments

from __future__ import annotations

import ipaddress
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvc.adapters.network import NetworkError
from pvc.cli.commands import network as netcli
from pvc.cli.output import render
from pvc.cluster import networks as nets
from pvc.core import netconfig
from pvc.core.errors import Conflict, InvalidInput, PVCError
from tests.unit.test_cli_flows import FakeApi, api, env, no_sleep  # noqa: F401
from tests.unit.test_cli_flows import pvc as cli_run

MANAGED = {"vni": 10001, "description": "testing", "nettype": "managed", "domain": "testing.local",
           "ip4_network": "10.100.100.0/24", "ip4_gateway": "10.100.100.1", "dhcp4": True,
           "dhcp4_start": "10.100.100.100", "dhcp4_end": "10.100.100.199"}


def doc(**changes: Any) -> dict[str, Any]:
    return nets.network_doc({**MANAGED, **changes})


def refused(exc_type: type[PVCError], *words: str, **changes: Any) -> str:
    with pytest.raises(exc_type) as info:
        doc(**changes)
    for word in words:
        assert word in info.value.message, info.value.message
    return info.value.message


# -- network documents -----------------------------------------------------------------------------------

def test_managed_document_is_the_api_item() -> None:
    assert doc(mtu="") == {
        "vni": 10001, "description": "testing", "type": "managed", "mtu": None, "domain": "testing.local",
        "name_servers": [],
        "ip4": {"network": "10.100.100.0/24", "gateway": "10.100.100.1", "dhcp_flag": True,
                "dhcp_start": "10.100.100.100", "dhcp_end": "10.100.100.199"},
        "ip6": {"network": None, "gateway": None, "dhcp_flag": False},
    }
    netconfig.NetSpec.from_doc(doc())  # what every node parses


def test_upstream_defaults() -> None:
    assert doc(domain=None)["domain"] == "testing.local"
    assert doc(description="My_Net", domain="")["domain"] == "my-net.local"
    six = doc(ip6_network="fd00:100::/64")["ip6"]
    assert six == {"network": "fd00:100::/64", "gateway": "fd00:100::1", "dhcp_flag": True}
    assert doc(ip6_network="fd00:100::/64", ip6_gateway="fd00:100::fe")["ip6"]["gateway"] == "fd00:100::fe"
    assert doc(mtu="1400")["mtu"] == 1400 and doc(mtu=9000)["mtu"] == 9000
    assert doc(name_servers=["10.0.0.53,10.0.0.54", "10.0.0.53", " "])["name_servers"] == ["10.0.0.53",
                                                                                          "10.0.0.54"]
    assert doc(domain="Example.ORG.")["domain"] == "example.org"


def test_layer2_only_managed_network() -> None:
    net = nets.network_doc({"vni": 7, "description": "l2", "nettype": "managed", "dhcp4": "False", "mtu": ""})
    assert net["ip4"]["network"] is None and net["ip6"]["network"] is None and net["domain"] == "l2.local"


def test_bridged_network_accepts_what_upstreams_cli_sends_and_nothing_more() -> None:
    net = nets.network_doc({"vni": 101, "description": "br", "nettype": "bridged", "mtu": "",
                            "dhcp4": "False", "name_servers": [], "domain": None})
    assert net["type"] == "bridged" and net["domain"] is None and net["ip4"]["network"] is None
    for field, value in (("domain", "x.local"), ("name_servers", ["10.0.0.1"]),
                         ("ip4_network", "10.0.0.0/24"), ("ip4_gateway", "10.0.0.1"), ("dhcp4", True),
                         ("dhcp4_start", "10.0.0.9"),
                         ("ip6_network", "fd00::/64"), ("ip6_gateway", "fd00::1")):
        with pytest.raises(InvalidInput) as info:
            nets.network_doc({"vni": 101, "description": "br", "nettype": "bridged", field: value})
        assert info.value.message.startswith(f"{field}: bridged networks carry no")


@pytest.mark.parametrize(("changes", "start"), [
    ({"vni": 0}, "vni: 0 is out of range"),
    ({"vni": 16777216}, "vni: 16777216 is out of range"),
    ({"vni": "abc"}, "vni: 'abc' is not a VNI"),
    ({"vni": "-5"}, "vni: '-5' is not a VNI"),
    ({"vni": None}, "vni: a VNI is required"),
    ({"nettype": "routed"}, "nettype: 'routed' is not one of managed, bridged"),
    ({"description": ""}, "description: a description is required"),
    ({"description": "my net"}, "description: 'my net' is not a valid name"),
    ({"description": "a/b"}, "description: 'a/b' is not a valid name"),
    ({"description": "1234"}, "description: '1234' may not be only digits"),
    ({"mtu": "575"}, "mtu: 575 is out of range (576..9000)"),
    ({"mtu": "9001"}, "mtu: 9001 is out of range"),
    ({"mtu": "big"}, "mtu: 'big' is not an MTU"),
    ({"domain": "bad_domain.local"}, "domain: 'bad_domain.local' is not a DNS domain name"),
    ({"domain": "-x.local"}, "domain: '-x.local' is not a DNS domain name"),
    ({"domain": "a" * 64 + ".local"}, "is not a DNS domain name"),
    ({"name_servers": ["ns1.example.org"]}, "name_servers: 'ns1.example.org' is not an IP address"),
    ({"ip4_network": "10.100.100.1/24"}, "ip4_network: '10.100.100.1/24' has host bits set; the network is "
                                         "'10.100.100.0/24'"),
    ({"ip4_network": "10.100.100.0"}, "ip4_network: '10.100.100.0' is not a network in CIDR form"),
    ({"ip4_network": "10.100.300.0/24"}, "ip4_network: '10.100.300.0/24' is not a network in CIDR form"),
    ({"ip4_network": "fd00::/64"}, "ip4_network: 'fd00::/64' is not an IPv4 network"),
    ({"ip4_network": "10.0.0.0/7", "ip4_gateway": "10.0.0.1"}, "ip4_network: a /7 network is not allowed"),
    ({"ip4_network": "10.100.100.0/31"}, "ip4_network: a /31 network is not allowed"),
    ({"ip4_gateway": "10.100.101.1"}, "ip4_gateway: 10.100.101.1 is not inside the network 10.100.100.0/24"),
    ({"ip4_gateway": "10.100.100.0"}, "ip4_gateway: 10.100.100.0 is the network address"),
    ({"ip4_gateway": "10.100.100.255"}, "ip4_gateway: 10.100.100.255 is the broadcast address"),
    ({"ip4_gateway": "fd00::1"}, "ip4_gateway: 'fd00::1' is not an IPv4 address"),
    ({"ip4_gateway": None}, "ip4_gateway: a managed network with an IPv4 network needs its gateway"),
    ({"ip4_network": None, "dhcp4": False, "dhcp4_start": None, "dhcp4_end": None},
     "ip4_gateway: needs an IPv4 network"),
    ({"ip4_network": None, "ip4_gateway": None, "dhcp4_start": None, "dhcp4_end": None},
     "dhcp4: DHCPv4 needs an IPv4 network"),
    ({"dhcp4_start": None}, "dhcp4_start: DHCPv4 needs the start and end"),
    ({"dhcp4_end": ""}, "dhcp4_end: DHCPv4 needs the start and end"),
    ({"dhcp4_start": "10.100.99.100"}, "dhcp4_start: 10.100.99.100 is not inside the network"),
    ({"dhcp4_end": "10.100.101.10"}, "dhcp4_end: 10.100.101.10 is not inside the network"),
    ({"dhcp4_end": "10.100.100.255"}, "dhcp4_end: 10.100.100.255 is the broadcast address"),
    ({"dhcp4_start": "10.100.100.200"}, "dhcp4_end: 10.100.100.199 comes before dhcp4_start 10.100.100.200"),
    ({"dhcp4_start": "10.100.100.1"}, "dhcp4_start, dhcp4_end: the range 10.100.100.1 - 10.100.100.199 "
                                      "contains the gateway 10.100.100.1"),
    ({"dhcp4": "maybe"}, "dhcp4: 'maybe' is not a boolean"),
    ({"ip6_network": "fd00:100::/48"}, "ip6_network: a /48 network is not allowed: DHCPv6 and router "
                                       "advertisements"),
    ({"ip6_network": "fd00:100::1/64"}, "ip6_network: 'fd00:100::1/64' has host bits set"),
    ({"ip6_network": "10.0.0.0/24"}, "ip6_network: '10.0.0.0/24' is not an IPv6 network"),
    ({"ip6_network": "fd00:100::/64", "ip6_gateway": "fd00:101::1"},
     "ip6_gateway: fd00:101::1 is not inside the network fd00:100::/64"),
    ({"ip6_network": "fd00:100::/64", "ip6_gateway": "fd00:100::"}, "ip6_gateway: fd00:100:: is the network "
                                                                   "address"),
    ({"ip6_gateway": "fd00::1"}, "ip6_gateway: needs an IPv6 network"),
])
def test_bad_input_is_refused_naming_the_field(changes: dict[str, Any], start: str) -> None:
    message = refused(InvalidInput, **changes)
    assert message.startswith(start) or start in message, message


def test_bridged_vni_is_a_vlan_id() -> None:
    with pytest.raises(InvalidInput, match=r"vni: 4095 is out of range for a bridged network: its VNI is the "
                                           r"802.1Q VLAN id, 1..4094"):
        nets.network_doc({"vni": 4095, "description": "br", "nettype": "bridged"})
    assert nets.network_doc({"vni": 4094, "description": "br", "nettype": "bridged"})["vni"] == 4094


# -- modifications -------------------------------------------------------------------------------------------

def test_merge_changes_only_given_fields() -> None:
    current = doc(ip6_network="fd00:1::/64")
    assert nets.network_doc(nets.merge_changes(current, {"domain": "test10001.local"})) == {
        **current, "domain": "test10001.local"}
    assert nets.network_doc(nets.merge_changes(current, {"mtu": None, "description": None})) == current
    assert nets.network_doc(nets.merge_changes(current, {"mtu": "1400"}))["mtu"] == 1400
    assert nets.network_doc(nets.merge_changes({**current, "mtu": 1400}, {"mtu": ""}))["mtu"] is None
    assert nets.network_doc(nets.merge_changes(current, {"domain": ""}))["domain"] == "testing.local"
    assert nets.network_doc(nets.merge_changes(current, {"name_servers": [""]}))["name_servers"] == []


def test_clearing_a_network_clears_what_depends_on_it() -> None:
    current = doc(ip6_network="fd00:1::/64")
    cleared = nets.network_doc(nets.merge_changes(current, {"ip4_network": ""}))
    assert cleared["ip4"] == {"network": None, "gateway": None, "dhcp_flag": False, "dhcp_start": None,
                              "dhcp_end": None}
    assert nets.network_doc(nets.merge_changes(current, {"ip6_network": ""}))["ip6"] == {
        "network": None, "gateway": None, "dhcp_flag": False}
    moved = nets.network_doc(nets.merge_changes(current, {"ip6_network": "fd00:2::/64"}))
    assert moved["ip6"]["gateway"] == "fd00:2::1"
    with pytest.raises(InvalidInput, match="dhcp4: DHCPv4 needs an IPv4 network"):
        nets.network_doc(nets.merge_changes(current, {"ip4_network": "", "dhcp4": True}))


def test_moving_the_subnet_checks_the_old_gateway_and_range() -> None:
    current = doc()
    with pytest.raises(InvalidInput, match=r"ip4_gateway: 10\.100\.100\.1 is not inside the network "
                                           r"10\.1\.0\.0/24"):
        nets.network_doc(nets.merge_changes(current, {"ip4_network": "10.1.0.0/24"}))
    moved = nets.network_doc(nets.merge_changes(current, {
        "ip4_network": "10.1.0.0/24", "ip4_gateway": "10.1.0.1", "dhcp4_start": "10.1.0.10",
        "dhcp4_end": "10.1.0.20"}))
    assert moved["ip4"]["network"] == "10.1.0.0/24"


def test_type_and_vni_cannot_change() -> None:
    with pytest.raises(InvalidInput, match="nettype: a network's type cannot be changed"):
        nets.merge_changes(doc(), {"nettype": "bridged"})
    assert nets.merge_changes(doc(), {"nettype": "managed"})["nettype"] == "managed"
    with pytest.raises(InvalidInput, match="vni: a network's VNI cannot be changed"):
        nets.merge_changes(doc(), {"vni": "7"})


# -- the cluster: uniqueness and overlaps ------------------------------------------------------------------

def test_cluster_clashes_name_the_other_network() -> None:
    other = doc(vni=200, description="other", ip4_network="10.100.0.0/16", ip4_gateway="10.100.0.1",
                dhcp4=False, dhcp4_start=None, dhcp4_end=None, ip6_network="fd00:1::/64")
    with pytest.raises(Conflict, match=r"ip4_network: 10.100.100.0/24 overlaps 10.100.0.0/16 of network 200 "
                                       r"\(\"other\"\)"):
        nets.check_cluster(doc(), [other])
    mine = doc(ip4_network="10.200.0.0/24", ip4_gateway="10.200.0.1", dhcp4=False, dhcp4_start=None,
               dhcp4_end=None, ip6_network="fd00:1::/64")
    with pytest.raises(Conflict, match=r"ip6_network: fd00:1::/64 overlaps fd00:1::/64 of network 200"):
        nets.check_cluster(mine, [other])
    with pytest.raises(Conflict, match=r"vni: a network with VNI 200 already exists"):
        nets.check_cluster({**mine, "vni": 200}, [other])
    with pytest.raises(Conflict, match=r"description: network 200 is already named \"other\""):
        nets.check_cluster({**doc(ip4_network=None, ip4_gateway=None, dhcp4=False, dhcp4_start=None,
                                  dhcp4_end=None), "description": "Other"}, [other])
    neighbour = doc(vni=5, description="five", ip4_network="10.100.101.0/24", ip4_gateway="10.100.101.1",
                    dhcp4=False, dhcp4_start=None, dhcp4_end=None)
    nets.check_cluster(doc(), [neighbour])


@given(st.integers(8, 30), st.integers(0, 2**32 - 1), st.integers(8, 30), st.integers(0, 2**32 - 1))
def test_overlap_matches_interval_arithmetic(len_a: int, addr_a: int, len_b: int, addr_b: int) -> None:
    net_a = ipaddress.ip_network((addr_a, len_a), strict=False)
    net_b = ipaddress.ip_network((addr_b, len_b), strict=False)
    a = {"vni": 1, "description": "a", "ip4": {"network": str(net_a)}}
    b = {"vni": 2, "description": "b", "ip4": {"network": str(net_b)}}
    lo_a, hi_a = int(net_a.network_address), int(net_a.broadcast_address)
    lo_b, hi_b = int(net_b.network_address), int(net_b.broadcast_address)
    overlap = lo_a <= hi_b and lo_b <= hi_a
    if overlap:
        with pytest.raises(Conflict, match="overlaps"):
            nets.check_cluster(a, [b])
    else:
        nets.check_cluster(a, [b])


@st.composite
def subnet_and_addresses(draw: st.DrawFn) -> tuple[ipaddress.IPv4Network, int, int, int]:
    prefix = draw(st.integers(22, 30))
    net = ipaddress.ip_network((draw(st.integers(0, 2**32 - 1)), prefix), strict=False)
    base, size = int(net.network_address), net.num_addresses
    pick = st.integers(base - 2, base + size + 1).filter(lambda x: 0 <= x < 2**32)
    return net, draw(pick), draw(pick), draw(pick)


@given(subnet_and_addresses())
def test_gateway_and_range_rules_match_an_integer_model(case: tuple[ipaddress.IPv4Network, int, int, int]
                                                        ) -> None:
    net, gateway, start, end = case
    lo, hi = int(net.network_address), int(net.broadcast_address)

    def host(x: int) -> bool:
        return lo < x < hi

    expect_ok = host(gateway) and host(start) and host(end) and start <= end and not start <= gateway <= end
    values = {"vni": 9, "description": "prop", "nettype": "managed", "ip4_network": str(net),
              "ip4_gateway": str(ipaddress.ip_address(gateway)), "dhcp4": True,
              "dhcp4_start": str(ipaddress.ip_address(start)), "dhcp4_end": str(ipaddress.ip_address(end))}
    try:
        result = nets.network_doc(values)
    except InvalidInput as exc:
        assert not expect_ok, exc.message
        fields = ("ip4_gateway", "dhcp4_start", "dhcp4_end", "dhcp4_start, dhcp4_end")
        assert exc.message.split(":")[0] in fields
    else:
        assert expect_ok
        assert netconfig.NetSpec.from_doc(result).dhcp4_start == str(ipaddress.ip_address(start))


# -- reservations, leases, ACLs ----------------------------------------------------------------------------

@pytest.mark.parametrize(("mac", "normal"), [("52:54:00:AB:cd:01", "52:54:00:ab:cd:01"),
                                             ("12-34-56-78-90-AB", "12:34:56:78:90:ab")])
def test_mac_addresses_are_normalised(mac: str, normal: str) -> None:
    assert nets.normalize_mac(mac) == normal


@pytest.mark.parametrize(("mac", "words"), [
    ("ff:ff:ff:ff:ff:ff", "is the broadcast address"), ("01:00:5e:00:00:01", "is a multicast address"),
    ("00:00:00:00:00:00", "is the all-zero address"), ("12:34:56:78:90", "is not a MAC address"),
    ("12:34:56-78:90:ab", "is not a MAC address"), ("1234567890ab", "is not a MAC address"),
    ("12:34:56:78:90:zz", "is not a MAC address"), ("", "is not a MAC address")])
def test_bad_mac_addresses(mac: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=f"macaddress: .*{words}"):
        nets.normalize_mac(mac)


def test_hostnames_and_orders() -> None:
    assert nets.check_hostname("test99") == "test99" and nets.check_hostname("") is None
    for bad in ("-x", "x-", "a.b", "a b", "a" * 64, "ü"):
        with pytest.raises(InvalidInput, match=r"hostname: .* is not a host name"):
            nets.check_hostname(bad)
    assert nets.check_order(None) is None and nets.check_order("3") == 3
    with pytest.raises(InvalidInput, match="order: '-1' is not a position"):
        nets.check_order("-1")
    with pytest.raises(InvalidInput, match="direction: 'sideways' is not one of in, out"):
        nets.check_direction("sideways")


def test_lease_and_acl_views() -> None:
    assert nets.lease_view("12:34:56:78:90:ab", {"ip4_address": "10.0.0.5", "hostname": None}, True) == {
        "hostname": "", "ip4_address": "10.0.0.5", "mac_address": "12:34:56:78:90:ab", "timestamp": "static"}
    dynamic = nets.lease_view("12:34:56:78:90:ac", {"mac_address": "12:34:56:78:90:ac",
                                                    "ip4_address": "10.0.0.6", "hostname": "h",
                                                    "expiry": 1700000000}, False)
    assert dynamic["timestamp"] == 1700000000
    acls = {"in": [{"description": "a", "rule": "tcp dport 22 accept"}],
            "out": [{"description": "b", "rule": "drop"}]}
    assert nets.acl_views(acls) == [
        {"direction": "in", "order": 0, "description": "a", "rule": "tcp dport 22 accept"},
        {"direction": "out", "order": 0, "description": "b", "rule": "drop"}]
    assert nets.acl_views(acls, "out") == [{"direction": "out", "order": 0, "description": "b",
                                            "rule": "drop"}]


def test_network_view_keeps_upstream_clients_working() -> None:
    bridged = nets.network_doc({"vni": 101, "description": "br", "nettype": "bridged"})
    view = nets.network_view(bridged)
    assert view["domain"] == "" and view["mtu"] is None and view["ip4"]["dhcp_flag"] is False
    assert nets.network_view(doc()) == {**doc(), "domain": "testing.local"}


class Recorder:
    def __init__(self, error: str | None = None) -> None:
        self.error, self.seen = error, []

    def __call__(self, text: str) -> None:
        self.seen.append(text)
        if self.error:
            raise NetworkError(self.error)


def test_rule_check_uses_the_checker_and_reports_nft() -> None:
    checker = Recorder()
    text = nets.check_rule(doc(), "in", "  'ip daddr 10.0.0.0/8 counter'  ", checker)
    assert text == "ip daddr 10.0.0.0/8 counter"
    assert "chain vxlan10001-in" in checker.seen[0] and "table inet pvc_check" in checker.seen[0]
    assert "table inet pvc " not in checker.seen[0] and "table inet pvc\n" not in checker.seen[0]
    failing = Recorder("nft check: /dev/stdin:6:37-37: Error: syntax error, unexpected newline")
    with pytest.raises(InvalidInput, match=r"^rule: nft refuses the rule 'ip daddr 10.0.0.0/8 countr': "
                                           r"/dev/stdin:6:37-37: Error: syntax error"):
        nets.check_rule(doc(), "in", "ip daddr 10.0.0.0/8 countr", failing)
    for bad, words in (("accept; drop", "one rule"), ("accept\ndrop", "one line"), ("", "empty"),
                       ("} chain x {", "closes a '}'"), ("accept # x", "'#'")):
        with pytest.raises(InvalidInput, match=f"^rule: .*{words}"):
            nets.check_rule(doc(), "out", bad, Recorder())


# -- CLI formatters ----------------------------------------------------------------------------------------

def test_cli_formatters() -> None:
    items = [nets.network_view(doc()), nets.network_view(nets.network_doc(
        {"vni": 101, "description": "br", "nettype": "bridged", "mtu": "1500"}))]
    table = render(netcli.format_list(items)).splitlines()
    assert table[0].split() == ["VNI", "Description", "Type", "MTU", "Domain", "IPv6", "DHCPv6", "IPv4",
                                "DHCPv4"]
    assert table[1].split() == ["101", "br", "bridged", "1500", "N/A", "False", "False", "False", "False"]
    assert table[2].split() == ["10001", "testing", "managed", "default", "testing.local", "False", "False",
                                "True", "True"]
    info = render(netcli.format_info(items[0]))
    assert "DHCPv4 range:" in info and "10.100.100.100 - 10.100.100.199" in info and "IPv6" not in info
    long = render(netcli.format_info_long({**items[0], "leases": [nets.lease_view(
        "12:34:56:78:90:ab", {"ip4_address": "10.100.100.200", "hostname": "test99"}, True)], "acls": []}))
    assert "test99" in long and "static" in long and "No ACLs found." in long
    acls = render(netcli.format_acl_list([{"direction": "in", "order": 0, "description": "a",
                                           "rule": "drop"}]))
    assert acls.splitlines()[1].split() == ["in", "0", "a", "drop"]
    assert netcli.LIST_FORMATS["raw"](items) == "101\n10001"


# -- CLI requests (a scripted API) --------------------------------------------------------------------------

def _cli(api: FakeApi, env: dict[str, str], *args: str) -> Any:
    return cli_run(api, env, "-q", *args)


def test_cli_sends_upstreams_parameters(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", "/network", {"message": "Network 'testing' added successfully!"})
    api.on("PUT", "/network/10001", {"message": "Network '10001' modified successfully!"})
    api.on("POST", "/network/10001/acl", {"message": "Firewall rule 'x' added successfully!"})
    api.on("GET", "/network/10001/lease", [])
    result = _cli(api, env, "network", "add", "10001", "-d", "testing", "-p", "managed", "-i", "10.1.0.0/24",
                  "-g", "10.1.0.1", "--dns-server", "10.1.0.53", "--dns-server", "10.1.0.54", "--dhcp",
                  "--dhcp-start", "10.1.0.10", "--dhcp-end", "10.1.0.20", "-i6", "fd00:1::/64")
    assert result.exit_code == 0 and result.stdout == "Network 'testing' added successfully!\n"
    sent = api.sent("POST", "/network")[0].url.params
    assert sent.get_list("name_servers") == ["10.1.0.53", "10.1.0.54"]
    assert {k: sent[k] for k in ("vni", "nettype", "ip4_network", "ip4_gateway", "dhcp4", "ip6_network")} == {
        "vni": "10001", "nettype": "managed", "ip4_network": "10.1.0.0/24", "ip4_gateway": "10.1.0.1",
        "dhcp4": "true", "ip6_network": "fd00:1::/64"}
    assert _cli(api, env, "network", "modify", "10001", "--domain", "x.local", "--ipnet6", "").exit_code == 0
    assert dict(api.sent("PUT", "/network/10001")[0].url.params) == {"domain": "x.local", "ip6_network": ""}
    assert _cli(api, env, "network", "acl", "add", "10001", "--out", "-d", "x", "-r", "drop", "-o", "2"
                ).exit_code == 0
    assert dict(api.sent("POST", "/network/10001/acl")[0].url.params) == {
        "description": "x", "direction": "out", "rule": "drop", "order": "2"}
    result = _cli(api, env, "network", "dhcp", "list", "10001", "--static")
    assert result.exit_code == 0 and result.stdout.strip() == "No leases found."
    assert api.sent("GET", "/network/10001/lease")[0].url.params["static"] == "true"


def test_cli_errors_and_missing_networks(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", "/network", httpx.Response(400, json={"message": "vni: 0 is out of range"}))
    api.on("GET", "/network/10002", httpx.Response(404, json={"message": "Network not found."}))
    result = _cli(api, env, "network", "add", "0", "-d", "x", "-p", "managed")
    assert result.exit_code == 1 and result.stderr.strip() == "vni: 0 is out of range"
    result = _cli(api, env, "vm", "network", "add", "web1", "10002", "-y")
    assert result.exit_code == 1 and "Network 10002 does not exist" in result.stderr
    assert not api.sent("GET", "/vm/web1") and not api.sent("PUT", "/vm/web1")
    result = _cli(api, env, "network", "remove", "10002")  # no --yes, no terminal: declined
    assert result.exit_code == 1 and not api.sent("DELETE", "/network/10002")
