"""The sender side of a migration: this node runs a VM whose record names another node.

Live first (up to `migration_attempts` tries) unless the VM's method says shutdown; when live
fails, a shutdown move (power off here, record start: the target starts it) unless live is
forced, in which case the migration is aborted and the VM stays here. A VM that passes a host PCI
function through (an SR-IOV hostdev NIC) is never tried live. While a live migration
runs, the VM's status carries `migrating_to`/`migrating_from`, so the target does not start the
VM meanwhile (`decision.observe`: incoming).
"""

from __future__ import annotations

import logging
import time

from pvc.adapters.hypervisor import DomainNotFound, HypervisorError
from pvc.cluster.vms.transitions import abort_migration
from pvc.core import domainxml
from pvc.core.records import VMRecord
from pvc.core.vocabulary import VM_MIGRATE_STATES
from pvc.node.vms.actions import DomainActions
from pvc.node.vms.context import VMContext
from pvc.node.vms.store import PeerNode

log = logging.getLogger("pvcnoded.vms")


class Migrator:
    def __init__(self, ctx: VMContext, actions: DomainActions) -> None:
        self.ctx, self.actions = ctx, actions

    def migrate(self, record: VMRecord) -> None:
        """Send the VM to `record.node`: live (up to 3 tries) unless its method says shutdown;
        fall back to a shutdown move unless live is forced; record where it went."""
        ctx = self.ctx
        uuid, target = record.uuid, record.node
        force_live = record.migration_method == "live" or record.state == "migrate-live"
        peer = ctx.store.node_docs().get(target)
        alive = target in ctx.store.alive_nodes()
        if not alive or peer is None or peer.daemon_state != "run":
            self._abort(record, f"target node {target} is not running")
            return
        passthrough = _passthrough(record)      # a host PCI function (SR-IOV hostdev) cannot go live
        if passthrough and force_live:
            self._abort(record, f"it passes host PCI device {passthrough} through, which cannot be "
                                "migrated live")
            return
        ctx.patch(uuid, migrating_to=target, migrating_from=ctx.name, migration_started=time.time())
        try:
            if record.migration_method != "shutdown" and not passthrough:
                finished, error = self._send_live(record, peer)
                if finished:
                    return
                if force_live:
                    self._abort(record, f"live migration to {target} failed: {error}")
                    return
                log.info("VM %s: falling back to a shutdown migration to %s", uuid, target)
            self._shutdown_move(record)
        finally:
            ctx.patch(uuid, migrating_to="", migrating_from="")

    def _send_live(self, record: VMRecord, peer: PeerNode) -> tuple[bool, str]:
        """Live migration tries; (True, "") when nothing is left to do (sent, the VM gone or its
        migration called off meanwhile), else (False, the last error)."""
        ctx = self.ctx
        uuid, target = record.uuid, record.node
        uri, address = peer.libvirt_migration_uri, peer.migration_address
        if not uri:
            return False, (f"node {target} publishes no migration URI (set hypervisor.migration_address "
                           "in its configuration)")
        error = ""
        for attempt in range(1, ctx.settings.migration_attempts + 1):
            if not self._still_migrating(uuid, target):
                return True, ""
            try:
                result = ctx.hv.migrate(uuid, uri, f"tcp://{address}" if address else None,
                                        max_downtime_ms=max(1, record.migration_max_downtime), live=True,
                                        timeout=ctx.settings.migration_timeout,
                                        encrypted=ctx.settings.migration_tls)
            except DomainNotFound:
                return True, ""                        # gone meanwhile; look again
            except HypervisorError as exc:
                error = str(exc)
                log.warning("VM %s: live migration to %s, attempt %d failed: %s", uuid, target, attempt,
                            error)
                continue
            self._migrated(record, target, result.duration_s, result.downtime_ms)
            return True, ""
        return False, error

    def _shutdown_move(self, record: VMRecord) -> None:
        """Power off here, then record start; the target starts it."""
        ctx, uuid = self.ctx, record.uuid
        if not self.actions.power_off(uuid, set(VM_MIGRATE_STATES)):
            return
        ctx.settle(uuid, "start", VM_MIGRATE_STATES)
        ctx.patch(uuid, last_migration={"time": time.time(), "duration_s": None, "downtime_ms": None,
                                        "from": ctx.name, "to": record.node, "method": "shutdown"})

    def _still_migrating(self, uuid: str, target: str) -> bool:
        record = self.ctx.store.load_vm(uuid)
        return record is not None and record.state in VM_MIGRATE_STATES and record.node == target

    def _migrated(self, record: VMRecord, target: str, duration: float, downtime: int | None) -> None:
        ctx = self.ctx
        log.info("VM %s (%s) migrated to %s in %.2fs, downtime %s ms", record.name, record.uuid, target,
                 duration, downtime)
        ctx.live.pop(record.uuid, None)
        # Status first (it runs there now), then the state: the target sees a consistent picture.
        # The VNC address is this node's: cleared, so nothing (pvcapid's VNC relay) is sent to the
        # target's host on this node's port, which may be another VM's there, until the target
        # reports its own at its next pass.
        ctx.patch(record.uuid, node=target, running=True, migrating_to="", migrating_from="", vnc="",
                  last_migration={"time": time.time(), "duration_s": round(duration, 3),
                                  "downtime_ms": downtime, "from": ctx.name, "to": target,
                                  "method": "live"})
        ctx.settle(record.uuid, "start", VM_MIGRATE_STATES)

    def _abort(self, record: VMRecord, why: str) -> None:
        """Keep the VM here: state start, node back to this node, the origin forgotten."""
        ctx = self.ctx
        log.error("VM %s (%s): migration aborted: %s", record.name, record.uuid, why)
        ctx.store.update_vm(record.uuid, abort_migration(ctx.name))
        ctx.patch(record.uuid, last_migration_error={"time": time.time(), "to": record.node, "error": why})


def _passthrough(record: VMRecord) -> str:
    """The first hostdev interface's device (its VF name or PCI address), "" when none."""
    try:
        nics = domainxml.parse(record.xml).interfaces
    except Exception:
        return ""
    return next((n.sriov_device or n.source or "hostdev" for n in nics if n.type == "hostdev"), "")
