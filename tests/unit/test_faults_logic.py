"""Fault semantics without a cluster: health arithmetic, the raise/ack/resolve/delete table,
maintenance, pruning, and the primary's cluster checks as pure functions.

`MemZK` stands in for the few ZooKeeper calls pvc.cluster.faults makes (get, update, delete,
children, get_many); the same operations run against a real ZooKeeper in
tests/integration/test_cluster_health.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from kazoo.exceptions import NoNodeError

from pvc.cluster import faults
from pvc.core import schema
from pvc.core.records import FaultRecord, Memory, NodeRecord, VMRecord, VMStatus
from pvc.node.services import clusterhealth as ch


class MemZK:
    """A dict of path -> document with the ZK calls faults.py uses."""

    def __init__(self) -> None:
        self.docs: dict[str, Any] = {}

    def get(self, path: str, default: Any = None) -> Any:
        return self.docs.get(path, default)

    def exists(self, path: str) -> bool:
        return path in self.docs

    def update(self, path: str, fn: Callable[[Any], Any], create: bool = False) -> Any:
        if path not in self.docs and not create:
            raise NoNodeError(path)
        new = fn(self.docs.get(path))
        self.docs[path] = new
        return new

    def delete(self, path: str) -> bool:
        return self.docs.pop(path, None) is not None

    def children(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted({p[len(prefix):].split("/")[0] for p in self.docs if p.startswith(prefix)})

    def get_many(self, paths: list[str]) -> dict[str, Any]:
        return {p: self.docs[p] for p in paths if p in self.docs}


@pytest.fixture
def zk() -> MemZK:
    return MemZK()


def maintenance(zk: MemZK, on: bool) -> None:
    zk.docs[schema.CLUSTER] = {"name": "t", "maintenance": on}


def fault(**fields: Any) -> FaultRecord:
    return FaultRecord(**{"id": "X", "first_reported": "2026-01-01 00:00:00",
                          "last_reported": "2026-01-01 00:00:00", **fields})


# -- health arithmetic -----------------------------------------------------------------------------

def test_health_counts_only_active_unacknowledged_faults() -> None:
    assert faults.cluster_health([]) == 100
    assert faults.cluster_health([fault(health_delta=10), fault(health_delta=25)]) == 65
    assert faults.cluster_health([fault(health_delta=10, status="ack"), fault(health_delta=25)]) == 75
    assert faults.cluster_health([fault(health_delta=50, active=False), fault(health_delta=25)]) == 75
    assert faults.cluster_health([fault(health_delta=50) for _ in range(3)]) == 0      # never below 0


def test_view_reports_delta_0_once_it_no_longer_counts() -> None:
    assert faults.fault_view(fault(health_delta=10))["health_delta"] == 10
    assert faults.fault_view(fault(health_delta=10, status="ack"))["health_delta"] == 0
    view = faults.fault_view(fault(health_delta=10, active=False, resolved_at="2026-01-02 00:00:00"))
    assert view["health_delta"] == 0 and view["active"] is False
    assert {"id", "first_reported", "last_reported", "acknowledged_at", "status", "health_delta",
            "message"} <= set(view)


def test_names_are_upstreams() -> None:
    assert faults.fault_name("DEAD_NODE", "hv2") == "DEAD_NODE_HV2"
    assert faults.fault_name("CEPH_OSD_OUT", 3) == "CEPH_OSD_OUT_3"
    assert faults.fault_name("MEMORY_OVERPROVISIONED") == "MEMORY_OVERPROVISIONED"


# -- the table: raise, ack, resolve, raise again, delete ---------------------------------------------

def test_raise_ack_resolve_raise_again_delete(zk: MemZK) -> None:
    maintenance(zk, False)
    first = faults.raise_fault(zk, "VM_FAILED_WEB", 10, "VM web failed")
    assert first is not None and (first.status, first.active, first.resolved_at) == ("new", True, "")
    assert faults.cluster_health(faults.load_faults(zk)) == 90
    # refresh: same fault, new delta and message
    again = faults.raise_fault(zk, "VM_FAILED_WEB", 20, "VM web failed again")
    assert again is not None and (again.health_delta, again.message) == (20, "VM web failed again")
    assert again.first_reported == first.first_reported
    # ack: kept, no longer counts, stays acknowledged while it keeps firing
    faults.ack_fault(zk, "VM_FAILED_WEB")
    faults.raise_fault(zk, "VM_FAILED_WEB", 20, "VM web failed again")
    acked = faults.get_fault(zk, "VM_FAILED_WEB")
    assert acked.status == "ack" and acked.acknowledged_at and faults.cluster_health([acked]) == 100
    # resolve: inactive, hidden from the default list, still there with resolved=True
    assert faults.resolve_fault(zk, "VM_FAILED_WEB") is True
    assert faults.resolve_fault(zk, "VM_FAILED_WEB") is False           # already resolved
    assert faults.resolve_fault(zk, "NOT_THERE") is False              # absent is fine
    assert faults.load_faults(zk) == [] and faults.list_faults(zk) == []
    (resolved,) = faults.load_faults(zk, resolved=True)
    assert resolved.active is False and faults.parse_time(resolved.resolved_at) is not None
    assert faults.list_faults(zk, resolved=True)[0]["health_delta"] == 0
    # fires again: a new occurrence (active, new, not acknowledged)
    back = faults.raise_fault(zk, "VM_FAILED_WEB", 10, "VM web failed once more")
    assert back is not None and (back.active, back.status, back.acknowledged_at, back.resolved_at) == \
        (True, "new", "", "")
    assert faults.cluster_health(faults.load_faults(zk)) == 90
    # delete: gone, until it fires again
    faults.delete_fault(zk, "VM_FAILED_WEB")
    assert faults.load_faults(zk, resolved=True) == []
    assert faults.raise_fault(zk, "VM_FAILED_WEB", 10, "x") is not None


def test_clear_fault_is_resolve(zk: MemZK) -> None:
    maintenance(zk, False)
    faults.raise_fault(zk, "DEAD_NODE_HV2", 50, "Node hv2 is dead")
    faults.clear_fault(zk, "DEAD_NODE_HV2")
    assert faults.get_fault(zk, "DEAD_NODE_HV2").active is False


def test_ack_all_and_delete_all_include_resolved(zk: MemZK) -> None:
    maintenance(zk, False)
    for name in ("A", "B"):
        faults.raise_fault(zk, name, 10, name)
    faults.resolve_fault(zk, "B")
    assert faults.ack_all(zk) == "Successfully acknowledged 2 fault(s)."
    assert {f.status for f in faults.load_faults(zk, resolved=True)} == {"ack"}
    assert faults.delete_all(zk) == "Successfully deleted 2 fault(s)."
    assert zk.children(schema.FAULTS) == []


def test_maintenance_no_new_faults_existing_ones_update_and_resolve(zk: MemZK) -> None:
    maintenance(zk, False)
    faults.raise_fault(zk, "ACTIVE", 10, "before")
    faults.raise_fault(zk, "ENDED", 10, "before")
    faults.resolve_fault(zk, "ENDED")
    maintenance(zk, True)
    assert faults.raise_fault(zk, "NEW", 10, "during") is None
    assert not zk.exists(schema.fault("NEW"))
    updated = faults.raise_fault(zk, "ACTIVE", 20, "during")
    assert updated is not None and updated.message == "during"
    assert faults.raise_fault(zk, "ENDED", 10, "during") is None          # no comeback either
    assert faults.get_fault(zk, "ENDED").active is False
    assert faults.resolve_fault(zk, "ACTIVE") is True                     # endings still recorded
    maintenance(zk, False)
    assert faults.raise_fault(zk, "NEW", 10, "after") is not None


def test_prune_keeps_recent_and_active(zk: MemZK) -> None:
    maintenance(zk, False)
    now = datetime(2026, 3, 10, 12, 0, 0)
    for name, resolved_days_ago in (("OLD", 8), ("RECENT", 6), ("ACTIVE", None)):
        faults.raise_fault(zk, name, 10, name)
        if resolved_days_ago is not None:
            when = (now - timedelta(days=resolved_days_ago)).strftime("%Y-%m-%d %H:%M:%S")
            zk.update(schema.fault(name), lambda d, w=when: {**d, "active": False, "resolved_at": w})
    assert faults.prune_resolved(zk, 7, now) == ["OLD"]
    assert sorted(zk.children(schema.FAULTS)) == ["ACTIVE", "RECENT"]
    assert faults.prune_resolved(zk, 0, now) == ["RECENT"]


# -- the cluster checks, as pure functions -----------------------------------------------------------

def node(name: str, state: str = "run", total: int = 0, allocated: int = 0) -> NodeRecord:
    return NodeRecord(name=name, daemon_state=state, memory=Memory(total=total, allocated=allocated))


def test_dead_and_fenced_nodes() -> None:
    found = ch.dead_nodes([node("hv1"), node("hv2", "dead"), node("hv3", "fenced"), node("hv4", "stop")],
                          {"hv2": {"reason": "keepalive lost for 30s"}})
    assert [(f.name, f.delta) for f in found] == [("DEAD_NODE_HV2", 50), ("DEAD_NODE_HV3", 50)]
    assert found[0].message == "Node hv2 is dead: keepalive lost for 30s"   # as fencing words it
    assert found[1].message == "Node hv3 is dead: daemon state fenced"


def test_osds_out() -> None:
    found = ch.osds_out({"0": {"stats": {"in": 1}}, "1": {"stats": {"in": 0}}, "2": {"stats": {}},
                         "3": None})
    assert [(f.name, f.delta, f.message) for f in found] == [("CEPH_OSD_OUT_1", 50, "OSD 1 was marked out")]


def test_ceph_checks_per_check_and_staleness() -> None:
    doc = {"time": 1000.0, "health": {"status": "HEALTH_ERR", "checks": {
        "OSD_DOWN": {"severity": "HEALTH_WARN", "summary": {"message": "1 osds down"}},
        "PG_DAMAGED": {"severity": "HEALTH_ERR", "summary": {"message": "1 pg inconsistent"}},
        "OSDMAP_FLAGS": {"severity": "HEALTH_WARN", "summary": {"message": "noout"}, "muted": True}}}}
    found = ch.ceph_checks(doc, now=1010.0, stale_after=60)
    assert found is not None
    assert [(f.name, f.delta, f.message) for f in found] == [
        ("CEPH_WARN_OSD_DOWN", 10, "HEALTH_WARN OSD_DOWN: 1 osds down"),
        ("CEPH_ERR_PG_DAMAGED", 50, "HEALTH_ERR PG_DAMAGED: 1 pg inconsistent")]
    assert ch.ceph_checks({"time": 1000.0, "health": {"status": "HEALTH_OK", "checks": {}}}, 1010.0, 60) == []
    assert ch.ceph_checks(doc, now=2000.0, stale_after=60) is None     # stale: unknown, not "fine"
    assert ch.ceph_checks(None, now=1010.0, stale_after=60) is None


def test_vms_failed() -> None:
    failed = VMRecord(uuid="u1", xml="<domain/>", name="web", state="fail", node="hv1")
    running = VMRecord(uuid="u2", xml="<domain/>", name="db", state="start", node="hv1")
    found = ch.vms_failed([(failed, VMStatus(node="hv2", failed_reason="no disk")), (running, None)])
    assert [(f.name, f.delta, f.message) for f in found] == [
        ("VM_FAILED_WEB", 10, "VM web failed to start on hv2: no disk")]


def test_memory_overprovisioned_is_n_minus_1() -> None:
    three = [node("hv1", total=8000, allocated=5000), node("hv2", total=8000, allocated=5000),
             node("hv3", total=16000, allocated=5000)]
    assert ch.memory_overprovisioned(three) == []          # 15000 < 32000 - 16000 (the largest)
    three[0].memory.allocated = 6000
    assert [f.name for f in ch.memory_overprovisioned(three)] == ["MEMORY_OVERPROVISIONED"]   # 16000
    assert ch.memory_overprovisioned([node("hv1", total=8000, allocated=3000),
                                      node("hv2", total=8000, allocated=3000)]) == []      # 6000 < 8000
    (over,) = ch.memory_overprovisioned([node("hv1", total=8000, allocated=4000),
                                         node("hv2", total=8000, allocated=4000)])      # 8000 >= 8000
    assert (over.name, over.delta) == ("MEMORY_OVERPROVISIONED", 50) and "(N-1)" in over.message
    assert ch.memory_overprovisioned([node("hv1", total=8000)]) == []     # nothing allocated
    assert ch.memory_overprovisioned([]) == []


def test_not_recovered_ends_when_the_vm_runs_or_is_gone() -> None:
    active = [fault(id="VM_NOT_RECOVERED_WEB"), fault(id="VM_NOT_RECOVERED_DB"),
              fault(id="VM_NOT_RECOVERED_GONE"), fault(id="VM_NOT_RECOVERED_old"), fault(id="OTHER")]
    runs = VMStatus(node="hv1", running=True)
    vms = [(VMRecord(uuid="u1", xml="<domain/>", name="web", state="start"), runs),
           (VMRecord(uuid="u2", xml="<domain/>", name="db", state="stop"), None),
           (VMRecord(uuid="u3", xml="<domain/>", name="old", state="start"), runs)]
    assert sorted(ch.not_recovered_ended(active, vms)) == [
        "VM_NOT_RECOVERED_GONE", "VM_NOT_RECOVERED_WEB", "VM_NOT_RECOVERED_old"]
