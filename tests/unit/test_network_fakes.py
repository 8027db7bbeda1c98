"""The in-memory network adapters keep the kernel's bookkeeping the reconciler relies on.

The same behaviours are checked against the real adapters in tests/lab/test_network_adapter.py.
"""

from __future__ import annotations

import signal

import pytest

from pvc.adapters.network import Link, NetworkError
from pvc.adapters.network.fake import FakeNetworkHost, FakeNftables, FakeServices
from pvc.core import netconfig as nc


def test_host_links_bridges_and_flood_lists() -> None:
    h = FakeNetworkHost()
    assert sorted(h.links()) == ["eth0", "eth1", "lo"]
    h.create_bridge("vmbr100", 1500, "02:AA:00:00:00:01", nc.alias(100))
    h.create_vxlan("vxlan100", 100, "10.0.0.1", "eth0", 4789, 1450, nc.alias(100))
    h.add_device("vnet0")
    h.set_link("vxlan100", master="vmbr100")
    h.set_link("vnet0", master="vmbr100", up=True)
    h.set_flood_list("vxlan100", {"10.0.0.2", "10.0.0.3"})
    links = h.links()
    assert isinstance(links["vmbr100"], Link)
    assert links["vmbr100"] == Link(name="vmbr100", kind="bridge", mtu=1500, mac="02:aa:00:00:00:01", up=True,
                                    alias="pvc:100")
    vx = links["vxlan100"]
    assert (vx.kind, vx.vni, vx.master) == ("vxlan", 100, "vmbr100")
    assert h.flood_list("vxlan100") == {"10.0.0.2", "10.0.0.3"}
    h.set_flood_list("vxlan100", {"10.0.0.3"})
    assert h.flood_list("vxlan100") == {"10.0.0.3"}

    h.create_bridge("vmbr100", 1400, None, nc.alias(100))           # an update
    assert h.links()["vmbr100"].mtu == 1400 and h.links()["vmbr100"].mac == "02:aa:00:00:00:01"
    with pytest.raises(NetworkError, match="exists as a bridge"):
        h.create_vxlan("vmbr100", 5, "10.0.0.1", "eth0", 4789, 1450, nc.alias(5))
    with pytest.raises(NetworkError, match="no link eth9"):
        h.create_vxlan("vxlan5", 5, "10.0.0.1", "eth9", 4789, 1450, nc.alias(5))
    with pytest.raises(NetworkError, match="not a bridge"):
        h.set_link("vnet0", master="eth0")

    h.delete_link("vmbr100")                                        # ports are detached
    assert h.links()["vnet0"].master is None and h.links()["vxlan100"].master is None
    h.delete_link("vxlan100")                                       # its FDB goes with it
    h.delete_link("vxlan100")
    assert h.fdb("vxlan100") == set()
    with pytest.raises(NetworkError, match="no link vxlan100"):
        h.flood_list("vxlan100")


def test_host_vlans_addresses_announce_sysctl_faults() -> None:
    h = FakeNetworkHost()
    h.create_vlan("vlan42", "eth1", 42, 1500, nc.alias(42))
    assert (h.links()["vlan42"].kind, h.links()["vlan42"].vni) == ("vlan", 42)
    h.delete_link("eth1")                                           # the VLAN goes with its device
    assert "vlan42" not in h.links()
    with pytest.raises(NetworkError, match=r"no 802\.1Q support"):
        FakeNetworkHost(vlan_support=False).create_vlan("vlan42", "eth1", 42, 1500, nc.alias(42))

    h.create_bridge("vmbr7", 1500, None, nc.alias(7), ipv6=False)
    assert h.sysctls == {"net.ipv6.conf.vmbr7.disable_ipv6": "1"}
    for _ in range(2):
        h.add_address("vmbr7", "fd00:7:0::1/64")
        h.add_address("vmbr7", "10.7.0.1/24")
    assert h.links()["vmbr7"].addresses == frozenset({"fd00:7::1/64", "10.7.0.1/24"})
    h.del_address("vmbr7", "10.7.0.1/24")
    h.del_address("vmbr7", "10.7.0.1/24")
    h.del_address("nosuch", "10.7.0.1/24")
    with pytest.raises(NetworkError, match="no link nosuch"):
        h.add_address("nosuch", "10.7.0.1/24")

    h.announce("vmbr7", "fd00:7::1", "02:AA:00:00:00:07")
    assert h.announcements == [("vmbr7", "fd00:7::1", "02:aa:00:00:00:07")]
    h.fail_next("announce", "no carrier")
    with pytest.raises(NetworkError, match="no carrier"):
        h.announce("vmbr7", "fd00:7::1", "02:aa:00:00:00:07")
    h.announce("vmbr7", "fd00:7::1", "02:aa:00:00:00:07")
    h.close()
    assert h.closed


def test_nftables_tables_follow_the_replacement_idiom() -> None:
    nft = FakeNftables()
    ruleset = nc.render_nft([], {}, primary=True, upstream_device="eth0", metadata_address="169.254.169.254")
    nft.apply(ruleset)
    nft.apply(ruleset)
    assert nft.tables() == [("inet", "pvc")] and nft.ruleset == ruleset and len(nft.applied) == 2
    spec = nc.NetSpec.from_doc({"vni": 5, "type": "managed"})
    nft.check(nc.acl_check_ruleset(spec, "in", ["tcp dport 22 drop"]))
    assert nft.tables() == [("inet", "pvc")]                        # check applies nothing
    nft.fail_on("dorp")
    with pytest.raises(NetworkError, match="dorp"):
        nft.check(nc.acl_check_ruleset(spec, "in", ["tcp dport 22 dorp"]))
    with pytest.raises(NetworkError):
        nft.apply("table inet pvc {\n\tchain x {\n\t\tdorp\n\t}\n}\n")
    assert nft.ruleset == ruleset
    nft.delete_table("inet", "pvc")
    nft.delete_table("inet", "pvc")
    assert nft.tables() == []


def test_services() -> None:
    s = FakeServices()
    pid = s.start("dnsmasq-100", ["dnsmasq", "--port=53"], env={"A": "1"})
    assert s.pid("dnsmasq-100") == pid and s.names() == ["dnsmasq-100"]
    svc = s.services["dnsmasq-100"]
    assert svc.argv == ("dnsmasq", "--port=53") and svc.env == {"A": "1"}
    with pytest.raises(NetworkError, match="already running"):
        s.start("dnsmasq-100", ["dnsmasq"])
    s.signal("dnsmasq-100", signal.SIGHUP)
    assert s.services["dnsmasq-100"].signals == [signal.SIGHUP]
    s.crash("dnsmasq-100")
    assert s.pid("dnsmasq-100") is None and s.names() == ["dnsmasq-100"]     # the pid file stays
    with pytest.raises(NetworkError, match="not running"):
        s.signal("dnsmasq-100", signal.SIGHUP)
    assert s.start("dnsmasq-100", ["dnsmasq"]) != pid
    s.stop("dnsmasq-100")
    s.stop("dnsmasq-100")
    assert s.names() == [] and len(s.history) == 2
    s.fail_start("/usr/sbin/dnsmasq")
    with pytest.raises(NetworkError, match="exited at once"):
        s.start("dnsmasq-7", ["/usr/sbin/dnsmasq"])
    assert s.pid("dnsmasq-7") is None
