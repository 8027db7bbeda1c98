"""What a keepalive reports about the VMs running here: statuses, stats shards, consoles, figures.

Only a real change rewrites a VM's status (every write wakes the API's /vms cache); stats go to
this node's shards (`schema.vm_stats`), written only when changed; the serial console logs are
tailed into ZooKeeper (`ConsoleTail`); the figures go into this node's document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvc.adapters.hypervisor import DomainInfo, HypervisorError
from pvc.cluster.placement import vm_demand
from pvc.core import domainxml, schema
from pvc.core.errors import InvalidInput
from pvc.core.records import VMRecord
from pvc.node.console import ConsoleTail
from pvc.node.vms.context import VMContext
from pvc.node.vms.store import NodeVMStatus, StatusChange, merge_status


class StatusReport:
    def __init__(self, ctx: VMContext, busy: Callable[[str], bool]) -> None:
        self.ctx, self.busy = ctx, busy
        settings = ctx.settings
        self.console = ConsoleTail(settings.console_dir, settings.console_lines, ctx.store.put_console,
                                   settings.console_max_bytes, settings.console_backups)
        self._stats_written: dict[int, dict[str, Any]] | None = None   # shard -> what we last wrote

    def report(self, records: dict[str, VMRecord], statuses: dict[str, NodeVMStatus],
               domains: dict[str, DomainInfo], stats: dict[str, dict[str, Any]],
               now: float) -> dict[str, Any]:
        """Statuses (batched writes), stats, consoles; this node's VM figures."""
        ctx = self.ctx
        running = {u: d for u, d in domains.items() if d.running and u in records}
        ctx.store.update_statuses(self._status_changes(records, statuses, running, now))
        self._write_stats({u: stats.get(u, {}) for u in running})
        self.console.tick({u: path for u in running
                           if (path := self._live_facts(u, records[u]).console_log) is not None})
        for gone in [u for u in ctx.live if u not in running]:
            ctx.live.pop(gone, None)
        return self.figures(records, running)

    def _status_changes(self, records: dict[str, VMRecord], statuses: dict[str, NodeVMStatus],
                        running: dict[str, DomainInfo], now: float) -> dict[str, StatusChange]:
        me = self.ctx.name
        changes: dict[str, StatusChange] = {}
        for uuid in records:
            status = statuses.get(uuid) or NodeVMStatus()
            fields: dict[str, Any] | None = None
            if uuid in running:
                if status.migrating_to == me or self.busy(uuid):
                    # incoming migration (the sender reports it) or a job acting on the VM now
                    # (it writes the status itself; this snapshot may be older than its write)
                    continue
                fields = {"node": me, "running": True, "libvirt_state": running[uuid].state,
                          "vnc": self._live_facts(uuid, records[uuid]).vnc}
            elif status.node == me and status.running and not self.busy(uuid) and not status.migrating_to:
                fields = {"running": False, "libvirt_state": "shutoff", "vnc": ""}
            if fields is None:
                continue
            # Only a real change rewrites the status: every write wakes the API's /vms cache.
            stale = any(getattr(status, k) != v for k, v in fields.items())
            # (stats kept in the status by older versions move to schema.vm_stats)
            if stale or "stats" in status.model_fields_set:
                changes[uuid] = merge_status({**fields, "updated": now})
        return changes

    def _write_stats(self, stats: dict[str, dict[str, Any]]) -> None:
        """This node's stats shards (schema.vm_stats): write the changed ones, drop the stale ones.

        A VM that no longer runs here leaves its shard; a restarted daemon first reads what
        its predecessor left, so shards beyond the current count are deleted, not orphaned.
        """
        ctx = self.ctx
        size = schema.VM_STATS_SHARD
        uuids = sorted(stats)
        shards = {i // size: {u: stats[u] for u in uuids[i:i + size]} for i in range(0, len(uuids), size)}
        if self._stats_written is None:
            self._stats_written = ctx.store.stats_shards(ctx.name)
        changed = {i: doc for i, doc in shards.items() if self._stats_written.get(i) != doc}
        stale = [i for i in self._stats_written if i not in shards]
        if changed or stale:
            ctx.store.write_stats(ctx.name, changed, stale)
        self._stats_written = shards

    def _live_facts(self, uuid: str, record: VMRecord) -> domainxml.LiveFacts:
        """VNC address and console log file from the live XML (`domainxml.live_facts`), read
        once per arrival here; this node's console path while libvirt cannot tell."""
        ctx = self.ctx
        if uuid not in ctx.live:
            try:
                ctx.live[uuid] = domainxml.live_facts(ctx.hv.live_xml(uuid))
            except (HypervisorError, InvalidInput):
                return domainxml.LiveFacts("", ctx.console_path(record))
        return ctx.live[uuid]

    def figures(self, records: dict[str, VMRecord], running: dict[str, DomainInfo]) -> dict[str, Any]:
        """running_domains, domains_count, vcpu.allocated, memory.allocated/provisioned (MiB)."""
        allocated = sum(d.memory_mib for d in running.values())
        vcpus = sum(d.vcpus for d in running.values())
        provisioned = allocated
        for uuid, record in records.items():
            if uuid not in running and record.node == self.ctx.name:
                provisioned += vm_demand(record).memory_mib
        return {"running_domains": sorted(running), "domains_count": len(running),
                "vcpu_allocated": vcpus, "memory_allocated": allocated,
                "memory_provisioned": provisioned}

