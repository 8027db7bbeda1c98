"""High availability on this node (DESIGN D10): the self-fence and the hardware watchdog, fed by
a heartbeat, and on coordinators the HA monitor (`pvc.node.fencing`), which only the primary
lets act. Also the VM reconciler's veto on starts and its VM-failed faults."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import KazooException, NoNodeError

from pvc.adapters.ceph import Storage, storage_from_settings
from pvc.adapters.hypervisor import Hypervisor, HypervisorError, kill_local_qemu
from pvc.core import schema
from pvc.core.config import Settings
from pvc.core.errors import ClusterUnavailable
from pvc.core.zk import ZK
from pvc.node.election import name_thread
from pvc.node.fencing import OUT_OF_SERVICE, FencePolicy, HAMonitor
from pvc.node.hastore import CephFence, ZKHAStore
from pvc.node.selffence import SelfFence
from pvc.node.storage import NodeCeph
from pvc.node.vms import VMReconciler

log = logging.getLogger("pvcnoded")


class HAService:
    def __init__(self, settings: Settings, zk: ZK, vms: VMReconciler | None, hypervisor: Hypervisor | None,
                 ceph: NodeCeph | None, daemon_state: Callable[[], str], is_primary: Callable[[], bool],
                 stopping: threading.Event) -> None:
        self.settings, self.zk, self.vms, self.hypervisor = settings, zk, vms, hypervisor
        self.daemon_state, self.is_primary, self.stopping = daemon_state, is_primary, stopping
        fencing = settings.fencing
        self.selffence = SelfFence(bound=lambda: settings.zookeeper.session_timeout, clock=time.monotonic,
                                   connected=lambda: zk.connected, destroy_all=self._destroy_all_vms,
                                   enabled=fencing.self_fence and vms is not None)
        self.watchdog = None
        if fencing.watchdog_device:
            from pvc.adapters.watchdog import Watchdog

            self.watchdog = Watchdog(fencing.watchdog_device, fencing.watchdog_timeout)
        self.monitor: HAMonitor | None = None
        self._wake = threading.Event()           # a node's alive marker changed: pass at once
        self._alive_watched: set[str] = set()
        if settings.is_coordinator and fencing.enabled:
            self.monitor = self._ha_monitor(ceph)
        if vms is not None:
            vms.may_start = self._may_start_vms
            vms.vm_fault = self._vm_fault

    def _ha_monitor(self, ceph: NodeCeph | None) -> HAMonitor:
        from pvc.adapters.fence import DispatchAgent

        settings = self.settings

        def storage() -> Storage:
            if ceph is not None:
                return ceph.storage
            return storage_from_settings(settings, shared=False)

        store = ZKHAStore(self.zk, settings.zookeeper.hosts, lock_guard=True)
        return HAMonitor(settings.node_name, store, DispatchAgent(on_done=self._wake.set),
                         CephFence(storage, self.zk, settings.fencing.blocklist_expire),
                         FencePolicy.from_settings(settings), time.time, mono=time.monotonic)

    def start(self) -> None:
        """The watchdog, the heartbeat and (coordinators) the HA monitor."""
        if self.watchdog is not None:
            try:
                self.watchdog.open()
            except OSError as exc:
                log.error("hardware watchdog %s: %s; running without it",
                          self.settings.fencing.watchdog_device, exc)
                self.watchdog = None
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        if self.monitor is not None:
            threading.Thread(target=self._ha_loop, name="ha-monitor", daemon=True).start()

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.close()        # a clean stop disarms it

    # -- the VM reconciler's hooks -------------------------------------------------------------------

    def _vm_fault(self, name: str, message: str | None) -> None:
        from pvc.cluster import faults

        key = faults.fault_name("VM_FAILED", name)      # upstream's VM_FAILED_<VM>
        try:
            if message is None:
                faults.clear_fault(self.zk, key)
            else:
                faults.raise_fault(self.zk, key, 10, message)
        except (ClusterUnavailable, KazooException, NoNodeError) as exc:
            log.warning("could not update the fault of VM %s: %s", name, exc)

    def _may_start_vms(self) -> bool:
        """No VM starts here while our session may be gone or while we are dead/fenced."""
        return self.selffence.may_start() and self.daemon_state() not in OUT_OF_SERVICE

    def _destroy_all_vms(self) -> list[str]:
        """Self-fence: every VM here, at once. QEMU processes are killed directly: a libvirt call
        may hang behind a stats query that waits for unreachable storage (seen on the lab), and
        this must not wait. libvirt is told afterwards, in the background, to tidy up."""
        killed = kill_local_qemu(set(self.vms.known_running)) if self.vms is not None else []
        hypervisor = self.hypervisor

        def tidy() -> None:
            if hypervisor is None:
                return
            try:
                for uuid in hypervisor.list_domains():
                    try:
                        hypervisor.destroy(uuid)
                    except HypervisorError:
                        pass
            except HypervisorError as exc:
                log.warning("self-fence: libvirt could not list domains: %s", exc)

        threading.Thread(target=tidy, name="self-fence-tidy", daemon=True).start()
        return killed

    # -- loops ---------------------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        """About once a second, one ZooKeeper request whose answer feeds the self-fence clock and
        the hardware watchdog. At most one is outstanding: kazoo counts every request it sends as
        a ping, so requests sent without pause would hide a dead connection from it for good."""
        alive_path = schema.node_alive(self.settings.node_name)
        pending: Any = None
        sent = 0.0
        while not self.stopping.is_set():
            began = time.monotonic()
            if pending is not None and pending.ready():
                if pending.successful():
                    self.selffence.answered(sent)
                    if self.watchdog is not None:
                        self.watchdog.pet()
                pending = None
            if pending is None and self.zk.connected:
                sent = time.monotonic()
                try:
                    pending = self.zk.exists_async(alive_path)
                except Exception as exc:
                    log.debug("heartbeat: %s", exc)
            self.selffence.check()
            # Awake again exactly when the self-fence bound is reached (not up to a second later):
            # fencing.margin covers only that lateness (docs/architecture.md, "Failover timing").
            self.stopping.wait(max(0.05, min(1.0 - (time.monotonic() - began), self.selffence.due_in())))

    def _ha_loop(self) -> None:
        """Every coordinator observes; the primary acts (pvc.node.fencing). A pass every 0.5 s, and
        at once when a node's alive marker goes (a watch) or a lost node's margin ends, so neither
        the detection nor the declaration waits for a poll (docs/architecture.md, "Failover
        timing")."""
        assert self.monitor is not None
        name_thread("pvc-ha")
        failing, moved = "", False
        while not self._pause(0 if moved else self._next_pass()):
            primary = self.is_primary() and self.zk.connected
            moved = False
            try:
                if self.zk.connected:
                    moved = self.monitor.tick(primary)
                failing = ""
            except (ClusterUnavailable, KazooException) as exc:
                if str(exc) != failing:
                    log.warning("HA monitor: %s", exc)
                failing = str(exc)
            except Exception:
                log.exception("HA monitor pass failed")
            self._watch_alive()

    def _pause(self, seconds: float) -> bool:
        """Sleep until the next pass (a watch may cut it short); True when the daemon stops."""
        if seconds > 0:
            self._wake.wait(seconds)
        self._wake.clear()
        return self.stopping.is_set()

    def _next_pass(self) -> float:
        """0.5 s, or less when the margin of a node whose session is gone ends sooner."""
        assert self.monitor is not None
        monitor = self.monitor
        now, margin = monitor.clock(), monitor.policy.margin
        due = [since + margin - now for since in monitor.lost_since.values() if since + margin > now]
        return max(0.01, min([0.5, *due]))

    def _watch_alive(self) -> None:
        """A watch on the alive marker of every node seen alive: its expiry wakes the loop."""
        assert self.monitor is not None
        for name in sorted(self.monitor.seen_alive - self._alive_watched):
            try:
                self.zk.watch_data(schema.node_alive(name), lambda _data, _stat: self._wake.set())
            except (ClusterUnavailable, KazooException) as exc:
                log.debug("HA monitor: no watch on %s's alive marker yet: %s", name, exc)
                continue
            self._alive_watched.add(name)
