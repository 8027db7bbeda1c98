"""Orphans: domains this cluster started for a VM that no longer exists (issue #17).

Why: a start can finish after its VM was removed, or a node can miss a remove while it is cut
off; such a QEMU would run on, on volumes that may be gone. Every domain a node starts bears
the ownership mark (`pvc.core.domainxml.ownership`: the cluster's id and the VM's UUID). A
running domain that is not among the VM records is looked at: its mark read from the live XML,
the VM's znode read again from ZooKeeper (a list that missed it is never enough), and only a
domain marked by this cluster for this very UUID whose VM is really gone is destroyed. Domains
without the mark, or marked by another cluster, are left alone (logged once).

PVC's domains are transient (created with createXML), so destroying one also removes it from
libvirt: there is nothing left to undefine.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Container

from pvc.adapters.hypervisor import DomainInfo, DomainNotFound
from pvc.core import domainxml
from pvc.core.domainxml import OwnerMark
from pvc.node.vms.context import VMContext

log = logging.getLogger("pvcnoded.vms")


class Verdict(enum.Enum):
    UNMARKED = "unmarked"            # not started by PVC (or by a PVC without marks): leave alone
    OTHER_CLUSTER = "other_cluster"  # PVC's mark, another cluster's id (or another VM's UUID)
    OWNED = "owned"                  # ours, and its VM exists
    ORPHAN = "orphan"                # ours, and its VM is gone: destroy


def verdict(mark: OwnerMark | None, cluster: str, uuid: str, vm_exists: bool) -> Verdict:
    """What to do with a running domain `uuid` that bears `mark` (pure)."""
    if mark is None:
        return Verdict.UNMARKED
    if not cluster or not mark.owns(cluster, uuid):
        return Verdict.OTHER_CLUSTER
    return Verdict.OWNED if vm_exists else Verdict.ORPHAN


class OrphanReaper:
    """Finds and destroys this node's orphan domains (counted in `ctx.orphans_destroyed`)."""

    def __init__(self, ctx: VMContext) -> None:
        self.ctx = ctx
        # Domains found unmarked or another cluster's: reported once, not read again (a running
        # domain's mark does not change).
        self._foreign: set[str] = set()

    def sweep(self, domains: dict[str, DomainInfo], known: Container[str]) -> int:
        """Look at every running domain whose UUID is not in `known` (the VM records just read);
        how many orphans were destroyed."""
        count = 0
        for uuid, info in domains.items():
            if info.running and uuid not in known and uuid not in self._foreign:
                count += self.check(uuid, info.name)
        self._foreign &= set(domains)
        return count

    def check(self, uuid: str, name: str = "") -> bool:
        """Destroy the domain `uuid` if it is this cluster's and its VM is gone (read now)."""
        ctx = self.ctx
        try:
            mark = domainxml.owner_of(ctx.hv.live_xml(uuid))
        except DomainNotFound:
            return False
        cluster = ctx.store.cluster_id() if mark is not None else ""
        exists = ctx.store.vm_exists(uuid) if mark is not None and mark.owns(cluster, uuid) else True
        found = verdict(mark, cluster, uuid, exists)
        if found is Verdict.ORPHAN:
            log.warning("domain %s (%s) was started by this cluster for a VM that no longer exists; "
                        "destroying it", name or uuid, uuid)
            try:
                ctx.hv.destroy(uuid)
            except DomainNotFound:
                return False
            ctx.orphans_destroyed += 1
            ctx.known_running.discard(uuid)
            ctx.live.pop(uuid, None)
            return True
        if found is not Verdict.OWNED and uuid not in self._foreign:
            self._foreign.add(uuid)
            why = ("bears no PVC ownership mark" if found is Verdict.UNMARKED
                   else f"is marked by another cluster ({mark.cluster if mark else '?'})")
            log.info("domain %s (%s) runs here but is not a VM of this cluster (it %s); leaving it alone",
                     name or uuid, uuid, why)
        return False
