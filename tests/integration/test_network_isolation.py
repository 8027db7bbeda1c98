"""Guest isolation and anti-spoofing as the network reconciler derives them (real ZooKeeper,
in-memory network adapters): what guests may not reach, and what each VM tap may send as.
The rules themselves are golden files (tests/unit/test_netconfig.py); on the lab they are
attacked for real (tests/security/test_guest_isolation.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pvc.adapters.network.fake import FakeNetworkHost, FakeNftables, FakeServices
from pvc.core import netconfig, schema
from pvc.core.config import load_config
from pvc.core.zk import ZK
from pvc.node.networks import NetworkReconciler
from pvc.node.services.networking import network_keys
from tests.integration.test_network_reconciler import net_doc

VICTIM, OTHER = "52:54:00:00:00:05", "52:54:00:00:00:06"


@pytest.fixture
def make(zk: ZK, tmp_path: Path, config_factory: Any) -> Any:
    schema.migrate(zk)
    zk.put(schema.node("hv2"), {"name": "hv2", "cluster_address": "10.0.0.2",
                                "addresses": "10.0.0.2,192.0.2.12,not-an-address"})

    def build(**networking: Any) -> NetworkReconciler:
        config = config_factory("hv1", networking={
            "cluster_device": "eth0", "cluster_address": "10.0.0.1", "upstream_device": "eth1",
            "floating_address": "192.0.2.254/24", "guest_denied_networks": ["172.16.0.0/12"], **networking})
        host = FakeNetworkHost(devices=("lo", "eth0", "eth1", "eth2"))
        host.add_address("eth0", "10.0.0.1/24")
        host.add_address("eth1", "192.0.2.11/24")
        host.add_address("eth2", "10.5.0.1/24")          # storage
        return NetworkReconciler(zk, host, FakeNftables(), FakeServices(), load_config(str(config)), "hv1",
                                 tmp_path / "hv1")

    return build


def test_guests_are_kept_from_every_node_address_and_network(zk: ZK, make: Any) -> None:
    zk.put(schema.network(100), net_doc(100))
    node = make()
    node.reconcile()
    denied = set(node.guest_denied(node.read(), node.host.links()))
    # this node's cluster and storage networks, the other node's every address, the floating
    # address, the configured networks; on the separate upstream device only the address
    assert {"10.0.0.0/24", "10.5.0.0/24", "10.0.0.2/32", "192.0.2.12/32", "192.0.2.11/32",
            "192.0.2.254/32", "172.16.0.0/12"} <= denied
    assert "192.0.2.0/24" not in denied and not any(d.startswith("10.1.0.") for d in denied)
    ruleset = node.nft.ruleset
    assert "10.0.0.0/24" in ruleset and "172.16.0.0/12" in ruleset and "10.5.0.0/24" in ruleset
    assert 'oifname "eth1" masquerade' not in ruleset          # not primary
    node.set_primary(True)
    assert 'oifname "eth1" masquerade' in node.nft.ruleset
    assert "192.0.2.254 tcp dport" not in node.nft.ruleset    # guest_api_access off by default
    assert not node.problems
    # what this node publishes for the others
    keys = network_keys(node)
    assert keys["cluster_address"] == "10.0.0.1"
    assert set(keys["addresses"].split(",")) >= {"10.0.0.1", "10.5.0.1", "192.0.2.11"}


def test_api_access_through_the_floating_address_only_when_allowed(zk: ZK, make: Any) -> None:
    zk.put(schema.network(100), net_doc(100))
    node = make(guest_api_access=True)
    node.set_primary(True)
    port = node.settings.api.listen.port
    assert f'iifname "vmbr100" ip daddr 192.0.2.254 tcp dport {port} accept' in node.nft.ruleset


def test_each_tap_sends_only_as_its_vm(zk: ZK, make: Any) -> None:
    zk.put(schema.network(100), net_doc(100))
    node = make()
    node.reconcile()
    node.host.add_device("vnet0", kind="tun")
    node.host.set_link("vnet0", mac="fe:54:00:00:00:05", master="vmbr100")
    node.host.add_device("vnet1", kind="tun")
    node.host.set_link("vnet1", mac="fe:54:00:00:00:06", master="vmbr100")
    node.reconcile()
    guard = node.nft.ruleset
    assert ("bridge", netconfig.GUARD_TABLE) in node.nft.tables()
    assert '"vnet0" : jump port0' in guard and '"vnet1" : jump port1' in guard
    assert "ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept" in guard      # no lease yet: DHCP
    assert " . 10.1.0." not in guard
    # a lease for the first VM (and a reservation for the second) opens their own addresses only
    zk.put(schema.network_lease(100, VICTIM), {"mac_address": VICTIM, "ip4_address": "10.1.0.105"})
    zk.put(schema.network_reservation(100, OTHER), {"mac_address": OTHER, "ip4_address": "10.1.0.50"})
    node.reconcile()
    guard = node.nft.ruleset
    port0 = guard.split("chain port0 {", 1)[1].split("chain port1 {", 1)[0]
    assert f"{VICTIM} . 10.1.0.105" in port0 and "10.1.0.50" not in port0
    assert f"ether saddr != {{ {VICTIM} }} jump spoofed" in port0
    assert f"{OTHER} . 10.1.0.50" in guard.split("chain port1 {", 1)[1]
    # the tap leaves (the VM stopped or migrated away): its rules go with it
    node.host.delete_link("vnet0")
    node.reconcile()
    assert "vnet0" not in node.nft.ruleset and "vnet1" in node.nft.ruleset


def test_the_guard_can_be_turned_off(zk: ZK, make: Any) -> None:
    zk.put(schema.network(100), net_doc(100))
    node = make(guest_port_guard=False)
    node.host.add_device("vnet0", kind="tun")
    node.reconcile()
    assert ("bridge", netconfig.GUARD_TABLE) not in node.nft.tables()
    assert ("inet", "pvc") in node.nft.tables()


def test_a_bad_denied_network_is_refused_naming_it(config_factory: Any) -> None:
    config = config_factory("hv1", networking={"guest_denied_networks": ["10.0.0.0/33"]})
    with pytest.raises(Exception, match=r"guest_denied_networks: '10.0.0.0/33' is not a network"):
        load_config(str(config))
