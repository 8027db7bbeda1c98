"""What the node does to one domain on its own hypervisor: start (guarded), power off, destroy.

A start happens only here, never twice: under the VM's start lock (`VMStore.start_lock`) the
record, this hypervisor, the daemon's veto and the other nodes' claims are checked again. A VM
with rbd disks starts only when no other client holds a lock on them (this node's stale locks
are broken first) and with monitors and cephx auth filled in (`NodeCeph`). The stored definition
is parsed once per start (`parse_definition`): its typed `Domain` tells which volumes to check, and
`prepare_for_host` turns that same parse into the XML this host starts, with PVC's ownership
mark (this cluster's id and the VM's UUID: `pvc.node.vms.orphans`). A start that finds its VM gone
once the domain runs destroys it at once.
"""

from __future__ import annotations

import logging
import os
import time

from pvc.adapters.ceph import StorageError, StorageNotFound
from pvc.adapters.hypervisor import DomainExists, DomainNotFound, HypervisorError, HypervisorUnavailable
from pvc.core import domainxml
from pvc.core.errors import InvalidInput
from pvc.core.records import VMRecord
from pvc.node.storage import DiskAccess, address_ip, lock_decision
from pvc.node.vms.context import VMContext
from pvc.node.vms.decision import observe
from pvc.node.vms.store import NodeVMStatus

log = logging.getLogger("pvcnoded.vms")


class DomainActions:
    def __init__(self, ctx: VMContext) -> None:
        self.ctx = ctx

    # -- start -------------------------------------------------------------------------------------------

    def start(self, record: VMRecord) -> None:
        """Start here, never twice: under the VM's start lock, re-check everything first."""
        ctx, uuid = self.ctx, record.uuid
        with ctx.store.start_lock(uuid, ctx.settings.start_lock_timeout) as locked:
            if not locked:
                log.info("VM %s: another process holds its start lock; not starting", uuid)
                return
            fresh = ctx.store.load_vm(uuid)
            if fresh is None or fresh.state != "start" or fresh.node != ctx.name:
                return
            if ctx.hv.is_running(uuid):
                return                                 # adopted: it runs already
            if not ctx.may_start():
                log.warning("VM %s: not starting it: this node is cut off from the cluster or fenced", uuid)
                return
            status = ctx.store.load_status(uuid)
            if observe(ctx.name, fresh, status, False, ctx.alive_fn()).running_elsewhere:
                log.warning("VM %s: %s still reports it running; not starting here", uuid, status.node)
                return
            self._launch(fresh, status)

    def _launch(self, record: VMRecord, status: NodeVMStatus) -> None:
        """Create the domain from the stored definition, adapted to this host; record the outcome."""
        ctx, uuid = self.ctx, record.uuid
        try:
            definition = domainxml.parse_definition(record.xml)     # the one parse of this start
            domainxml.check_domain(definition, ctx.settings.domain_policy)
            kvm = ctx.hv.kvm_available()
            volumes, access = definition.domain.rbd_volumes, None
            if volumes and ctx.ceph is not None:
                began = time.monotonic()
                access = self._prepare_rbd(record, volumes)
                if time.monotonic() - began > 2:
                    log.warning("VM %s: Ceph took %.1fs to check its volumes' locks (monitor or OSD "
                                "failover under way?)", record.name, time.monotonic() - began)
                if access is None:
                    return
            os.makedirs(ctx.settings.console_dir, exist_ok=True)
            owner = domainxml.OwnerMark(ctx.store.cluster_id(create=True), uuid)
            xml = domainxml.prepare_for_host(definition, kvm, ceph=access,
                                             console_log=ctx.console_path(record), owner=owner)
            started = time.monotonic()
            ctx.hv.start(xml)
        except DomainExists:
            return
        except HypervisorUnavailable:
            raise                                      # outcome unknown: look again next pass
        except (HypervisorError, InvalidInput, OSError) as exc:
            self._failed(record, str(exc), "failed to start")
            return
        ctx.starts += 1
        ctx.known_running.add(uuid)
        ctx.live.pop(uuid, None)
        log.info("VM %s (%s) started in %.2fs", record.name, uuid, time.monotonic() - started)
        ctx.patch(uuid, node=ctx.name, running=True, libvirt_state="running", failed_reason="",
                  started=time.time())
        if not ctx.store.vm_exists(uuid):
            # Removed while it started (a remove waits for the start lock, but anything else that
            # deletes the VM does not): nothing may keep running for it.
            log.warning("VM %s (%s) was removed while it started here; destroying its domain",
                        record.name, uuid)
            self.destroy(uuid)
            ctx.orphans_destroyed += 1
            return
        if status.failed_reason:
            ctx.vm_fault(record.name, None)            # it failed before; it runs now

    def _failed(self, record: VMRecord, reason: str, what: str) -> None:
        """The VM cannot start here: the reason in its status, then state fail (so whoever sees the
        state finds the reason), and a cluster fault."""
        ctx = self.ctx
        log.error("VM %s (%s) %s: %s", record.name, record.uuid, what, reason)
        ctx.patch(record.uuid, node=ctx.name, running=False, libvirt_state="shutoff", failed_reason=reason)
        ctx.settle(record.uuid, "fail", {"start"})
        ctx.vm_fault(record.name, f"VM {record.name} failed to start on {ctx.name}: {reason}")

    def _prepare_rbd(self, record: VMRecord, volumes: list[str]) -> DiskAccess | None:
        """Clear this node's stale RBD locks; the monitors and auth to fill in, or None when the
        VM must not start (now: storage unreachable; or ever: a foreign lock, which fails the VM
        with the reason)."""
        ceph = self.ctx.ceph
        assert ceph is not None
        try:
            access = ceph.disk_access()
            # The OSD map may be stale right after a node failure (its OSDs just marked down by
            # fencing): without the newest one the lock checks below wait for timeouts (~15 s).
            ceph.storage.refresh_maps()
            refusal = self._flush_locks(volumes)
        except HypervisorUnavailable:
            raise
        except (StorageError, HypervisorError) as exc:
            log.warning("VM %s (%s): storage not ready, not starting it yet: %s", record.name, record.uuid,
                        getattr(exc, "message", exc))
            return None
        if refusal:
            self._failed(record, refusal, "not started")
            return None
        return access

    def _flush_locks(self, volumes: list[str]) -> str:
        """pvc-facts §4.2 start: break this node's stale locks on the VM's volumes, unless some
        volume is locked from elsewhere; then change nothing and return why not to start."""
        ceph = self.ctx.ceph
        assert ceph is not None
        storage, own = ceph.storage, ceph.own_addresses()
        stale = []
        for volume in volumes:
            pool, _, name = volume.partition("/")
            try:
                lockers = storage.lockers(pool, name)
                watchers = storage.watchers(pool, name) if lockers else []
            except StorageNotFound:
                return f"volume {volume} does not exist"
            decision = lock_decision(volume, lockers, watchers, own, self._node_addresses() if any(
                address_ip(lk.address) not in own for lk in lockers) else None)
            if decision.refuse:
                return decision.refuse
            stale += [(pool, name, locker) for locker in decision.stale]
        for pool, name, locker in stale:
            log.info("breaking stale lock of %s on %s/%s (held from this node)", locker.client, pool, name)
            try:
                storage.break_lock(pool, name, locker)
            except StorageNotFound:
                pass                    # released meanwhile
        return ""

    def _node_addresses(self) -> dict[str, str]:
        """Address -> node name, from the node documents (to name a lock's holder)."""
        return {d.migration_address: n for n, d in self.ctx.store.node_docs().items() if d.migration_address}

    # -- stop ----------------------------------------------------------------------------------------------

    def destroy(self, uuid: str) -> None:
        try:
            self.ctx.hv.destroy(uuid)
        except DomainNotFound:
            pass
        self.after_gone(uuid)

    def after_gone(self, uuid: str) -> None:
        ctx = self.ctx
        if ctx.store.load_status(uuid).node == ctx.name:
            ctx.patch(uuid, running=False, libvirt_state="shutoff", vnc="")

    def power_off(self, uuid: str, keep: set[str]) -> bool:
        """ACPI shutdown, poll until off; destroy after the timeout. Abort (False) when the state
        leaves `keep` (the administrator changed their mind); True when the VM is off."""
        ctx = self.ctx
        try:
            ctx.hv.shutdown(uuid)
        except DomainNotFound:
            self.after_gone(uuid)
            return True
        deadline = time.monotonic() + ctx.settings.shutdown_timeout
        while ctx.hv.is_running(uuid):
            if ctx.stopping.is_set():
                return False
            record = ctx.store.load_vm(uuid)
            if record is None or record.state not in keep:
                log.info("VM %s: state changed during shutdown; stopping the wait", uuid)
                return False
            if time.monotonic() >= deadline:
                log.warning("VM %s did not shut down within %.0fs; destroying it", uuid,
                            ctx.settings.shutdown_timeout)
                self.destroy(uuid)
                return True
            ctx.stopping.wait(ctx.settings.poll_s)
        self.after_gone(uuid)
        return True
