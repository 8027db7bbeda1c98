"""The node's network reconciler over a real ZooKeeper with the in-memory network adapters.

What every node builds, what only the primary holds, how a primary change moves it, and that
removal leaves nothing (devices, helpers, rules); the real adapters are exercised in
tests/lab/test_network_adapter.py and on the lab (tests/system/test_networks.py).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from pvc.adapters.network.fake import FakeNetworkHost, FakeNftables, FakeServices
from pvc.cluster.faults import load_faults
from pvc.core import netconfig, schema
from pvc.core.config import load_config
from pvc.core.zk import ZK
from pvc.node.networks import NetworkReconciler, local_mac


def net_doc(vni: int, kind: str = "managed", subnet: str = "10.1.0") -> dict[str, object]:
    if kind == "bridged":
        return {"vni": vni, "description": f"br{vni}", "type": "bridged", "mtu": None, "domain": None,
                "name_servers": [], "ip4": {"network": None, "gateway": None, "dhcp_flag": False,
                                            "dhcp_start": None, "dhcp_end": None},
                "ip6": {"network": None, "gateway": None, "dhcp_flag": False}}
    ip4 = {"network": f"{subnet}.0/24", "gateway": f"{subnet}.1", "dhcp_flag": True,
           "dhcp_start": f"{subnet}.100", "dhcp_end": f"{subnet}.199"}
    return {"vni": vni, "description": f"net{vni}", "type": "managed", "mtu": None, "domain": f"n{vni}.test",
            "name_servers": [], "ip4": ip4,
            "ip6": {"network": None, "gateway": None, "dhcp_flag": False}}


@pytest.fixture
def make(zk: ZK, tmp_path: Path, config_factory):
    schema.migrate(zk)
    zk.put(schema.node("hv2"), {"name": "hv2", "cluster_address": "10.0.0.2"})
    zk.put(schema.node("hv3"), {"name": "hv3", "cluster_address": "10.0.0.3"})

    def build(node: str = "hv1", address: str = "10.0.0.1") -> NetworkReconciler:
        config = config_factory(node, networking={"cluster_device": "eth0", "cluster_address": address,
                                                  "floating_address": "10.0.0.254/24"})
        host = FakeNetworkHost()
        host.add_address("eth0", f"{address}/24")
        host.set_link("eth0", mtu=1550)
        return NetworkReconciler(zk, host, FakeNftables(), FakeServices(), load_config(str(config)), node,
                                 tmp_path / node)

    return build


def test_every_node_builds_the_networks_and_only_the_primary_serves_them(zk: ZK, make) -> None:
    zk.put(schema.network(100), net_doc(100))
    zk.put(schema.network(200), net_doc(200, "bridged"))
    zk.put(schema.network_acls(100), {"in": [{"description": "web", "rule": "tcp dport 80 drop"}], "out": []})
    node = make()
    node.reconcile()
    links = node.host.links()
    assert links["vxlan100"].master == "vmbr100" and links["vxlan100"].mtu == 1500   # 1550 - 50
    assert links["vlan200"].master == "vmbr200" and links["vlan200"].vni == 200
    assert links["vmbr100"].alias == "pvc:100" and links["vmbr100"].mac == local_mac("hv1", 100)
    assert node.host.flood_list("vxlan100") == {"10.0.0.2", "10.0.0.3"}
    assert not links["vmbr100"].addresses                          # not primary: no gateway
    assert "vxlan100-in" in node.nft.ruleset and "tcp dport 80 drop" in node.nft.ruleset
    assert "masquerade" not in node.nft.ruleset and not node.services.names()
    assert not node.problems

    node.set_primary(True)
    links = node.host.links()
    mac = netconfig.gateway_mac("test")
    assert links["vmbr100"].addresses == {"10.1.0.1/24"} and links["vmbr100"].mac == mac
    assert ("vmbr100", "10.1.0.1", mac) in node.host.announcements
    assert "10.0.0.254/24" in links["eth0"].addresses
    assert f"{node.net.metadata_address}/32" in links["lo"].addresses
    assert not links["vmbr200"].addresses                          # bridged: nothing on the host
    assert node.services.pid("dnsmasq-100") and node.services.pid("dns-view")
    assert "dnsmasq-200" not in node.services.names()
    argv = node.services.services["dnsmasq-100"].argv
    assert "--dhcp-range=10.1.0.100,10.1.0.199,255.255.255.0,1h" in argv
    assert "masquerade" in node.nft.ruleset
    started = len(node.services.history)
    node.reconcile()                                               # nothing changed: nothing restarted
    assert len(node.services.history) == started

    node.set_primary(False)
    links = node.host.links()
    assert not links["vmbr100"].addresses and links["vmbr100"].mac == local_mac("hv1", 100)
    assert "10.0.0.254/24" not in links["eth0"].addresses
    assert not [k for k in node.services.names() if node.services.pid(k)]
    node.reconcile()                       # the loop's pass after the hand-over: the ruleset follows
    assert "masquerade" not in node.nft.ruleset and "vxlan100-in" in node.nft.ruleset


def test_changes_follow_the_documents(zk: ZK, make) -> None:
    zk.put(schema.network(100), net_doc(100))
    node = make()
    node.set_primary(True)
    first = node.services.pid("dnsmasq-100")
    # a reservation: a hosts file, no restart; its removal: SIGHUP so dnsmasq forgets it
    zk.put(schema.network_reservation(100, "52:54:00:00:00:01"),
           {"mac_address": "52:54:00:00:00:01", "ip4_address": "10.1.0.50", "hostname": "g1"})
    node.reconcile()
    hosts = node.run_dir / "dnsmasq-100" / "hosts"
    assert (hosts / "52:54:00:00:00:01").read_text() == "52:54:00:00:00:01,10.1.0.50,g1\n"
    zk.delete(schema.network_reservation(100, "52:54:00:00:00:01"))
    node.reconcile()
    assert not list(hosts.iterdir()) and node.services.pid("dnsmasq-100") == first
    assert signal.SIGHUP in node.services.services["dnsmasq-100"].signals
    # a changed range restarts dnsmasq with the new arguments, and its leases are handed over
    zk.put(schema.network_lease(100, "52:54:00:00:00:02"),
           {"mac_address": "52:54:00:00:00:02", "ip4_address": "10.1.0.120", "hostname": "g2",
            "clientid": "*", "expiry": 1900000000})
    zk.update(schema.network(100), lambda d: {**d, "ip4": {**d["ip4"], "dhcp_end": "10.1.0.150"}})
    node.reconcile()
    assert node.services.pid("dnsmasq-100") != first
    assert "--dhcp-range=10.1.0.100,10.1.0.150,255.255.255.0,1h" in node.services.services["dnsmasq-100"].argv
    snapshot = (node.run_dir / "dnsmasq-100" / "leases.init").read_text()
    assert snapshot == "1900000000 52:54:00:00:00:02 10.1.0.120 g2 *\n"
    # a new node joins: it enters every flood list
    zk.put(schema.node("hv4"), {"name": "hv4", "cluster_address": "10.0.0.4"})
    node.reconcile()
    assert node.host.flood_list("vxlan100") == {"10.0.0.2", "10.0.0.3", "10.0.0.4"}
    # removal: devices, dnsmasq and rules go; a foreign bridge stays
    node.host.create_bridge("br-admin", 1500, None, "")
    zk.delete(schema.network(100))
    node.reconcile()
    links = node.host.links()
    assert "vmbr100" not in links and "vxlan100" not in links and "br-admin" in links
    assert not node.services.pid("dnsmasq-100") and "vxlan100" not in node.nft.ruleset


def test_a_restarted_daemon_adopts_what_runs(zk: ZK, make) -> None:
    zk.put(schema.network(100), net_doc(100))
    node = make()
    node.set_primary(True)
    again = NetworkReconciler(zk, node.host, node.nft, node.services, node.settings, "hv1", node.run_dir)
    again.set_primary(True)
    assert len(node.services.history) == 3                         # dnsmasq, chronyd, the DNS view: once each
    node.services.crash("dnsmasq-100")                             # and a crashed one comes back
    again.reconcile()
    assert again.services.pid("dnsmasq-100") and len(node.services.history) == 4


def test_a_failing_network_does_not_stop_the_others(zk: ZK, make) -> None:
    zk.put(schema.network(100), net_doc(100))
    zk.put(schema.network(101), net_doc(101, subnet="10.2.0"))
    node = make()
    node.host.fail_next("create_vxlan", "RTNETLINK answers: File exists", times=1)
    node.reconcile()
    assert "vmbr101" in node.host.links() or "vmbr100" in node.host.links()
    assert any("File exists" in p for p in node.problems.values())
    messages = [f.message for f in load_faults(zk)]                # and a cluster fault says so
    assert any("hv1" in m and "File exists" in m for m in messages), messages
    node.reconcile()                                               # the next pass repairs it
    assert {"vxlan100", "vxlan101"} <= set(node.host.links()) and not node.problems
