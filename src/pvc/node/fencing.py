"""Dead-node detection, fencing and VM recovery (DESIGN D10), as a tick-driven state machine.

Every coordinator runs a `HAMonitor`: `observe()` on each tick notes which nodes it has seen
alive and when their ZooKeeper session disappeared, so a coordinator that becomes primary knows
the history without waiting; only the primary calls `act()`, and every act begins with a write to
ZooKeeper, which needs a quorum, so a primary cut off in a minority partition can do nothing.

A node is declared dead when
* its session is gone (the ephemeral alive marker expired) for `margin` seconds: the node itself
  destroyed its VMs when the session had to be expired (`pvc.node.selffence`), and the margin
  covers the destroy; or
* its keepalive is `fence_intervals` intervals old while its session lives (a hung daemon: no
  self-fence happened, so only a successful fence agent makes its VMs safe to restart).
Only nodes this monitor saw alive are ever declared dead: after a cold start of the whole cluster,
nodes that are still booting are not fenced.

The chain for one node, each step an event stored in its fencing record (`/fencing/<node>`):
dead -> fencing (the agent, with a time limit) -> blocklisting (the node's Ceph client addresses;
its OSDs marked down) -> recovering (RBD locks flushed, each VM placed by its selector and node
limit, or stopped with autostart and a fault) -> done. One chain runs at a time; a new primary
resumes the chain in progress from its record; maintenance mode pauses before any new fence.
The node stays dead/fenced until an administrator readies it (`act()` then lifts the blocklist).

All side effects go through `HAStore` (ZooKeeper), `FenceAgent` and `StorageFence` (Ceph), and time
through `clock`, so the simulator in tests/sim drives this exact code in virtual time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pvc.adapters.fence import FenceAgent, FenceJob, FenceOutcome, failed
from pvc.cluster.placement import Demand, find_target, vm_demand
from pvc.cluster.vms.transitions import needs_recovery
from pvc.core.records import NodeRecord, VMRecord
from pvc.core.secrets import SecretError, open_fence_info
from pvc.core.vocabulary import NODE_OUT_OF_SERVICE

log = logging.getLogger("pvcnoded.fencing")

ACTIVE = ("dead", "fencing", "blocklisting", "recovering")
# Daemon states the chain gives a node; it keeps them until an administrator readies it: no VM
# starts there meanwhile and its daemon does not set itself back to run.
OUT_OF_SERVICE = NODE_OUT_OF_SERVICE
MAX_EVENTS = 200
HISTORY = 5


@dataclass(frozen=True)
class FencePolicy:
    margin: float = 2.0
    keepalive_interval: float = 5.0
    fence_intervals: int = 6
    agent_timeout: float = 30.0
    successful_fence: str = "migrate"
    failed_fence: str = "none"
    default_selector: str = "mem"
    # The cluster key that opens the sealed secrets of a node's fence info (pvc.core.secrets).
    key_file: str | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> FencePolicy:
        fencing = settings.fencing
        return cls(margin=fencing.margin, keepalive_interval=settings.timer.keepalive_interval,
                   fence_intervals=fencing.fence_intervals, agent_timeout=fencing.agent_timeout,
                   successful_fence=fencing.actions.successful_fence,
                   failed_fence=fencing.actions.failed_fence,
                   default_selector=settings.migration.target_selector,
                   key_file=settings.cluster.key_file)

    @property
    def hung_after(self) -> float:
        return self.keepalive_interval * self.fence_intervals


class StorageFence(Protocol):
    def blocklist(self, addresses: list[str]) -> list[str]:
        """Blocklist every Ceph client from these addresses; the entries added."""

    def unblocklist(self, addresses: list[str]) -> None: ...

    def mark_osds_down(self, node: str) -> list[int]:
        """Mark the node's OSDs down now rather than after the heartbeat grace."""

    def release_locks(self, volumes: list[str], addresses: list[str]) -> int:
        """Break the locks held from these addresses on these `pool/volume`s; how many."""


class HAStore(Protocol):
    def nodes(self) -> dict[str, NodeRecord]: ...
    def alive(self) -> set[str]: ...
    def maintenance(self) -> bool: ...
    def fence_records(self) -> dict[str, dict[str, Any]]: ...
    def put_fence_record(self, node: str, record: dict[str, Any]) -> None: ...
    def update_node(self, node: str, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None: ...
    def fence_info(self, node: str) -> dict[str, Any]: ...
    def node_addresses(self, node: str) -> list[str]: ...
    def vms(self) -> dict[str, VMRecord]: ...
    def recover_vm(self, uuid: str, dead: str, target: str | None) -> bool:
        """Apply `pvc.cluster.vms.transitions.recover(dead, target)` (compare-and-set: only while
        the VM still needs recovery from `dead`); when it wrote, the VM's status stops claiming
        it runs on `dead`. False: nothing written (the VM moved on meanwhile)."""

    def claimed_by(self, node: str) -> set[str]:
        """UUIDs of the VMs whose status says they run on `node`."""

    def release_claims(self, node: str) -> int:
        """Clear every status claim that a VM runs on `node` (it is fenced); how many."""

    def raise_fault(self, key: str, delta: int, message: str) -> None: ...
    def clear_fault(self, key: str) -> None: ...


Clock = Callable[[], float]


@dataclass
class _Job:
    node: str
    job: FenceJob
    deadline: float


@dataclass
class HAMonitor:
    """One per coordinator; see the module docstring."""

    me: str
    store: HAStore
    agent: FenceAgent
    storage: StorageFence
    policy: FencePolicy
    clock: Clock
    seen_alive: set[str] = field(default_factory=set)
    lost_since: dict[str, float] = field(default_factory=dict)
    view_since: float | None = None       # when this monitor's view of ZooKeeper became valid again
    _observed: float | None = None
    _job: _Job | None = None
    _paused: bool = False
    _alive: set[str] = field(default_factory=set)

    # -- observation (every coordinator) -------------------------------------------------------

    def observe(self) -> tuple[dict[str, NodeRecord], set[str]]:
        nodes, alive = self.store.nodes(), self.store.alive()
        now = self.clock()
        # After a gap in our own view (ZooKeeper outage, a new leader restarting every session
        # timer), no keepalive could be written: staleness counts from when the view came back.
        if self._observed is None or now - self._observed > 2 * max(0.5, self.policy.margin):
            self.view_since = now
        self._observed = now
        self._alive = alive
        for name in nodes:
            if name in alive:
                self.seen_alive.add(name)
                self.lost_since.pop(name, None)
            elif name in self.seen_alive:
                self.lost_since.setdefault(name, now)
        return nodes, alive

    def suspects(self, nodes: dict[str, NodeRecord], alive: set[str]) -> list[tuple[float, str, str]]:
        """(since, node, reason) of every node that is dead by the rules, oldest first."""
        now, out = self.clock(), []
        for name, node in nodes.items():
            if name == self.me or node.daemon_state != "run" or name not in self.seen_alive:
                continue
            since = self.lost_since.get(name)
            if since is not None:
                if now - since >= self.policy.margin:
                    out.append((since, name, f"ZooKeeper session lost {now - since:.1f}s ago"))
            elif node.keepalive and now - max(node.keepalive, now if self.view_since is None
                                              else self.view_since) >= self.policy.hung_after:
                out.append((node.keepalive, name, f"keepalive {now - node.keepalive:.0f}s old while its "
                                                  "session lives (daemon hung)"))
        return sorted(out)

    # -- acting (the primary only) ---------------------------------------------------------------

    def tick(self, primary: bool) -> bool:
        """One pass; True when a chain moved on (the caller may tick again at once)."""
        nodes, alive = self.observe()
        if primary:
            return self.act(nodes, alive)
        if self._job is not None:         # lost the primary role: the next primary resumes
            self._job.job.cancel()
            self._job = None
        return False

    def act(self, nodes: dict[str, NodeRecord], alive: set[str]) -> bool:
        records = self.store.fence_records()
        self._return_to_service(nodes, alive, records)
        active = sorted((r.get("started", 0.0), n) for n, r in records.items() if r.get("phase") in ACTIVE)
        if active:
            name = active[0][1]
            before = records[name]["phase"]
            self._advance(name, records[name], nodes)
            return records[name]["phase"] != before
        if self.store.maintenance():
            if not self._paused and self.suspects(nodes, alive):
                self._paused = True
                log.warning("fencing paused: the cluster is in maintenance mode")
            return False
        self._paused = False
        for since, name, reason in self.suspects(nodes, alive):
            self._declare_dead(name, reason, since, records.get(name))
            return True
        return False

    # -- the chain --------------------------------------------------------------------------------

    def _event(self, record: dict[str, Any], phase: str, message: str) -> None:
        record.setdefault("events", []).append({"time": round(self.clock(), 3), "phase": phase,
                                                "message": message})
        del record["events"][:-MAX_EVENTS]
        log.info("fencing %s: %s: %s", record.get("node"), phase, message)

    def _save(self, name: str, record: dict[str, Any]) -> None:
        self.store.put_fence_record(name, record)

    def _declare_dead(self, name: str, reason: str, since: float, previous: dict[str, Any] | None) -> None:
        history = []
        if previous:
            history = [{k: v for k, v in previous.items() if k != "history"}, *previous.get("history", [])]
        record: dict[str, Any] = {"node": name, "phase": "dead", "started": self.clock(), "reason": reason,
                                  "lost_since": since, "by": self.me, "attempts": 0, "fence": "",
                                  "fence_message": "", "action": "", "history": history[:HISTORY],
                                  "session_lost": name in self.lost_since}
        self._event(record, "detect", f"{name}: {reason}")
        self._event(record, "dead", f"declared dead by {self.me}")
        # The record first: if this primary dies now, the next one resumes from it.
        self._save(name, record)

        def dead(doc: dict[str, Any]) -> dict[str, Any]:
            doc = {**doc, "daemon_state": "dead"}
            if doc.get("mode") == "coordinator":
                doc["coordinator_state"] = "secondary"
            return doc

        self.store.update_node(name, dead)
        # upstream's name and the message the primary's cluster checks keep (clusterhealth.dead_nodes)
        self.store.raise_fault(f"DEAD_NODE_{name.upper()}", 50, f"Node {name} is dead: {reason}")
        record["phase"] = "fencing"
        self._save(name, record)

    def _advance(self, name: str, record: dict[str, Any], nodes: dict[str, NodeRecord]) -> None:
        phase = record["phase"]
        if phase == "dead":                  # a primary died between the two saves above
            record["phase"] = "fencing"
            self._save(name, record)
        elif phase == "fencing":
            self._fence(name, record)
        elif phase == "blocklisting":
            self._blocklist(name, record)
        elif phase == "recovering":
            self._recover(name, record, nodes)

    def _fence(self, name: str, record: dict[str, Any]) -> None:
        if self._job is None or self._job.node != name:
            if self.store.maintenance():
                if not self._paused:
                    self._paused = True
                    self._event(record, "fencing", "paused: the cluster is in maintenance mode")
                    self._save(name, record)
                return
            self._paused = False
            record["attempts"] = record.get("attempts", 0) + 1
            info = self.store.fence_info(name)
            agent = info.get("agent", "none")
            resumed = " (resumed after a primary change)" if record["attempts"] > 1 else ""
            self._event(record, "fencing", f"fence agent '{agent}' started by {self.me}{resumed}")
            self._save(name, record)
            self._job = _Job(name, self._start_agent(name, info), self.clock() + self.policy.agent_timeout)
        outcome = self._job.job.poll()
        if outcome is None:
            if self.clock() < self._job.deadline:
                return
            self._job.job.cancel()
            outcome = FenceOutcome(False, f"fence agent gave no answer within "
                                          f"{self.policy.agent_timeout:.0f}s")
        self._job = None
        record["fence"] = "success" if outcome.success else "failed"
        record["fence_message"] = outcome.message
        self._event(record, "fenced" if outcome.success else "fence-failed", outcome.message)
        if outcome.success:
            self.store.update_node(name, lambda d: {**d, "daemon_state": "fenced"})
        record["phase"] = "blocklisting"
        self._save(name, record)

    def _start_agent(self, name: str, info: dict[str, Any]) -> FenceJob:
        """The agent gets the fence info with its secrets opened: only now, at fence time, and only
        in memory (the IPMI agent hands the password to ipmitool in its environment)."""
        try:
            opened = open_fence_info(info, self.policy.key_file)
        except SecretError as exc:
            return failed(f"cannot open the fence secrets of {name}: {exc}")
        return self.agent.start(name, opened)

    def _blocklist(self, name: str, record: dict[str, Any]) -> None:
        addresses = self.store.node_addresses(name)
        try:
            added = self.storage.blocklist(addresses) if addresses else []
            record["blocklisted"] = addresses
            message = (f"Ceph clients from {', '.join(addresses)} blocklisted ({len(added)} entries)"
                       if addresses else "no Ceph client address known for this node")
            self._event(record, "blocklist", message)
            record["blocklist"] = "success" if addresses else "none"
        except Exception as exc:
            record["blocklist"] = "failed"
            self._event(record, "blocklist-failed", f"could not blocklist {', '.join(addresses)}: {exc}")
        try:
            down = self.storage.mark_osds_down(name)
            if down:
                self._event(record, "blocklist", f"OSD(s) {', '.join(map(str, down))} marked down")
        except Exception as exc:
            self._event(record, "blocklist", f"could not mark the node's OSDs down: {exc}")
        record["action"] = self._action(record)
        record["phase"] = "recovering"
        self._save(name, record)

    def _action(self, record: dict[str, Any]) -> str:
        fenced = record.get("fence") == "success"
        action = self.policy.successful_fence if fenced else self.policy.failed_fence
        if not fenced and record.get("blocklist") != "success" and action == "migrate":
            self._event(record, "recover", "not recovering: neither the fence nor the blocklist succeeded, "
                                           "so the node's VMs may still write their disks")
            return "none"
        return action

    def _recover(self, name: str, record: dict[str, Any], nodes: dict[str, NodeRecord]) -> None:
        all_vms = self.store.vms()
        vms = [vm for vm in all_vms.values() if needs_recovery(vm, name)]
        # also the VMs the node was migrating: their status still says they run there
        claimed = self.store.claimed_by(name)
        action = record.get("action") or "none"
        if action != "migrate":
            mine = {vm.uuid for vm in vms}
            left = vms + [all_vms[u] for u in sorted(claimed) if u in all_vms and u not in mine]
            for vm in left:
                self.store.raise_fault(f"VM_NOT_RECOVERED_{vm.name.upper()}", 10,
                                       f"VM {vm.name} ran on dead node {name} and was not recovered "
                                       f"(fence {record.get('fence') or 'not done'}, action {action})")
            self._event(record, "recover", f"action '{action}': {len(left)} VM(s) left on {name}")
            self._finish(name, record, moved=0, stranded=len(left))
            return
        self.store.update_node(name, lambda d: {**d, "domain_state": "fence-flush"})
        addresses = self.store.node_addresses(name)
        # Locks first, for every VM the node may have held: its own and those it was migrating.
        held = {v.uuid: v for v in vms} | {u: all_vms[u] for u in claimed if u in all_vms}
        for vm in sorted(held.values(), key=lambda v: v.name):
            if vm.rbd_volumes and addresses:
                try:
                    broken = self.storage.release_locks(vm.rbd_volumes, addresses)
                    if broken:
                        self._event(record, "recover", f"{vm.name}: {broken} RBD lock(s) of {name} flushed")
                except Exception as exc:
                    self._event(record, "recover", f"{vm.name}: could not flush RBD locks: {exc}")
        # Only nodes with a live session: another node may be dead but not declared yet.
        pool = {n: r.model_copy(deep=True) for n, r in nodes.items() if n in self._alive}
        moved = stranded = 0
        for vm in sorted(vms, key=lambda v: v.name):
            demand = vm_demand(vm)
            target = find_target(pool.values(), vm.node_selector, self.policy.default_selector,
                                 current=name, limit=vm.node_limit, demand=demand)
            if not self.store.recover_vm(vm.uuid, name, target.name if target else None):
                continue                      # changed meanwhile (an administrator acted)
            if target is None:
                stranded += 1
                self.store.raise_fault(f"VM_NOT_RECOVERED_{vm.name.upper()}", 10,
                                       f"VM {vm.name} ran on dead node {name}; no node can take it "
                                       "(stopped with autostart set)")
                self._event(record, "recover", f"{vm.name}: no target node; stopped, autostart set")
                continue
            moved += 1
            _account(pool[target.name], demand)
            self._event(record, "recover", f"{vm.name}: restarting on {target.name}")
        released = self.store.release_claims(name)
        if released:
            self._event(record, "recover", f"{released} other VM claim(s) of {name} released "
                                           "(VMs it was migrating)")
        self.store.update_node(name, lambda d: {**d, "domain_state": "flushed", "running_domains": [],
                                                "domains_count": 0})
        self._finish(name, record, moved, stranded)

    def _finish(self, name: str, record: dict[str, Any], moved: int, stranded: int) -> None:
        record["phase"] = "done"
        record["recovered"], record["stranded"] = moved, stranded
        self._event(record, "done", f"{moved} VM(s) restarted elsewhere, {stranded} not; {name} stays out "
                                    "of service until an administrator readies it")
        self._save(name, record)

    # -- back to service ----------------------------------------------------------------------------

    def _return_to_service(self, nodes: dict[str, NodeRecord], alive: set[str],
                           records: dict[str, dict[str, Any]]) -> None:
        """An administrator readied a dead/fenced node that runs again: lift its blocklist, then
        let its daemon take the unflush (it waits for daemon state run)."""
        for name, node in nodes.items():
            record = records.get(name) or {}
            if name not in alive or record.get("phase") in ACTIVE:
                continue
            readied = node.daemon_state in OUT_OF_SERVICE and node.domain_state == "unflush"
            # run again by other means (an older daemon, a hand edit) yet still blocklisted
            stray = node.daemon_state == "run" and bool(record.get("blocklisted"))
            if not (readied or stray):
                continue
            blocked = record.get("blocklisted") or []
            if blocked:
                try:
                    self.storage.unblocklist(blocked)
                except Exception as exc:
                    log.warning("cannot lift the blocklist of %s yet: %s", name, exc)
                    continue
            self._event(record, "ready", f"readied by an administrator; blocklist of {name} lifted"
                        if readied else f"{name} runs again; its blocklist lifted")
            record["blocklisted"] = []
            self._save(name, record)
            if readied:
                self.store.update_node(name, lambda d: {**d, "daemon_state": "run"})
            self.store.clear_fault(f"DEAD_NODE_{name.upper()}")   # resolved


def _account(node: NodeRecord, demand: Demand) -> None:
    """Count a VM just placed on `node`, so the next placement of this pass sees it."""
    node.memory.free -= demand.memory_mib
    node.memory.provisioned += demand.memory_mib
    node.vcpu.allocated += demand.vcpus
    node.domains_count += 1
