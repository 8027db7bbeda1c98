"""The pure parts of the refusals (issue #17, item 5): a CRUSH rule's failure domains from Ceph's
own answers, replication beyond them, a VM no node could run, a node limit naming no node."""

from __future__ import annotations

from typing import Any

import pytest

from pvc.cluster.storage.pools import FailureDomains, check_replication, failure_domains
from pvc.cluster.vms.rules import check_fits_cluster, check_limit_nodes
from pvc.core import domainxml
from pvc.core.errors import InvalidInput
from pvc.core.records import Memory, NodeRecord


def osd(osd_id: int, cls: str = "hdd", reweight: float = 1.0, exists: int = 1) -> dict[str, Any]:
    return {"id": osd_id, "name": f"osd.{osd_id}", "type": "osd", "type_id": 0, "device_class": cls,
            "crush_weight": 0.01, "reweight": reweight, "exists": exists, "status": "up"}


def tree(*buckets: dict[str, Any]) -> dict[str, Any]:
    return {"nodes": list(buckets), "stray": [{"id": 99, "name": "osd.99", "type": "osd", "exists": 1}]}


def bucket(bid: int, name: str, kind: str, children: list[int]) -> dict[str, Any]:
    return {"id": bid, "name": name, "type": kind, "children": children}


# Ceph's own shapes: root default > hosts hv1..hv3 (hv3's OSD is out), ssd OSDs on hv1 and hv2.
CEPH_TREE = tree(
    bucket(-1, "default", "root", [-3, -5, -7]),
    bucket(-3, "hv1", "host", [0, 3]), osd(0), osd(3, "ssd"),
    bucket(-5, "hv2", "host", [1, 4]), osd(1), osd(4, "ssd"),
    bucket(-7, "hv3", "host", [2]), osd(2, reweight=0.0),
)
RULES = [
    {"rule_name": "replicated_rule", "steps": [{"op": "take", "item": -1, "item_name": "default"},
                                               {"op": "chooseleaf_firstn", "num": 0, "type": "host"},
                                               {"op": "emit"}]},
    {"rule_name": "ssd_tier", "steps": [{"op": "take", "item": -2, "item_name": "default~ssd"},
                                        {"op": "chooseleaf_firstn", "num": 0, "type": "host"},
                                        {"op": "emit"}]},
]


def test_hosts_with_an_in_osd_count() -> None:
    found = failure_domains(CEPH_TREE, RULES, "replicated_rule", None)
    assert found == FailureDomains("replicated_rule", "host", None, ("hv1", "hv2"))


def test_a_device_class_rule_counts_only_that_class() -> None:
    assert failure_domains(CEPH_TREE, RULES, "ssd_tier", None).names == ("hv1", "hv2")
    only_hv1 = tree(bucket(-1, "default", "root", [-3, -5]), bucket(-3, "hv1", "host", [0]), osd(0, "ssd"),
                    bucket(-5, "hv2", "host", [1]), osd(1, "hdd"))
    assert failure_domains(only_hv1, RULES, "ssd_tier", None).names == ("hv1",)


def test_a_rule_not_made_yet_is_pvcs_own() -> None:
    found = failure_domains(CEPH_TREE, RULES, "nvme_tier", "nvme")
    assert (found.kind, found.device_class, found.names) == ("host", "nvme", ())


def test_other_failure_domains_and_odd_trees() -> None:
    racks = tree(bucket(-1, "default", "root", [-10, -11]),
                 bucket(-10, "r1", "rack", [-3, -5]), bucket(-11, "r2", "rack", [-7]),
                 bucket(-3, "hv1", "host", [0]), osd(0), bucket(-5, "hv2", "host", [1]), osd(1),
                 bucket(-7, "hv3", "host", [2]), osd(2, exists=0))
    by_rack = [{"rule_name": "r", "steps": [{"op": "take", "item_name": "default"},
                                            {"op": "chooseleaf_firstn", "type": "rack"}]}]
    assert failure_domains(racks, by_rack, "r", None).names == ("r1",)          # r2's only OSD is gone
    by_osd = [{"rule_name": "o", "steps": [{"op": "take", "item_name": "default"},
                                           {"op": "choose_firstn", "type": "osd"}]}]
    assert failure_domains(racks, by_osd, "o", None).names == ("osd.0", "osd.1")
    looped = tree(bucket(-1, "default", "root", [-3]), bucket(-3, "hv1", "rack", [-1]))
    assert failure_domains(looped, RULES, "replicated_rule", None).names == ()
    assert failure_domains(None, None, "replicated_rule", None).names == ()


def test_replication_refusals_name_the_limit() -> None:
    domains = FailureDomains("replicated_rule", "host", None, ("hv1", "hv2", "hv3"))
    check_replication(3, domains, "default")
    with pytest.raises(InvalidInput, match=r"replcfg: copies=9 needs 9 separate hosts .* only 3 hosts with "
                                           r"OSDs exist \(hv1, hv2, hv3\).*at most copies=3"):
        check_replication(9, domains, "default")
    with pytest.raises(InvalidInput, match="only 1 host with OSDs"):
        check_replication(2, FailureDomains("replicated_rule", "host", None, ("hv1",)), "default")
    with pytest.raises(InvalidInput, match="tier: no host has OSDs of device class ssd"):
        check_replication(1, FailureDomains("ssd_tier", "host", "ssd", ()), "ssd")
    with pytest.raises(InvalidInput, match="replcfg: no host has OSDs"):
        check_replication(1, FailureDomains("replicated_rule", "host", None, ()), "default")


def node(name: str, mib: int, cpus: int = 8) -> NodeRecord:
    return NodeRecord(name=name, memory=Memory(total=mib), cpu_count=cpus)


def domain(mib: int, vcpus: int = 1) -> domainxml.Domain:
    return domainxml.Domain(name="vm1", uuid="6f1b3c1e-2d3a-4b5c-8d9e-0f1a2b3c4d5e", memory_mib=mib,
                            vcpus=vcpus)


def test_a_vm_no_node_could_run() -> None:
    nodes = [node("hv1", 4096), node("hv2", 8192, 4), node("new", 0, 0)]    # "new" reports nothing yet
    check_fits_cluster(nodes, domain(8000))
    check_fits_cluster(nodes, domain(1024, 8))                                # hv1 has 8 CPUs
    with pytest.raises(InvalidInput, match=r"xml: no node .* 8192 MiB of memory is not less than node hv2's "
                                           r"total \(8192 MiB\) \(the largest node\).*force"):
        check_fits_cluster(nodes, domain(8192))
    with pytest.raises(InvalidInput, match=r"16 vCPUs is more than node hv1 has \(8\)"):
        check_fits_cluster(nodes, domain(1024, 16))
    check_fits_cluster([node("new", 0, 0)], domain(1 << 20))                 # nothing known: not judged
    check_fits_cluster([], domain(1 << 20))


def test_a_limit_naming_no_node() -> None:
    check_limit_nodes([], ["hv1"])
    check_limit_nodes(["hv1", "hv2"], ["hv2", "hv1", "hv3"])
    with pytest.raises(InvalidInput,
                       match=r"limit: 'hv9' is not a node of this cluster \(its nodes: hv1, hv2\)"):
        check_limit_nodes(["hv1", "hv9"], ["hv2", "hv1"])
    with pytest.raises(InvalidInput, match=r"'a', 'b' are not nodes .*none registered yet"):
        check_limit_nodes(["a", "b"], [])
