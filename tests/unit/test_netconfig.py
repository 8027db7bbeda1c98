"""pvc.core.netconfig: golden rulesets and command lines, plus the facts they must show.

Goldens live in tests/unit/golden/net/. `PVC_UPDATE_GOLDEN=1 pytest tests/unit/test_netconfig.py`
rewrites the expected files; read the diff before committing it — the goldens are the spec.
tests/lab/test_network_adapter.py feeds every golden *.nft to the real `nft --check`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pvc.core import chrony
from pvc.core import netconfig as nc
from pvc.core.netconfig import NetSpec

GOLDEN = Path(__file__).parent / "golden" / "net"
UPDATE = os.environ.get("PVC_UPDATE_GOLDEN") == "1"
HOOK = ["/usr/lib/pvc/dnsmasq-hook"]
HOSTS = "/run/pvc/dnsmasq/100"


def doc(vni: int, kind: str = "managed", *, ip4: str | None = None, gw4: str | None = None,
        dhcp4: bool = False, start: str | None = None, end: str | None = None, ip6: str | None = None,
        gw6: str | None = None, dhcp6: bool = False, domain: str | None = None,
        mtu: int | None = None) -> dict[str, Any]:
    return {"vni": vni, "description": f"net{vni}", "type": kind, "mtu": mtu, "domain": domain,
            "name_servers": [],
            "ip4": {"network": ip4, "gateway": gw4, "dhcp_flag": dhcp4, "dhcp_start": start, "dhcp_end": end},
            "ip6": {"network": ip6, "gateway": gw6, "dhcp_flag": dhcp6}}


V4 = NetSpec.from_doc(doc(100, ip4="10.100.0.0/24", gw4="10.100.0.1", dhcp4=True, start="10.100.0.100",
                          end="10.100.0.199", domain="net100.test"))
V4V6 = NetSpec.from_doc(doc(200, ip4="10.200.0.0/16", gw4="10.200.0.1", dhcp4=True, start="10.200.1.1",
                            end="10.200.1.254", ip6="fd00:200::/64", gw6="fd00:200::1", dhcp6=True,
                            domain="net200.test"))
NODHCP = NetSpec.from_doc(doc(300, ip4="10.30.0.0/23", gw4="10.30.0.1", domain="net300.test"))
PXE = NetSpec.from_doc({**doc(400, ip4="10.40.0.0/24", gw4="10.40.0.1", dhcp4=True, start="10.40.0.100",
                                end="10.40.0.199", ip6="fd00:400::/64", gw6="fd00:400::1", dhcp6=True),
                        "tftp_root": "/srv/tftp/net400", "dhcp_boot": "pxelinux.0"})
BRIDGED = NetSpec.from_doc(doc(42, "bridged", mtu=9000))
NETS = [V4V6, BRIDGED, V4]            # order must not matter
ACLS: dict[int, dict[str, list[dict[str, Any]]]] = {
    100: {"in": [{"description": "no-ssh", "rule": "tcp dport 22 drop"},
                 {"description": "web", "rule": "counter tcp dport { 80, 443 } accept"}],
          "out": [{"description": "no-smtp", "rule": "tcp dport 25 reject"}]},
    42: {"in": [{"description": "ignored", "rule": "drop"}]},   # bridged: no ACL chains
}


def _argv(argv: list[str]) -> str:
    return "\n".join(argv) + "\n"


def _ruleset(primary: bool, nets: list[NetSpec] | None = None) -> str:
    return nc.render_nft(NETS if nets is None else nets, ACLS, primary=primary, upstream_device="ens4",
                         metadata_address="169.254.169.254")


CASES: dict[str, Callable[[], str]] = {
    "ruleset.primary.nft": lambda: _ruleset(True),
    "ruleset.secondary.nft": lambda: _ruleset(False),
    "ruleset.empty.nft": lambda: _ruleset(True, []),
    "ruleset.isolated.nft": lambda: nc.render_nft(
        NETS, ACLS, primary=True, upstream_device="ens4", metadata_address="169.254.169.254",
        denied=["10.0.0.0/24", "10.0.0.7/32", "fd00:1::/64", "192.168.50.0/24"],
        api_access=("10.9.0.254", 7370)),
    "guard.nft": lambda: nc.render_guard([
        nc.GuestPort("vnet0", 100, True, "fe:54:00:10:00:01", (("52:54:00:10:00:01", "10.100.0.100"),)),
        nc.GuestPort("vnet1", 100, True, "fe:54:00:10:00:02"),
        nc.GuestPort("vnet7", 200, True, "fe:54:00:20:00:01", (("52:54:00:20:00:01", "10.200.1.5"),),
                     ip6=True),
        nc.GuestPort("vnet2", 42, False, "fe:54:00:10:00:03")]),
    "guard.empty.nft": lambda: nc.render_guard([]),
    "acl_check.nft": lambda: nc.acl_check_ruleset(V4, "out", ["tcp dport 25 reject",
                                                               "ip daddr 8.8.8.8 drop"]),
    "dnsmasq.v4-dhcp.argv": lambda: _argv(nc.dnsmasq_argv(V4, mtu=1450, hosts_dir=HOSTS, hook=HOOK,
                                                            upstream_dns=["9.9.9.9", "2620:fe::fe"])),
    "dnsmasq.v4v6.argv": lambda: _argv(nc.dnsmasq_argv(V4V6, mtu=1500, hosts_dir=HOSTS, hook=HOOK,
                                                        upstream_dns=[], dns_port=5353)),
    "dnsmasq.no-dhcp.argv": lambda: _argv(nc.dnsmasq_argv(NODHCP, mtu=1500, hosts_dir=HOSTS, hook=HOOK,
                                                           upstream_dns=["9.9.9.9"])),
    "dnsmasq.tftp.argv": lambda: _argv(nc.dnsmasq_argv(PXE, mtu=1500, hosts_dir=HOSTS, hook=HOOK,
                                                        upstream_dns=[], tftp_root="/srv/tftp/net400")),
    "ruleset.tftp.nft": lambda: _ruleset(True, [PXE, V4]),
    "chrony.v4v6.conf": lambda: chrony.chrony_config(PXE, state_dir="/run/pvc/network/chrony-400") or "",
    "dnsview.argv": lambda: _argv(nc.dns_view_argv([*NETS, NODHCP], listen=["10.0.0.254", "fd00::254"],
                                                   port=53, upstream_dns=["9.9.9.9"])),
    "frr.conf": lambda: nc.frr_config(hostname="hv1", router_id="10.210.0.1", asn=65210,
                                      peers=["10.210.0.1", "10.210.0.2", "10.210.0.3"],
                                      log_file="/var/log/pvc/frr.log"),
}


@pytest.mark.parametrize("expected", sorted(CASES))
def test_golden(expected: str) -> None:
    actual = CASES[expected]()
    path = GOLDEN / expected
    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert path.exists(), f"no golden {expected}: run with PVC_UPDATE_GOLDEN=1 and review the file"
    assert actual == path.read_text(), f"{expected} differs; if intended, regenerate and review"


def test_every_golden_file_is_used() -> None:
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(CASES)


# --------------------------------------------------------------------------------------------
# Names and sizes

def test_names() -> None:
    assert (nc.bridge_name(7), nc.vxlan_name(7), nc.vlan_name(7), nc.alias(7)) == ("vmbr7", "vxlan7", "vlan7",
                                                                                    "pvc:7")
    assert V4.bridge == "vmbr100" and V4.base_device == "vxlan100"
    assert BRIDGED.base_device == "vlan42"
    assert len(nc.bridge_name(nc.VNI_MAX)) <= 15 and len(nc.vxlan_name(nc.VNI_MAX)) <= 15


def test_gateway_mac_is_stable_local_unicast() -> None:
    mac = nc.gateway_mac("cluster1")
    assert mac == nc.gateway_mac("cluster1") != nc.gateway_mac("cluster2")
    first = int(mac[:2], 16)
    assert first & 0x02 and not first & 0x01          # locally administered, unicast
    assert len(mac.split(":")) == 6 and mac == mac.lower()


def test_mtus() -> None:
    assert nc.vxlan_max_mtu(1550, False) == 1500
    assert nc.vxlan_max_mtu(1500, True) == 1430
    assert V4.effective_mtu(1500) == 1500
    assert BRIDGED.effective_mtu(1500) == 1500          # 9000 clamped
    assert BRIDGED.effective_mtu(9100) == 9000


# --------------------------------------------------------------------------------------------
# NetSpec

def test_from_doc_normalises() -> None:
    spec = NetSpec.from_doc({**doc(5, ip4="10.5.0.7/24", gw4="10.5.0.1", domain=""),
                             "ip6": {"network": "", "gateway": None, "dhcp_flag": "False"}, "mtu": "1400"})
    assert spec.ip4_network == "10.5.0.0/24" and spec.domain is None and spec.mtu == 1400
    assert spec.ip6_network is None and not spec.dhcp6
    assert spec.gateway4_cidr == "10.5.0.1/24" and spec.gateway6_cidr is None
    assert spec.ip4_netmask == "255.255.255.0" and spec.ip4_prefixlen == 24
    assert V4V6.gateway_cidrs == ("10.200.0.1/16", "fd00:200::1/64")


@pytest.mark.parametrize("bad, message", [
    ({"vni": "x"}, "valid vni"),
    (doc(0), "must be 1..16777215"),
    (doc(5000, "bridged"), "must be 1..4094"),
    (doc(5, "routed"), "type 'routed'"),
    (doc(5, ip4="10.0.0.0/33"), "not a network"),
    (doc(5, ip4="fd00::/64"), "not an IPv4 network"),
    (doc(5, ip4="10.0.0.0/24", gw4="10.0.1.1"), "not in the ip4 network"),
    (doc(5, gw4="10.0.1.1"), "not in the ip4 network"),
    (doc(5, ip6="fd00::/64", gw6="10.0.0.1"), "not an IPv6 address"),
    ({**doc(5), "mtu": "big"}, "mtu 'big' is not a number"),
])
def test_from_doc_rejects(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NetSpec.from_doc(bad)


# --------------------------------------------------------------------------------------------
# nftables

def test_ruleset_shape() -> None:
    primary, secondary, empty = _ruleset(True), _ruleset(False), _ruleset(True, [])
    for text in (primary, secondary, empty):
        lines = text.splitlines()
        assert lines[:3] == ["table inet pvc", "delete table inet pvc", "table inet pvc {"]
        # nft 1.0.6: a closing brace must stand alone; `fwd` is a keyword
        assert all(line.strip() == "}" or not line.rstrip().endswith("}") or "{" in line for line in lines)
        assert "chain fwd" not in text
        for chain in ("forward", "input", "postrouting"):
            assert f"chain {chain} {{" in text
    assert "vxlan42" not in primary                                      # bridged: no ACL chains
    assert 'iifname "vmbr42" oifname "vmbr42" return' in primary        # but isolated like the rest
    assert "masquerade" in primary and "masquerade" not in secondary
    assert "vmbr100" in secondary and "udp dport 67" not in secondary    # no guest services there
    for text in (primary, secondary):
        assert text.count("jump guest-input-drop") == 1 and "jump guest-forward-drop" in text
    assert "udp dport 547" in primary and primary.count("udp dport 547") == 1   # v6 net only
    # ACLs hold on every node, in order, counted once
    for text in (primary, secondary):
        assert ("\t\tcounter\n\t\tcounter tcp dport 22 drop\n"
                "\t\tcounter tcp dport { 80, 443 } accept\n") in text
        assert "ip6 saddr fd00:200::/64 jump vxlan200-out" in text
    assert "vxlan" not in empty


def test_ruleset_rejects_a_stored_rule_that_escapes() -> None:
    acls = {100: {"in": [{"description": "evil", "rule": "accept\n}\nchain x {"}]}}
    with pytest.raises(ValueError, match="network 100 ACL in 'evil'"):
        nc.render_nft([V4], acls, primary=True, upstream_device="eth0", metadata_address="169.254.169.254")


@pytest.mark.parametrize("rule, message", [
    ("", "empty"),
    ("   ", "empty"),
    ("drop\naccept", "one line"),
    ("drop; flush ruleset", "one rule"),
    ("drop # comment", "'#'"),
    ("drop }", "did not open"),
    ("} chain evil { accept", "did not open"),
    ("ip saddr { 10.0.0.1", "open"),
    ("drop\x00", "control character"),
])
def test_validate_rule_text_rejects(rule: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        nc.validate_rule_text(rule)


def test_validate_rule_text_accepts() -> None:
    assert nc.validate_rule_text("  ip saddr { 10.0.0.1, 10.0.0.2 } tcp dport 22 drop \t") == \
        "ip saddr { 10.0.0.1, 10.0.0.2 } tcp dport 22 drop"


def test_acl_check_ruleset() -> None:
    text = nc.acl_check_ruleset(V4, "in", ["drop"])
    assert "table inet pvc_check" in text and "table inet pvc\n" not in text and "inet pvc " not in text
    assert "chain vxlan100-in {" in text
    with pytest.raises(ValueError, match=r"rule 1: .*one rule"):
        nc.acl_check_ruleset(V4, "in", ["drop", "drop; drop"])
    with pytest.raises(ValueError, match="direction"):
        nc.acl_check_ruleset(V4, "sideways", ["drop"])


# --------------------------------------------------------------------------------------------
# dnsmasq

def _opts(argv: list[str]) -> list[str]:
    assert argv[0] == "dnsmasq"
    return argv[1:]


def test_dnsmasq_isolation_options() -> None:
    for net in (V4, V4V6, NODHCP):
        opts = _opts(nc.dnsmasq_argv(net, mtu=1500, hosts_dir=HOSTS, hook=HOOK, upstream_dns=[]))
        for must in ("--keep-in-foreground", "--conf-file=/dev/null", "--no-hosts", "--no-resolv",
                     "--no-ping", "--bind-interfaces", f"--interface=vmbr{net.vni}", "--pid-file="):
            assert must in opts, (net.vni, must)
        assert not any(o.startswith("--user") for o in opts)


def test_dnsmasq_dhcp_switches() -> None:
    v4 = _opts(nc.dnsmasq_argv(V4, mtu=1450, hosts_dir=HOSTS, hook=HOOK, upstream_dns=[]))
    assert "--dhcp-range=10.100.0.100,10.100.0.199,255.255.255.0,1h" in v4
    assert "--dhcp-option=option:mtu,1450" in v4 and f"--dhcp-script={HOOK[0]}" in v4
    assert "--local=/0.100.10.in-addr.arpa/" in v4 and "--enable-ra" not in v4
    plain = _opts(nc.dnsmasq_argv(NODHCP, mtu=1500, hosts_dir=HOSTS, hook=HOOK, upstream_dns=[]))
    assert not any(o.startswith(("--dhcp", "--leasefile", "--log-dhcp")) for o in plain)
    assert not any("in-addr.arpa" in o for o in plain)          # /23: no octet-aligned zone
    both = _opts(nc.dnsmasq_argv(V4V6, mtu=1500, hosts_dir=HOSTS, hook=HOOK, upstream_dns=[]))
    assert "--enable-ra" in both and "--dhcp-range=::,constructor:vmbr200,ra-stateless,ra-names" in both
    assert "--listen-address=10.200.0.1,fd00:200::1" in both and "--local=/200.10.in-addr.arpa/" in both
    v6only = NetSpec.from_doc(doc(7, ip6="fd00:7::/64", gw6="fd00:7::1", dhcp6=True))
    only = _opts(nc.dnsmasq_argv(v6only, mtu=1500, hosts_dir=HOSTS, hook=HOOK, upstream_dns=[]))
    assert "--dhcp-range=::2,::ffff:ffff:ffff:ffff,constructor:vmbr7,64,1h" in only
    reserved = NetSpec.from_doc(doc(8, ip4="10.8.0.0/24", gw4="10.8.0.1", dhcp4=True))
    assert "--dhcp-range=10.8.0.0,static,255.255.255.0,1h" in nc.dnsmasq_argv(
        reserved, mtu=1500, hosts_dir=HOSTS, hook=HOOK, upstream_dns=[])


def test_dnsmasq_refuses() -> None:
    with pytest.raises(ValueError, match="bridged"):
        nc.dnsmasq_argv(BRIDGED, mtu=1500, hosts_dir=HOSTS, hook=HOOK, upstream_dns=[])
    with pytest.raises(ValueError, match="one program path"):
        nc.dnsmasq_argv(V4, mtu=1500, hosts_dir=HOSTS, hook=["python3", "-m", "hook"], upstream_dns=[])
    with pytest.raises(ValueError, match="not a domain"):
        nc.dnsmasq_argv(NetSpec.from_doc(doc(9, domain="bad domain/")), mtu=1500, hosts_dir=HOSTS, hook=HOOK,
                        upstream_dns=[])


def test_reservation_line() -> None:
    assert nc.reservation_line("52:54:00:AA:bb:01", "10.100.0.50", "web1") == \
        "52:54:00:aa:bb:01,10.100.0.50,web1\n"
    assert nc.reservation_line("52:54:00:aa:bb:01", "10.100.0.50", None) == "52:54:00:aa:bb:01,10.100.0.50\n"
    mac = "52:54:00:aa:bb:01"
    for mac_, ip, host in (("52:54:00:aa:bb", "10.0.0.1", None), (mac, "fd00::1", None),
                           (mac, "10.0.0.1", "a,b"), (mac, "10.0.0.1", "x\ny")):
        with pytest.raises(ValueError):
            nc.reservation_line(mac_, ip, host)


def test_dns_view() -> None:
    opts = _opts(nc.dns_view_argv([*NETS, NODHCP], listen=["10.0.0.254"], port=53, upstream_dns=[]))
    assert "--server=/net100.test/10.100.0.1" in opts and "--server=/0.100.10.in-addr.arpa/10.100.0.1" in opts
    assert "--server=/net200.test/10.200.0.1" in opts and "--server=/net300.test/10.30.0.1" in opts
    assert not any(o.startswith(("--dhcp", "--interface")) for o in opts)
    v6only = NetSpec.from_doc(doc(7, ip6="fd00:7::/64", gw6="fd00:7::1", domain="seven.test"))
    assert "--server=/seven.test/fd00:7::1" in nc.dns_view_argv([v6only], listen=[], port=53, upstream_dns=[])


# --------------------------------------------------------------------------------------------
# FRR

def test_frr_config() -> None:
    text = CASES["frr.conf"]()
    assert " neighbor 10.210.0.1 peer-group fabric" not in text          # not itself
    assert " neighbor 10.210.0.2 peer-group fabric" in text and "  advertise-all-vni" in text
    assert " neighbor fabric update-source 10.210.0.1" in text
    for kwargs in ({"asn": 0}, {"router_id": "fd00::1"}, {"hostname": "hv 1"}, {"peers": ["x"]}):
        args: dict[str, Any] = {"hostname": "hv1", "router_id": "10.0.0.1", "asn": 65000, "peers": [],
                                "log_file": "/tmp/frr.log", **kwargs}
        with pytest.raises(ValueError):
            nc.frr_config(**args)


def test_gateway_in_network_helpers_agree_with_ipaddress() -> None:
    for spec in (V4, V4V6, NODHCP):
        cidr = spec.gateway4_cidr
        assert cidr is not None
        assert ipaddress.ip_interface(cidr).network == ipaddress.ip_network(spec.ip4_network or "")


# --------------------------------------------------------------------------------------------
# guest isolation and anti-spoofing

def test_tap_macs_name_their_guest() -> None:
    assert nc.tap_mac_suffix("FE:54:00:10:00:01") == "00:54:00:10:00:01"
    assert nc.mac_matches_tap("52:54:00:10:00:01", "fe:54:00:10:00:01")
    assert nc.mac_matches_tap("fe:54:00:10:00:01", "fa:54:00:10:00:01")     # libvirt's 0xfe case
    assert not nc.mac_matches_tap("52:54:00:10:00:02", "fe:54:00:10:00:01")
    assert not nc.mac_matches_tap("not-a-mac", "fe:54:00:10:00:01")
    with pytest.raises(ValueError, match="'x' is not a MAC address"):
        nc.tap_mac_suffix("x")


def test_guard_refuses_a_binding_of_another_tap_and_a_bad_name() -> None:
    with pytest.raises(ValueError, match="tap vnet0: MAC 52:54:00:10:00:02 does not belong to it"):
        nc.render_guard([nc.GuestPort("vnet0", 100, True, "fe:54:00:10:00:01",
                                      (("52:54:00:10:00:02", "10.100.0.5"),))])
    with pytest.raises(ValueError, match="tap 'vnet0; drop' is not an interface name"):
        nc.render_guard([nc.GuestPort("vnet0; drop", 100, True, "fe:54:00:10:00:01")])


def test_isolation_denies_merged_networks_and_refuses_a_bad_one() -> None:
    text = nc.render_nft([V4], {}, primary=True, upstream_device="eth0", metadata_address="169.254.169.254",
                         denied=["10.0.0.0/24", "10.0.0.7/32", "10.0.1.0/24", "fd00::1/128"])
    assert "elements = { 10.0.0.0/23 }" in text and "elements = { fd00::1/128 }" in text
    forward = text.split("chain guest-forward {", 1)[1].split("chain guest-forward-drop", 1)[0]
    assert forward.index("@guest_denied4") < forward.index('oifname "eth0" return')   # denied first
    with pytest.raises(ValueError, match=r"guest denied network '10\.0\.0\.0/33' is not a network"):
        nc.render_nft([V4], {}, primary=True, upstream_device="eth0", metadata_address="169.254.169.254",
                      denied=["10.0.0.0/33"])
