"""The node's VM reconciler: make this node's hypervisor match the VM records (DESIGN D2, D7).

The API only writes desired state (`VMRecord.state`, `.node`); the reconciler compares it with
what really runs on this node's hypervisor and acts per PVC's "who acts" table (pvc-facts §4.2,
`decision.decide`):

* only the node named in `node` starts a VM, and only after checking its own hypervisor and that
  no other node reports the VM running (a dead node's claim stands until fencing clears it);
  starts are serialised per VM (one job per UUID in this process) and across processes by a
  ZooKeeper lock, so a VM is never started twice (`actions`);
* a node running a VM it does not own migrates it away (state migrate*, `migration`) or stops it;
* restart/shutdown are carried out and then recorded (restart -> start, shutdown -> stop);
* a VM that should run here and does not (QEMU crashed) is started again;
* a domain this cluster started for a VM that no longer exists (an orphan: its ownership mark
  names this cluster and a VM whose znode is gone, read again) is destroyed (`orphans`).

Watches only wake the loop; a full pass every keepalive catches anything missed, and a restarted
daemon simply adopts the domains libvirtd still runs (they are transient, so they outlive us).
All ZooKeeper access goes through a `VMStore`, so the unit tests run the real reconciler over an
in-memory store and a FakeHypervisor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pvc.adapters.hypervisor import DomainInfo, Hypervisor, HypervisorUnavailable
from pvc.core import schema
from pvc.core.errors import ClusterUnavailable, PVCError
from pvc.core.records import VMRecord
from pvc.core.vocabulary import VM_MIGRATE_STATES
from pvc.core.zk import ZK, decode
from pvc.node.storage import NodeCeph
from pvc.node.vms.actions import DomainActions
from pvc.node.vms.context import ReconcilerSettings, VMContext
from pvc.node.vms.decision import IDLE, Action, decide, observe
from pvc.node.vms.flush import Flusher, KeepGoing
from pvc.node.vms.migration import Migrator
from pvc.node.vms.orphans import OrphanReaper
from pvc.node.vms.report import StatusReport
from pvc.node.vms.store import NodeVMStatus, VMStore, status_of

log = logging.getLogger("pvcnoded.vms")


class VMReconciler:
    """Runs on every node; acts only on this node's hypervisor, records what it did."""

    def __init__(self, store: VMStore, hypervisor: Hypervisor, node: str,
                 settings: ReconcilerSettings | None = None, zk: ZK | None = None,
                 ceph: NodeCeph | None = None) -> None:
        self.ctx = VMContext(store, hypervisor, node, settings or ReconcilerSettings(), ceph)
        self.store, self.hv, self.name, self.settings = store, hypervisor, node, self.ctx.settings
        self.zk = zk                            # only for watches; None in the unit tests
        self.ceph = ceph
        self.stopping = self.ctx.stopping
        self.actions = DomainActions(self.ctx)
        self.migrator = Migrator(self.ctx, self.actions)
        self.flusher = Flusher(self.ctx, self.kick)
        self.report = StatusReport(self.ctx, self.busy)
        self.orphans = OrphanReaper(self.ctx)
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._dirty: set[str] = set()
        self._threads: dict[str, threading.Thread] = {}
        self._watched: set[str] = set()
        self._status_seen: dict[str, tuple[Any, ...]] = {}
        self._last_pass = 0.0
        self._loop: threading.Thread | None = None

    # What the node daemon and the tests read or set (kept in the shared context).

    @property
    def starts(self) -> int:
        """Domains this reconciler created (tests, logs)."""
        return self.ctx.starts

    @property
    def orphans_destroyed(self) -> int:
        """Orphan domains (this cluster's mark, VM gone) this reconciler destroyed."""
        return self.ctx.orphans_destroyed

    @property
    def known_running(self) -> set[str]:
        """The domains seen running here: what the self-fence kills when libvirtd cannot be asked."""
        return self.ctx.known_running

    @property
    def may_start(self) -> Callable[[], bool]:
        """The daemon's veto on starts (self-fenced, or declared dead)."""
        return self.ctx.may_start

    @may_start.setter
    def may_start(self, veto: Callable[[], bool]) -> None:
        self.ctx.may_start = veto

    @property
    def vm_fault(self) -> Callable[[str, str | None], None]:
        """Raises (message) or clears (None) the cluster fault of a VM that failed to start."""
        return self.ctx.vm_fault

    @vm_fault.setter
    def vm_fault(self, hook: Callable[[str, str | None], None]) -> None:
        self.ctx.vm_fault = hook

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, own_timer: bool = True) -> None:
        """Watch /vms and each VM; with own_timer, also run the periodic pass in a thread
        (the node daemon drives it from its keepalive instead, but a missed keepalive must not
        stop reconciliation, so the loop also fires when no pass happened for 1.5 intervals)."""
        if self.zk is not None:
            self.zk.watch_children(schema.VMS, self._on_children)
        if own_timer:
            self._loop = threading.Thread(target=self._timer_loop, name="vm-reconciler", daemon=True)
            self._loop.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reconciling. Running VMs are left alone: a restarted daemon adopts them."""
        self.stopping.set()
        for thread in list(self._threads.values()):
            thread.join(timeout)
        if self._loop is not None:
            self._loop.join(timeout)

    def _timer_loop(self) -> None:
        while not self.stopping.wait(self.settings.interval / 2):
            if time.monotonic() - self._last_pass >= self.settings.interval * 1.5:
                try:
                    self.full_pass()
                except Exception as exc:
                    log.warning("VM pass failed: %s", exc)

    # -- watches -----------------------------------------------------------------------------------

    def _on_children(self, children: list[str]) -> bool:
        if self.stopping.is_set():
            return False
        assert self.zk is not None
        for uuid in children:
            if uuid not in self._watched:
                self._watched.add(uuid)
                self.zk.watch_data(schema.vm(uuid), self._doc_watcher(uuid))
                self.zk.watch_data(schema.vm_status(uuid), self._status_watcher(uuid))
        return True

    def _doc_watcher(self, uuid: str) -> Callable[[bytes | None, Any], bool]:
        def on_doc(data: bytes | None, stat: Any) -> bool:
            if self.stopping.is_set():
                return False
            if data is None and stat is None:
                self._watched.discard(uuid)
                self._status_seen.pop(uuid, None)
                self.kick(uuid)          # removed: a domain still running here is an orphan
                return False
            self.kick(uuid)
            return True
        return on_doc

    def _status_watcher(self, uuid: str) -> Callable[[bytes | None, Any], bool]:
        def on_status(data: bytes | None, _stat: Any) -> bool:
            if self.stopping.is_set() or uuid not in self._watched:
                return False
            status = status_of(decode(data) if data else None)
            # Stats change every keepalive; only placement-relevant changes wake the VM's job.
            seen = (status.node, status.running, status.migrating_to)
            if self._status_seen.get(uuid) != seen:
                self._status_seen[uuid] = seen
                self.kick(uuid)
            return True
        return on_status

    # -- per-VM jobs ---------------------------------------------------------------------------------

    def kick(self, uuid: str) -> None:
        """Reconcile one VM soon; at most one job per VM runs, a kick meanwhile makes it rerun."""
        with self._lock:
            if self.stopping.is_set():
                return
            if uuid in self._busy:
                self._dirty.add(uuid)
                return
            self._busy.add(uuid)
            thread = threading.Thread(target=self._job, args=(uuid,), name=f"vm-{uuid[:8]}", daemon=True)
            self._threads[uuid] = thread
        thread.start()

    def _job(self, uuid: str) -> None:
        try:
            while not self.stopping.is_set():
                with self._lock:
                    self._dirty.discard(uuid)
                try:
                    self.reconcile(uuid)
                except HypervisorUnavailable as exc:
                    log.warning("VM %s: hypervisor unavailable (%s); retrying at the next pass", uuid, exc)
                except (ClusterUnavailable, PVCError) as exc:
                    log.warning("VM %s: %s; retrying at the next pass", uuid, exc)
                except Exception:
                    log.exception("VM %s: reconcile failed", uuid)
                with self._lock:
                    if uuid not in self._dirty:
                        return
        finally:
            with self._lock:
                self._busy.discard(uuid)
                self._dirty.discard(uuid)
                self._threads.pop(uuid, None)

    def busy(self, uuid: str) -> bool:
        with self._lock:
            return uuid in self._busy

    def idle(self) -> bool:
        with self._lock:
            return not self._busy

    def reconcile(self, uuid: str) -> Action:
        """Decide with fresh data and act, until there is nothing left to do (bounded)."""
        action = Action.NONE
        for _ in range(6):
            record = self.store.load_vm(uuid)
            if self.stopping.is_set():
                return Action.NONE
            if record is None:
                if self.hv.is_running(uuid):
                    self.orphans.check(uuid)
                return Action.NONE
            status = self.store.load_status(uuid)
            here = self.hv.is_running(uuid)
            action = decide(self.name, observe(self.name, record, status, here, self.ctx.alive_fn()))
            if action in IDLE:
                if action is not Action.WAIT:     # e.g. a paused incoming domain is not "ours" yet
                    self._settle_status(uuid, status, here)
                return action
            log.info("VM %s (%s): state %s, node %s, running here %s -> %s", record.name, uuid,
                     record.state, record.node, here, action.value)
            if not self._execute(action, record):
                return action
        return action

    def _settle_status(self, uuid: str, status: NodeVMStatus, here: bool) -> None:
        """Keep the status's claim about this node true (running here or not)."""
        if here and (status.node != self.name or not status.running):
            self.ctx.live.pop(uuid, None)
            self.ctx.patch(uuid, node=self.name, running=True, libvirt_state="running")
        elif not here and status.node == self.name and status.running:
            self.ctx.patch(uuid, running=False, libvirt_state="shutoff", vnc="")

    def _execute(self, action: Action, record: VMRecord) -> bool:
        """Carry out one action; True when the VM should be looked at again right away."""
        uuid, ctx, actions = record.uuid, self.ctx, self.actions
        if action is Action.START:
            actions.start(record)
            return True
        if action is Action.RESTART:
            actions.power_off(uuid, {"restart"})
            return ctx.settle(uuid, "start", {"restart"})
        if action is Action.SHUTDOWN:
            if actions.power_off(uuid, {"shutdown"}):
                ctx.settle(uuid, "stop", {"shutdown"})
            return True
        if action in (Action.STOP, Action.TERMINATE):
            actions.destroy(uuid)
            return True
        if action is Action.SHUTDOWN_AWAY:
            actions.power_off(uuid, {"shutdown"})
            return True
        if action is Action.MIGRATE:
            self.migrator.migrate(record)
            return True
        if action is Action.WRITE_START:
            return ctx.settle(uuid, "start", {"restart", *VM_MIGRATE_STATES})
        if action is Action.WRITE_STOP:
            return ctx.settle(uuid, "stop", {"shutdown"})
        return False

    # -- the periodic pass -----------------------------------------------------------------------------

    def full_pass(self, records: dict[str, VMRecord] | None = None,
                  statuses: dict[str, NodeVMStatus] | None = None,
                  domains: dict[str, DomainInfo] | None = None) -> None:
        """Decide for every VM from bulk reads; kick the ones with work (jobs re-read fresh)."""
        self._last_pass = time.monotonic()
        records = self.store.load_vms() if records is None else records
        statuses = self.store.load_statuses(list(records)) if statuses is None else statuses
        domains = self.hv.list_domains() if domains is None else domains
        alive = self.ctx.alive_fn()
        for uuid, record in records.items():
            status = statuses.get(uuid) or NodeVMStatus()
            here = uuid in domains and domains[uuid].running
            action = decide(self.name, observe(self.name, record, status, here, alive))
            stale_mark = (status.migrating_from == self.name and status.migrating_to
                          and not self.busy(uuid))
            if stale_mark:
                self.ctx.patch(uuid, migrating_to="", migrating_from="")
            if action not in IDLE:
                self.kick(uuid)
        self.orphans.sweep(domains, records)

    def keepalive(self) -> dict[str, Any]:
        """One keepalive: a full pass, VM status (one all_stats call, batched writes), consoles,
        and this node's VM figures for its node document."""
        domains = self.hv.list_domains()
        self.ctx.known_running = {u for u, d in domains.items() if d.running}
        stats = self.hv.all_stats()
        records = self.store.load_vms()
        statuses = self.store.load_statuses(list(records))
        self.full_pass(records, statuses, domains)
        return self.report.report(records, statuses, domains, stats, time.time())

    # -- flush / unflush ---------------------------------------------------------------------------------

    def flush(self, keep_going: KeepGoing = lambda: True) -> None:
        """Move every VM running here away (pvc-facts §3.7), one at a time, waiting for each."""
        self.flusher.flush(keep_going)

    def unflush(self, keep_going: KeepGoing = lambda: True) -> None:
        """Bring back VMs flushed from here and start the ones flush shut down (autostart)."""
        self.flusher.unflush(keep_going)
