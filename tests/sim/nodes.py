"""A simulated node: power, links, a daemon process (alive, hung or dead) and a fake hypervisor.

The daemon does what pvcnoded does, on the virtual clock: a heartbeat feeding `SelfFence` every
second (and `check()` every step), a keepalive, a VM reconcile pass built on the real
`observe()`/`decide()` of pvc.node.vms, and on coordinators an election thread and an
`HAMonitor` tick every 0.5 s (which alone may hang: `ha_hung`). The election thread believes it
is primary from the moment it holds the lock until it notices the loss, on a whole second (as
`pvc.node.election` checks its lock once a second) while connected.
Every change of a VM document is a transition of pvc.cluster.vms.transitions, the same the real
daemon applies: the simulator models when a node acts, never what it writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pvc.cluster.placement import find_target, vm_demand
from pvc.cluster.vms.transitions import abort_migration, flush_away, settle, unflush_autostart, unflush_back
from pvc.core.errors import ClusterUnavailable
from pvc.core.vocabulary import VM_MIGRATE_STATES
from pvc.node.election import deposed_for_hang
from pvc.node.fencing import OUT_OF_SERVICE, HAMonitor
from pvc.node.selffence import SelfFence
from pvc.node.vms import Action, decide, observe

from .fakes import SimAgent, SimStore
from .zkmodel import TICKS, Client

if TYPE_CHECKING:
    from .world import World

BASE_USED = 1024                 # MiB the host itself uses
MIGRATE_TICKS = 2 * TICKS        # a (shutdown) migration takes this long on the sender


@dataclass
class SimNode:
    world: World
    name: str
    index: int
    coordinator: bool
    mem_total: int
    powered: bool = True
    link: bool = True
    daemon: str = "dead"                      # alive | hung | dead
    incarnation: int = 0
    hv: dict[str, int] = field(default_factory=dict)       # running VM uuid -> memory MiB
    client: Client = field(default_factory=Client)
    selffence: SelfFence | None = None
    monitor: HAMonitor | None = None
    migrations: dict[str, int] = field(default_factory=dict)  # uuid -> tick the sender finishes
    elected: bool = False                     # the election thread believes it is primary
    ha_hung: bool = False                     # only the HA loop hangs (the rest of the daemon runs)
    _sf_logged: int = 0

    # -- process lifecycle ---------------------------------------------------------------------------

    def process_running(self) -> bool:
        return self.powered and self.daemon in ("alive", "hung")

    def start_daemon(self) -> None:
        w = self.world
        self.incarnation += 1
        self.daemon = "alive"
        self.client = Client(retry_at=w.tick)
        self.migrations = {}
        self.selffence = SelfFence(bound=lambda: w.params.session_timeout, clock=lambda: w.now,
                                   connected=lambda: self.client.connected, destroy_all=self._destroy_all)
        self._sf_logged = 0
        self.monitor = None
        self.elected = self.ha_hung = False
        if self.coordinator:
            agent = SimAgent(w, self.name, self.incarnation)
            store = SimStore(w, self.name)
            self.monitor = HAMonitor(self.name, store, agent, w.storage, w.policy, lambda: w.now,
                                     notify=lambda message: w.log(self.name, message))

    def stop_daemon(self) -> None:
        self.daemon = "dead"
        self.client = Client()
        self.monitor = None
        self.elected = False

    def _destroy_all(self) -> list[str]:
        gone = sorted(self.hv)
        for uuid in gone:
            self.destroy(uuid, "self-fence")
        return gone

    def destroy(self, uuid: str, why: str) -> None:
        self.hv.pop(uuid, None)
        self.world.log(self.name, f"destroy {self.world.vm_name(uuid)} ({why})")

    # -- one step ----------------------------------------------------------------------------------

    def step(self, tick: int) -> None:
        if not self.powered or self.daemon != "alive":
            return
        w, sf = self.world, self.selffence
        assert sf is not None
        connected = self.client.connected
        self.election(tick)
        if tick % TICKS == 0 and connected:
            sf.answered(sent_at=w.now)
        sf.check()
        self._publish_selffence()
        if connected and tick % round(w.params.keepalive_interval * TICKS) == 0:
            self.keepalive()
        if connected and tick % (TICKS // 2) == 0:
            self.reconcile()
        if self.monitor is not None and tick % (TICKS // 2) == 0 and not self.ha_hung:
            self.ha_pass()

    def election(self, tick: int) -> None:
        """pvc.node.election: primary as soon as the lock is ours; stepping down once a whole
        second comes round after the lock was lost (deposed, or the session expired)."""
        holder = self.world.primary == self.name
        if holder and not self.elected and self.client.connected:
            self.elected = True
        elif self.elected and not holder and self.client.connected and tick % TICKS == 0:
            self.elected = False
            self.world.log(self.name, "steps down: no longer holds the primary lock")

    def ha_pass(self) -> None:
        """pvcnoded._ha_loop: tick; when a chain moved on, tick again at once."""
        assert self.monitor is not None
        for _ in range(20):
            try:
                if not self.monitor.tick(primary=self.elected and self.client.connected):
                    return
            except ClusterUnavailable:
                return
        raise AssertionError(f"{self.name}: HA monitor keeps moving without pause")

    def _publish_selffence(self) -> None:
        assert self.selffence is not None
        events = self.selffence.events
        assert len(events) < 50, "self-fence event list trimmed: scenario too long"
        for _at, message in events[self._sf_logged:]:
            self.world.log(self.name, message)
        self._sf_logged = len(events)

    def on_new_session(self) -> None:
        """pvcnoded._after_reconnect: the alive marker again (and the election re-contends)."""
        zk = self.world.zk
        assert self.client.session is not None
        zk.markers[self.name] = self.client.session.id

    def contend(self) -> None:
        """The election thread: a coordinator in daemon state run queues for the primary lock
        (not while it still believes it is primary, nor while the lease marks it deposed)."""
        zk = self.world.zk
        session = self.client.session
        if not self.coordinator or self.daemon != "alive" or not self.client.connected or session is None:
            return
        if session.id in zk.queue or self.elected or deposed_for_hang(zk.lease, self.name):
            return
        if zk.node_docs.get(self.name, {}).get("daemon_state") == "run":
            zk.queue.append(session.id)

    # -- keepalive ---------------------------------------------------------------------------------

    def keepalive(self) -> None:
        w = self.world
        zk = w.require(self.name)
        doc = dict(zk.node_docs[self.name])
        state = doc.get("daemon_state")
        if state not in OUT_OF_SERVICE:
            state = "run"
        running = sum(self.hv.values())
        provisioned = sum(w.vm_memory(u) for u, v in zk.vms.items()
                          if v.get("node") == self.name and v.get("state") == "start")
        used = BASE_USED + running
        doc.update(daemon_state=state, keepalive=w.now, domains_count=len(self.hv),
                   running_domains=sorted(self.hv),
                   memory={"total": self.mem_total, "used": used, "free": self.mem_total - used,
                           "allocated": running, "provisioned": provisioned},
                   vcpu={"total": 16, "allocated": len(self.hv)})
        w.write_node(self.name, self.name, doc)

    # -- VM reconcile ------------------------------------------------------------------------------

    def reconcile(self) -> None:
        w, me = self.world, self.name
        zk = w.require(me)
        assert self.selffence is not None
        my_state = zk.node_docs[me].get("daemon_state")
        alive = set(zk.markers)
        for uuid in sorted(zk.vms, key=w.vm_name):
            record = w.vm_record(uuid)
            status = w.vm_status(uuid)
            here = uuid in self.hv
            action = decide(me, observe(me, record, status, here, lambda n: n in alive))
            name = record.name
            if action is Action.START:
                if self.selffence.may_start() and my_state not in OUT_OF_SERVICE:
                    self.hv[uuid] = w.vm_memory(uuid)
                    for volume in record.rbd_volumes:
                        w.locks[volume] = me
                    zk.statuses[uuid] = {"node": me, "running": True}
                    w.log(me, f"start {name}")
            elif action in (Action.STOP, Action.TERMINATE, Action.SHUTDOWN_AWAY):
                self.destroy(uuid, action.value)
                self._not_running(uuid)
            elif action is Action.RESTART:
                self.destroy(uuid, action.value)
                self._not_running(uuid)
                w.change_vm(me, uuid, settle("start", {"restart"}))
            elif action is Action.SHUTDOWN:
                self.destroy(uuid, action.value)
                self._not_running(uuid)
                w.change_vm(me, uuid, settle("stop", {"shutdown"}))
            elif action is Action.WRITE_START:
                w.change_vm(me, uuid, settle("start", {"restart", *VM_MIGRATE_STATES}))
            elif action is Action.WRITE_STOP:
                w.change_vm(me, uuid, settle("stop", {"shutdown"}))
            elif action is Action.MIGRATE:
                self._migrate(uuid, record.node)
            else:                                   # ENSURE, NONE, WAIT: keep the status true
                if here and (status.node != me or not status.running):
                    zk.statuses[uuid] = {"node": me, "running": True}
                elif not here and status.node == me and status.running:
                    zk.statuses[uuid] = {**zk.statuses[uuid], "running": False}
        if my_state == "run":
            self._domain_state()

    def _not_running(self, uuid: str) -> None:
        zk = self.world.zk
        status = zk.statuses.get(uuid, {})
        if status.get("node") == self.name:
            zk.statuses[uuid] = {**status, "running": False}

    def _migrate(self, uuid: str, target: str) -> None:
        """Sender side of a migration, modelled as a shutdown migration taking MIGRATE_TICKS."""
        w = self.world
        due = self.migrations.setdefault(uuid, w.tick + MIGRATE_TICKS)
        if due == w.tick + MIGRATE_TICKS:
            w.log(self.name, f"migrating {w.vm_name(uuid)} to {target}")
        if w.tick < due:
            return
        del self.migrations[uuid]
        receiver = w.nodes[target]
        if not (receiver.process_running() and w.can_talk(self.name, target)):
            w.log(self.name, f"migration of {w.vm_name(uuid)} to {target} failed: {target} does not answer")
            w.change_vm(self.name, uuid, abort_migration(self.name))
            return
        self.destroy(uuid, f"migrated to {target}")
        self._not_running(uuid)

    def _domain_state(self) -> None:
        """Flush and unflush, carried out by the node itself (one VM at a time)."""
        w, me = self.world, self.name
        zk = w.zk
        doc = zk.node_docs[me]
        domain = doc.get("domain_state")
        vms = zk.vms.items()
        if domain == "flush":
            if any(v.get("last_node") == me and v.get("state") in VM_MIGRATE_STATES for _u, v in vms):
                return
            mine = sorted((u for u, v in zk.vms.items() if v.get("node") == me and v.get("state") == "start"
                           and u in self.hv), key=w.vm_name)
            nodes = [w.node_record(n) for n in sorted(zk.node_docs) if n in zk.markers]
            for uuid in mine:
                record = w.vm_record(uuid)
                target = find_target(nodes, record.node_selector, w.params.selector, current=me,
                                     limit=record.node_limit, demand=vm_demand(record))
                if target is not None:
                    w.change_vm(me, uuid, flush_away(me, target.name))
                    return
            w.write_node(me, me, {**doc, "domain_state": "flushed"})
        elif domain == "unflush":
            back = sorted((u for u, v in vms if v.get("last_node") == me and v.get("state") == "start"
                           and v.get("node") != me), key=w.vm_name)
            for uuid in back:
                w.change_vm(me, uuid, unflush_back(me))
            for uuid in sorted((u for u, v in zk.vms.items() if v.get("node_autostart")), key=w.vm_name):
                w.change_vm(me, uuid, unflush_autostart(me))
            if not any(v.get("node") == me and v.get("state") in VM_MIGRATE_STATES for _u, v in vms):
                w.write_node(me, me, {**doc, "domain_state": "ready"})
