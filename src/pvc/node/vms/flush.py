"""Flush and unflush of this node (pvc-facts §3.7), carried out by the node itself.

Flush moves every VM running here away, one at a time, waiting for each: to the node its
selector picks (state migrate, this node remembered as `last_node`), or, with no node that can
take it, shuts it down with autostart set. Unflush brings the flushed VMs back and starts the
ones flush shut down. What each writes is a transition of `pvc.cluster.vms.transitions`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pvc.cluster.placement import find_target, vm_demand
from pvc.cluster.vms.transitions import flush_away, flush_shutdown, unflush_autostart, unflush_back
from pvc.core.records import VMRecord
from pvc.core.vocabulary import VM_MIGRATE_STATES
from pvc.node.vms.context import VMContext

log = logging.getLogger("pvcnoded.vms")

KeepGoing = Callable[[], bool]


class Flusher:
    def __init__(self, ctx: VMContext, kick: Callable[[str], None]) -> None:
        self.ctx, self.kick = ctx, kick

    def flush(self, keep_going: KeepGoing = lambda: True) -> None:
        """Move every VM running here away (pvc-facts §3.7), one at a time, waiting for each."""
        ctx = self.ctx
        records = ctx.store.load_vms()
        here = [u for u, d in ctx.hv.list_domains().items() if d.running and u in records]
        log.info("flush: %d VM(s) to move away", len(here))
        for uuid in here:
            if not keep_going():
                log.info("flush aborted by a new request")
                return
            self._wait_state_leaves(uuid, {"restart", "shutdown"}, keep_going)
            record = ctx.store.load_vm(uuid)
            if record is None:
                continue
            if record.node == ctx.name:
                self._send_away(record)
            self.kick(uuid)
            self._wait_gone(uuid, keep_going)

    def _send_away(self, record: VMRecord) -> None:
        ctx = self.ctx
        nodes = list(ctx.store.node_docs().values())
        alive = ctx.store.alive_nodes()
        target = find_target([n for n in nodes if n.name in alive], record.node_selector,
                             ctx.store.cluster_selector(), current=ctx.name, limit=record.node_limit,
                             demand=vm_demand(record))
        if target is None:
            log.info("flush: no target for VM %s; shutting it down (autostart on ready)", record.name)
            ctx.store.update_vm(record.uuid, flush_shutdown(ctx.name))
            return
        log.info("flush: migrating VM %s to %s", record.name, target.name)
        ctx.store.update_vm(record.uuid, flush_away(ctx.name, target.name))

    def _wait_state_leaves(self, uuid: str, states: set[str], keep_going: KeepGoing) -> None:
        ctx = self.ctx
        deadline = time.monotonic() + ctx.settings.flush_wait_s
        while time.monotonic() < deadline and keep_going() and not ctx.stopping.is_set():
            record = ctx.store.load_vm(uuid)
            if record is None or record.state not in states:
                return
            ctx.stopping.wait(ctx.settings.poll_s)

    def _wait_gone(self, uuid: str, keep_going: KeepGoing) -> None:
        ctx = self.ctx
        deadline = time.monotonic() + ctx.settings.flush_wait_s
        while time.monotonic() < deadline and keep_going() and not ctx.stopping.is_set():
            record = ctx.store.load_vm(uuid)
            if record is None or not ctx.hv.is_running(uuid):
                return
            if record.node == ctx.name and record.state not in ("shutdown", *VM_MIGRATE_STATES):
                log.warning("flush: VM %s stays here (state %s)", record.name, record.state)
                return
            ctx.stopping.wait(ctx.settings.poll_s)
        if ctx.hv.is_running(uuid):
            log.warning("flush: VM %s still runs here after %.0fs", uuid, ctx.settings.flush_wait_s)

    def unflush(self, keep_going: KeepGoing = lambda: True) -> None:
        """Bring back VMs flushed from here and start the ones flush shut down (autostart)."""
        ctx = self.ctx
        waiting = []
        for uuid, record in ctx.store.load_vms().items():
            if not keep_going():
                return
            change = next((t for t in (unflush_autostart(ctx.name), unflush_back(ctx.name))
                           if t(record) is not None), None)
            if change is None:
                continue
            ctx.store.update_vm(uuid, change)
            waiting.append(uuid)
            self.kick(uuid)
        for uuid in waiting:
            self._wait_state_leaves(uuid, {*VM_MIGRATE_STATES, "shutdown"}, keep_going)
