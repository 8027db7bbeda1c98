"""The network reconciler's cluster faults over a real ZooKeeper, with the in-memory network
adapters (pvc.adapters.network.fake) failing on purpose: a fault appears while a step fails and
is *resolved* (not acknowledged: active false, resolved_at set, health back) by the node that
raised it when the step works again, when its network is removed, when the primary role moves
on, and by a restarted daemon for what its predecessor raised."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvc.adapters.network.fake import FakeNetworkHost, FakeNftables, FakeServices
from pvc.cluster import faults, state
from pvc.core import schema
from pvc.core.config import load_config
from pvc.core.records import FaultRecord
from pvc.core.zk import ZK
from pvc.node.networks import NetworkReconciler


def net_doc(vni: int, subnet: str = "10.1.0") -> dict[str, object]:
    ip4 = {"network": f"{subnet}.0/24", "gateway": f"{subnet}.1", "dhcp_flag": True,
           "dhcp_start": f"{subnet}.100", "dhcp_end": f"{subnet}.199"}
    return {"vni": vni, "description": f"net{vni}", "type": "managed", "mtu": None, "domain": f"n{vni}.test",
            "name_servers": [], "ip4": ip4, "ip6": {"network": None, "gateway": None, "dhcp_flag": False}}


@pytest.fixture
def make(zk: ZK, tmp_path: Path, config_factory):
    zk.put(schema.node("hv1"), {"name": "hv1", "cluster_address": "10.0.0.1"})
    zk.put(schema.node("hv2"), {"name": "hv2", "cluster_address": "10.0.0.2"})

    def build(node: str = "hv1", address: str = "10.0.0.1", services: FakeServices | None = None,
              host: FakeNetworkHost | None = None) -> NetworkReconciler:
        config = config_factory(node, networking={"cluster_device": "eth0", "cluster_address": address,
                                                  "floating_address": "10.0.0.254/24"})
        if host is None:
            host = FakeNetworkHost()
            host.add_address("eth0", f"{address}/24")
        return NetworkReconciler(zk, host, FakeNftables(), services or FakeServices(),
                                 load_config(str(config)), node, tmp_path / node)

    return build


def fault(zk: ZK, fid: str) -> FaultRecord | None:
    found = {f.id: f for f in faults.load_faults(zk, resolved=True)}
    return found.get(fid)


def active_ids(zk: ZK) -> set[str]:
    return {f.id for f in faults.load_faults(zk)}


def health(zk: ZK) -> int:
    return faults.cluster_health(faults.load_faults(zk, resolved=True))


def assert_resolved(zk: ZK, fid: str) -> None:
    found = fault(zk, fid)
    assert found is not None, f"{fid} is gone (deleted), expected it resolved"
    assert found.active is False and found.resolved_at, found
    assert not faults.counts(found)


def test_a_failing_step_raises_once_and_is_resolved_when_it_works_again(zk: ZK, make) -> None:
    zk.put(schema.network(1001), net_doc(1001))
    node = make()
    node.services.fail_start("dnsmasq")
    node.set_primary(True)
    fid, view = "NETWORK_DNSMASQ-1001_HV1", "NETWORK_DNS-VIEW_HV1"      # the DNS view is a dnsmasq too
    assert active_ids(zk) == {fid, view}
    first = fault(zk, fid)
    assert first is not None and first.status == "new" and "exited at once" in first.message
    assert first.message.startswith("Node hv1: network 1001 dnsmasq")
    assert health(zk) == 80
    node.reconcile()                                   # still failing: the same fault, no new one
    assert active_ids(zk) == {fid, view} and fault(zk, fid) == first
    node.services.failing.clear()                      # dnsmasq starts again
    node.reconcile()
    assert node.services.pid("dnsmasq-1001")
    assert_resolved(zk, fid)
    assert_resolved(zk, view)
    assert not active_ids(zk) and health(zk) == 100 and not node.problems
    node.services.fail_start("dnsmasq")               # fires again: a new occurrence
    node.services.crash("dnsmasq-1001")
    node.reconcile()
    again = fault(zk, fid)
    assert again is not None and again.active and again.status == "new" and not again.resolved_at


def test_an_acknowledged_fault_is_resolved_too(zk: ZK, make) -> None:
    zk.put(schema.network(1001), net_doc(1001))
    node = make()
    node.host.fail_next("create_vxlan", "RTNETLINK answers: File exists", times=1)
    node.reconcile()
    fid = "NETWORK_DEV-1001_HV1"
    assert active_ids(zk) == {fid}
    faults.ack_fault(zk, fid)
    node.reconcile()                                   # the next pass repairs it
    assert "vxlan1001" in node.host.links()
    assert_resolved(zk, fid)


def test_a_removed_network_takes_its_faults_with_it(zk: ZK, make) -> None:
    zk.put(schema.network(1001), net_doc(1001))
    zk.put(schema.network(1002), net_doc(1002, subnet="10.2.0"))
    node = make()
    node.host.fail_next("create_vxlan", "no more VXLANs", times=1000)     # fails every pass
    node.reconcile()
    assert active_ids(zk) == {"NETWORK_DEV-1001_HV1", "NETWORK_DEV-1002_HV1"}
    zk.delete(schema.network(1001))
    node.reconcile()
    assert_resolved(zk, "NETWORK_DEV-1001_HV1")
    assert active_ids(zk) == {"NETWORK_DEV-1002_HV1"}                    # 1002 still fails
    assert "vmbr1001" not in node.host.links() and set(node.problems) == {"dev-1002"}


def test_the_old_primarys_faults_end_with_the_hand_over(zk: ZK, make) -> None:
    zk.put(schema.network(1001), net_doc(1001))
    zk.put(schema.network(1002), net_doc(1002, subnet="10.2.0"))
    hv1, hv2 = make(), make("hv2", "10.0.0.2")
    hv1.services.fail_start("dnsmasq")
    hv1.nft.fail_on("vxlan1002")                      # an every-node failure: stays with hv1
    hv1.set_primary(True)
    assert active_ids(zk) == {"NETWORK_DNSMASQ-1001_HV1", "NETWORK_DNSMASQ-1002_HV1", "NETWORK_DNS-VIEW_HV1",
                              "NETWORK_NFT_HV1"}
    hv1.set_primary(False)                             # no pass in between: the hand-over settles
    assert_resolved(zk, "NETWORK_DNS-VIEW_HV1")
    assert_resolved(zk, "NETWORK_DNSMASQ-1001_HV1")
    assert_resolved(zk, "NETWORK_DNSMASQ-1002_HV1")
    assert active_ids(zk) == {"NETWORK_NFT_HV1"}
    hv2.services.fail_start("dnsmasq")               # the new primary fails on its own account
    hv2.set_primary(True)
    hv1.reconcile()
    hv2_faults = {"NETWORK_DNSMASQ-1001_HV2", "NETWORK_DNSMASQ-1002_HV2", "NETWORK_DNS-VIEW_HV2"}
    assert active_ids(zk) == {"NETWORK_NFT_HV1", *hv2_faults}
    assert_resolved(zk, "NETWORK_DNSMASQ-1001_HV1")                   # and stays so
    hv1.nft.markers.clear()
    hv1.reconcile()                                    # hv1 leaves hv2's faults alone
    assert active_ids(zk) == hv2_faults


def test_a_restarted_daemon_resolves_what_its_predecessor_raised(zk: ZK, make) -> None:
    zk.put(schema.network(1001), net_doc(1001))
    node = make()
    node.services.fail_start("dnsmasq")
    node.set_primary(True)
    faults.raise_fault(zk, "NETWORK_NFT_hv1", 10, "Node hv1: written before the ids were capitals")
    faults.raise_fault(zk, "NETWORK_NFT_HV2", 10, "Node hv2: another node's")
    faults.raise_fault(zk, "DEAD_NODE_HV3", 50, "Node hv3 is dead")
    assert active_ids(zk) == {"NETWORK_DNSMASQ-1001_HV1", "NETWORK_DNS-VIEW_HV1", "NETWORK_NFT_hv1",
                              "NETWORK_NFT_HV2", "DEAD_NODE_HV3"}
    node.services.failing.clear()
    again = make(services=node.services, host=node.host)        # a new pvcnoded on the same host
    again.set_primary(True)
    assert_resolved(zk, "NETWORK_DNSMASQ-1001_HV1")
    assert_resolved(zk, "NETWORK_DNS-VIEW_HV1")
    assert_resolved(zk, "NETWORK_NFT_hv1")
    assert active_ids(zk) == {"NETWORK_NFT_HV2", "DEAD_NODE_HV3"}


def test_a_vxlan_flood_list_failure_ends_too(zk: ZK, make) -> None:
    zk.put(schema.network(1001), net_doc(1001))
    node = make()
    node.host.fail_next("flood_lists", "netlink dump interrupted", times=1)
    node.reconcile()
    assert active_ids(zk) == {"NETWORK_FDB_HV1"}
    node.reconcile()
    assert_resolved(zk, "NETWORK_FDB_HV1")


def test_maintenance_raises_nothing_new_and_the_fault_comes_after_it(zk: ZK, make) -> None:
    zk.put(schema.network(1001), net_doc(1001))
    node = make()
    state.set_maintenance(zk, True)
    node.host.fail_next("create_vxlan", "no more VXLANs", times=1000)
    node.reconcile()
    assert not active_ids(zk) and set(node.problems) == {"dev-1001"}
    state.set_maintenance(zk, False)
    node.reconcile()                                   # still failing: raised now
    assert active_ids(zk) == {"NETWORK_DEV-1001_HV1"}
