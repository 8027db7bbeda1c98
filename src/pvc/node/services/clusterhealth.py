"""The primary's cluster checks: upstream's cluster faults, raised while their condition lasts and
resolved when it ends (pvc.cluster.faults), once every `timer.monitoring_interval` seconds.

As upstream's health daemon does on the primary (pvc-snapshots-backups-health §4.2):

* `DEAD_NODE_<NODE>` (50): the node's daemon state is dead or fenced. HA fencing raises the same
  fault, with the same message, the moment it declares a node dead; this pass keeps it while the
  node stays out of service and resolves it when it runs again.
* `CEPH_OSD_OUT_<ID>` (50): the OSD is out of the osd map.
* `CEPH_WARN_<CHECK>` (10) / `CEPH_ERR_<CHECK>` (50): one per Ceph health check, read from the
  Ceph status the primary's storage pass keeps in /ceph/status (not used when that is stale, so
  a Ceph that stopped answering neither raises nor resolves anything).
* `VM_FAILED_<VM>` (10): the VM's state is fail (the VM reconciler raises it on the failure too).
* `MEMORY_OVERPROVISIONED` (50): the memory allocated to VMs is at least the cluster's memory
  without its largest node (N-1).

Ours: `VM_NOT_RECOVERED_<VM>` (raised by fencing) is resolved once the VM runs again (or is gone),
and resolved faults older than `faults.fault_retention_days` are pruned. No new fault is raised in
maintenance mode (raise_fault refuses), but conditions that end are still resolved.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kazoo.exceptions import KazooException

from pvc.cluster import faults
from pvc.cluster.nodes import load_fencing, load_nodes
from pvc.core import schema
from pvc.core.config import Settings
from pvc.core.errors import ClusterUnavailable
from pvc.core.records import FaultRecord, NodeRecord, VMRecord, VMStatus
from pvc.core.vocabulary import NODE_OUT_OF_SERVICE
from pvc.core.zk import ZK
from pvc.node.storage import health_faults

log = logging.getLogger("pvcnoded")

DEAD_NODE = "DEAD_NODE"
OSD_OUT = "CEPH_OSD_OUT"
VM_FAILED = "VM_FAILED"
VM_NOT_RECOVERED = "VM_NOT_RECOVERED"
MEMORY_OVERPROVISIONED = "MEMORY_OVERPROVISIONED"
CEPH_PREFIXES = ("CEPH_WARN_", "CEPH_ERR_")
# The faults this pass decides on: an active one whose condition it no longer finds is resolved.
OWNED_PREFIXES = (f"{DEAD_NODE}_", f"{OSD_OUT}_", f"{VM_FAILED}_")


@dataclass(frozen=True)
class Finding:
    """A condition found now: the fault to raise (or keep)."""

    name: str
    delta: int
    message: str

    @property
    def id(self) -> str:
        return faults.fault_id(self.name)


def _details(message: str, details: Any) -> str:
    """As upstream: details appended as `": <details>"` when there are any."""
    return f"{message}: {details}" if details not in (None, "") else message


def dead_node_message(name: str, reason: str) -> str:
    """The message of DEAD_NODE_<name>: the same from fencing and from this pass."""
    return _details(f"Node {name} is dead", reason)


def dead_nodes(nodes: Iterable[NodeRecord], fencing: dict[str, dict[str, Any]]) -> list[Finding]:
    return [Finding(faults.fault_name(DEAD_NODE, n.name), 50,
                    dead_node_message(n.name, str((fencing.get(n.name) or {}).get("reason") or
                                                  f"daemon state {n.daemon_state}")))
            for n in nodes if n.daemon_state in NODE_OUT_OF_SERVICE]


def osds_out(osds: dict[str, Any]) -> list[Finding]:
    """OSDs whose stats say `in` is 0 (an OSD without stats yet is not judged)."""
    found = []
    for osd_id, doc in sorted(osds.items()):
        stats = doc.get("stats") if isinstance(doc, dict) else None
        if isinstance(stats, dict) and "in" in stats and stats["in"] not in (1, True, "1"):
            found.append(Finding(faults.fault_name(OSD_OUT, osd_id), 50, f"OSD {osd_id} was marked out"))
    return found


def ceph_checks(status_doc: Any, now: float, stale_after: float) -> list[Finding] | None:
    """One finding per Ceph health check; None when the status is missing or stale (unknown)."""
    if not isinstance(status_doc, dict) or now - float(status_doc.get("time") or 0) > stale_after:
        return None
    health = status_doc.get("health")
    if not isinstance(health, dict):
        status = status_doc.get("status")
        health = status.get("health") if isinstance(status, dict) else None
    if not isinstance(health, dict):
        return None
    return [Finding(name, delta, message) for name, delta, message in health_faults(health)]


def vms_failed(vms: Iterable[tuple[VMRecord, VMStatus | None]]) -> list[Finding]:
    found = []
    for vm, status in vms:
        if vm.state != "fail":
            continue
        node = (status.node if status else "") or vm.node
        reason = status.failed_reason if status else ""
        # the reconciler's words when it fails a start (pvc.node.vms.actions), so they agree
        found.append(Finding(faults.fault_name(VM_FAILED, vm.name), 10,
                             _details(f"VM {vm.name} failed to start on {node}" if node else
                                      f"VM {vm.name} was failed", reason)))
    return found


def memory_overprovisioned(nodes: list[NodeRecord]) -> list[Finding]:
    """Σ allocated ≥ total - the largest node (as upstream), once anything is allocated (a cluster
    with nothing allocated is not overprovisioned, whatever its size)."""
    totals = [n.memory.total for n in nodes]
    allocated = sum(n.memory.allocated for n in nodes)
    available = sum(totals) - max(totals, default=0)
    if allocated <= 0 or allocated < available:
        return []
    return [Finding(MEMORY_OVERPROVISIONED, 50, f"Cluster memory was overprovisioned: {allocated} MiB "
                                                f"allocated >= {available} MiB (N-1)")]


def not_recovered_ended(active: Iterable[FaultRecord],
                        vms: Iterable[tuple[VMRecord, VMStatus | None]]) -> list[str]:
    """Active VM_NOT_RECOVERED_<VM> faults whose VM runs again, or is gone."""
    running: dict[str, bool] = {}
    for vm, status in vms:
        runs = vm.state == "start" and status is not None and status.running
        for name in (faults.fault_name(VM_NOT_RECOVERED, vm.name), f"{VM_NOT_RECOVERED}_{vm.name}"):
            running[faults.fault_id(name)] = runs
    return [f.id for f in active
            if f.id.startswith(f"{VM_NOT_RECOVERED}_") and running.get(f.id, True)]


@dataclass
class PassResult:
    raised: list[str] = field(default_factory=list)      # new or active again
    kept: list[str] = field(default_factory=list)        # still active, refreshed
    refused: list[str] = field(default_factory=list)     # not raised: maintenance
    resolved: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)


class ClusterChecks:
    """One pass of the cluster checks over ZooKeeper (`run_once`)."""

    def __init__(self, zk: ZK, retention_days: float = 7, stale_after: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.zk, self.retention_days, self.stale_after, self.clock = zk, retention_days, stale_after, clock

    def _vms(self) -> list[tuple[VMRecord, VMStatus | None]]:
        uuids = self.zk.children(schema.VMS)
        docs = self.zk.get_many([schema.vm(u) for u in uuids] + [schema.vm_status(u) for u in uuids])
        out = []
        for uuid in uuids:
            data, sdata = docs.get(schema.vm(uuid)), docs.get(schema.vm_status(uuid))
            if not isinstance(data, dict):
                continue
            try:
                out.append((VMRecord.model_validate(data),
                            VMStatus.model_validate(sdata) if isinstance(sdata, dict) else None))
            except ValueError:
                continue
        return out

    def findings(self) -> tuple[list[Finding], bool, list[tuple[VMRecord, VMStatus | None]]]:
        """What holds now; whether the Ceph status was usable; the VMs read."""
        nodes = load_nodes(self.zk)
        ids = self.zk.children(schema.CEPH_OSDS)
        osd_docs = self.zk.get_many([schema.osd(i) for i in ids])
        osds = {i: osd_docs.get(schema.osd(i)) for i in ids}
        vms = self._vms()
        ceph = ceph_checks(self.zk.get(schema.CEPH_STATUS, None), self.clock(), self.stale_after)
        found = [*dead_nodes(nodes, load_fencing(self.zk)), *osds_out(osds), *(ceph or []),
                 *vms_failed(vms), *memory_overprovisioned(nodes)]
        return found, ceph is not None, vms

    def run_once(self) -> PassResult:
        result = PassResult()
        # The faults first, the conditions after: a fault raised meanwhile (fencing) is not
        # mistaken for one whose condition ended.
        before = {f.id: f for f in faults.load_faults(self.zk)}
        found, ceph_known, vms = self.findings()
        firing = {f.id for f in found}
        for finding in found:
            fault = faults.raise_fault(self.zk, finding.name, finding.delta, finding.message)
            if fault is None:
                result.refused.append(finding.id)
            elif finding.id in before:
                result.kept.append(finding.id)
            else:
                result.raised.append(finding.id)
        owned = OWNED_PREFIXES + (CEPH_PREFIXES if ceph_known else ())
        ended = [fid for fid in before if fid not in firing and
                 (fid.startswith(owned) or fid == MEMORY_OVERPROVISIONED)]
        ended += not_recovered_ended(before.values(), vms)
        for fid in ended:
            if faults.resolve_fault(self.zk, fid):
                result.resolved.append(fid)
        result.pruned = faults.prune_resolved(self.zk, self.retention_days)
        for what, ids in (("raised", result.raised), ("resolved", result.resolved),
                          ("pruned", result.pruned)):
            if ids:
                log.info("cluster checks: fault(s) %s: %s", what, ", ".join(sorted(ids)))
        return result


class ClusterHealthService:
    """Runs `ClusterChecks` every monitoring interval while this node is the primary."""

    def __init__(self, settings: Settings, zk: ZK, is_primary: Callable[[], bool],
                 stopping: threading.Event) -> None:
        self.interval = float(settings.timer.monitoring_interval)
        self.checks = ClusterChecks(zk, settings.faults.fault_retention_days,
                                    stale_after=max(60.0, 4 * self.interval))
        self.is_primary, self.stopping = is_primary, stopping
        self.thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="cluster-health", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopping.wait(self.interval):
            if self.is_primary():
                self.run_once()

    def run_once(self) -> PassResult | None:
        """One pass; a failure is logged when it starts (not every pass while it lasts)."""
        try:
            result = self.checks.run_once()
        except (ClusterUnavailable, KazooException) as exc:
            if not self._failing:
                log.warning("cluster checks failed (retrying every %.0fs): %s", self.interval, exc)
            self._failing = True
            return None
        except Exception:
            log.exception("cluster checks failed")
            self._failing = True
            return None
        if self._failing:
            log.info("cluster checks: working again")
        self._failing = False
        return result
