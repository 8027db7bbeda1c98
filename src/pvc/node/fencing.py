"""Dead-node detection, fencing and VM recovery (DESIGN D10), as a tick-driven state machine.

Every coordinator runs a `HAMonitor`: `observe()` on each tick notes which nodes it has seen
alive and when their ZooKeeper session disappeared, so a coordinator that becomes primary knows
the history without waiting; only the primary calls `act()`, and every act begins with a write to
ZooKeeper, which needs a quorum, so a primary cut off in a minority partition can do nothing.

The primary lease. The primary's HA loop renews a lease document (`pvc.node.election.PRIMARY_LEASE`:
holder, generation, a renewal counter) on every pass, by compare-and-set on the version it wrote
last, again before each side effect of a chain, and every second while a Ceph step of a chain
waits (`pvc.node.slowcall`: a busy primary is not a hung one): a primary that lost the lease (another
coordinator claimed it with a higher generation, or deposed it) learns it on its next write and
stops acting at once, even if its election thread still believes it is primary. The other
coordinators watch the lease: when the lock holder's lease has not changed for
`FencePolicy.lease_after` seconds of their own monotonic clock while its session lives (its HA loop
hangs), or the holder is a hung daemon by the keepalive rule, one of them deposes it (one
transaction: the lease marked, the holder's lock entry deleted), so the lock passes to the next
coordinator, and the new primary declares the deposed node dead like any other.

A node is declared dead when
* its session is gone (the ephemeral alive marker expired) for `margin` seconds: the node itself
  destroyed its VMs when the session had to be expired (`pvc.node.selffence`), and the margin
  covers the destroy; or
* its keepalive is `fence_intervals` intervals old while its session lives (a hung daemon: no
  self-fence happened, so only a successful fence agent makes its VMs safe to restart); or
* it was deposed as primary because its HA loop stopped renewing the lease.
Only nodes this monitor saw alive are ever declared dead: after a cold start of the whole cluster,
nodes that are still booting are not fenced.

Two guards stop a declaration, each with a fault, until the condition ends or an operator acts:
* the brake: when more than `brake_share` of the cluster's nodes die within `brake_window`
  seconds (a network or ZooKeeper fault rather than dead machines), none of them is fenced and
  FENCING_BRAKE is raised; it releases when they all come back, or when an operator acknowledges
  or deletes the fault (then they are fenced one at a time);
* the quorum guard: a node hosting a ZooKeeper member is not fenced while the members serving on
  the other nodes are no quorum of the ensemble (powering it off would stop ZooKeeper and every
  node would self-fence); FENCING_QUORUM_<NODE> is raised and it waits.

The chain for one node, each step an event stored in its fencing record (`/fencing/<node>`):
dead -> fencing (the agent, with a time limit) -> blocklisting (the node's Ceph client addresses;
its OSDs marked down) -> recovering (RBD locks flushed, each VM placed by its selector and node
limit on fresh node documents, counting the VMs this monitor placed that they do not show yet,
or stopped with autostart and a fault) -> done. One chain runs at a time; a new primary resumes
the chain in progress from its record; maintenance mode pauses before any new fence. The node
stays dead/fenced until an administrator readies it (`act()` then lifts the blocklist). A
VM_NOT_RECOVERED_<VM> fault is resolved once the VM runs again anywhere (or is gone).

All side effects go through `HAStore` (ZooKeeper), `FenceAgent` and `StorageFence` (Ceph), and time
through `clock`/`mono`, so the simulator in tests/sim drives this exact code in virtual time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kazoo.exceptions import KazooException

from pvc.adapters.fence import FenceAgent, FenceJob, FenceOutcome, failed
from pvc.cluster.faults import fault_id
from pvc.cluster.placement import Demand, find_target, vm_demand
from pvc.cluster.vms.transitions import needs_recovery
from pvc.core.errors import ClusterUnavailable
from pvc.core.records import NodeRecord, VMRecord
from pvc.core.secrets import SecretError, open_fence_info
from pvc.core.vocabulary import NODE_OUT_OF_SERVICE
from pvc.node.hamodel import (
    Clock,
    HAStore,
    StorageFence,
    Suspect,
    brake_trips,
    quorum_refusal,
)
from pvc.node.slowcall import call_keeping

log = logging.getLogger("pvcnoded.fencing")
T = TypeVar("T")

ACTIVE = ("dead", "fencing", "blocklisting", "recovering")
# Daemon states the chain gives a node; it keeps them until an administrator readies it: no VM
# starts there meanwhile and its daemon does not set itself back to run.
OUT_OF_SERVICE = NODE_OUT_OF_SERVICE
MAX_EVENTS = 200
HISTORY = 5
BRAKE_FAULT = "FENCING_BRAKE"
QUORUM_FAULT = "FENCING_QUORUM_"       # + the node's name in capitals
NOT_RECOVERED_FAULT = "VM_NOT_RECOVERED_"
FAULT_CHECK_EVERY = 1.0                # seconds between looks at the faults this monitor resolves
PLACED_FOR = 120.0                     # seconds a placement is counted until the target shows it


@dataclass(frozen=True)
class FencePolicy:
    margin: float = 1.0                     # as config.fencing.margin (from_settings is what runs)
    keepalive_interval: float = 5.0
    fence_intervals: int = 6
    agent_timeout: float = 30.0
    successful_fence: str = "migrate"
    failed_fence: str = "none"
    default_selector: str = "mem"
    # The cluster key that opens the sealed secrets of a node's fence info (pvc.core.secrets).
    key_file: str | None = None
    lease_timeout: float | None = None      # None: hung_after
    brake_share: float = 0.5
    brake_window: float = 10.0
    # How long one Ceph step of a chain (blocklist, OSDs down, a VM's RBD locks) may wait, the
    # lease kept meanwhile (pvc.node.slowcall): a few of the Ceph client's 60 s operation timeouts.
    storage_wait: float = 150.0

    @classmethod
    def from_settings(cls, settings: Any) -> FencePolicy:
        fencing = settings.fencing
        return cls(margin=fencing.margin, keepalive_interval=settings.timer.keepalive_interval,
                   fence_intervals=fencing.fence_intervals, agent_timeout=fencing.agent_timeout,
                   successful_fence=fencing.actions.successful_fence,
                   failed_fence=fencing.actions.failed_fence,
                   default_selector=settings.migration.target_selector,
                   key_file=settings.cluster.key_file, lease_timeout=fencing.lease_timeout,
                   brake_share=fencing.brake_share, brake_window=fencing.brake_window)

    @property
    def hung_after(self) -> float:
        return self.keepalive_interval * self.fence_intervals

    @property
    def lease_after(self) -> float:
        """Seconds without a renewal of the primary lease before another coordinator takes over."""
        return self.hung_after if self.lease_timeout is None else self.lease_timeout


class NotPrimary(Exception):
    """This monitor lost the primary lease: nothing more may be done in this pass."""


# Not a failure of a chain's Ceph step but the end of this pass: the lease lost, or ZooKeeper gone
# while the step waited (the step is taken again by whoever acts next, from the saved record).
PASS_ENDS = (NotPrimary, ClusterUnavailable, KazooException)


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
    mono: Clock | None = None             # the lease's clock (monotonic); `clock` when None
    notify: Callable[[str], None] | None = None   # lease, brake and quorum events (the simulator)
    seen_alive: set[str] = field(default_factory=set)
    lost_since: dict[str, float] = field(default_factory=dict)
    view_since: float | None = None       # when this monitor's view of ZooKeeper became valid again
    _observed: float | None = None
    _job: _Job | None = None
    _paused: bool = False
    _alive: set[str] = field(default_factory=set)
    # the primary lease: held (generation, document, version) or lost until the role is gone
    _term: int | None = None
    _lease: dict[str, Any] = field(default_factory=dict)
    _lease_version: int = -1
    _lost_term: bool = False
    _renewed: float = 0.0
    # watching the primary (every coordinator): (lock holder, lease version) and since when
    _seen: tuple[Any, ...] | None = None
    _seen_since: float = 0.0
    _mono_last: float | None = None
    _held: dict[str, str] = field(default_factory=dict)       # node -> why the quorum guard holds it
    _faults_at: float | None = None
    _placed: dict[str, tuple[str, Demand, float]] = field(default_factory=dict)

    def _mono(self) -> float:
        return (self.mono or self.clock)()

    def _say(self, message: str, level: int = logging.WARNING) -> None:
        log.log(level, "%s", message)
        if self.notify is not None:
            self.notify(message)

    # -- observation (every coordinator) -------------------------------------------------------

    def observe(self) -> tuple[dict[str, NodeRecord], set[str]]:
        nodes, alive = self.store.nodes(), self.store.alive()
        now, mono = self.clock(), self._mono()
        gap = 2 * max(0.5, self.policy.margin)
        # After a gap in our own view (ZooKeeper outage, a new leader restarting every session
        # timer), no keepalive could be written: staleness counts from when the view came back.
        if self._observed is None or now - self._observed > gap:
            self.view_since = now
        if self._mono_last is None or mono - self._mono_last > gap:
            self._seen = None             # nor could a lease be renewed: watch it afresh
        self._observed, self._mono_last = now, mono
        self._alive = alive
        for name in nodes:
            if name in alive:
                self.seen_alive.add(name)
                self.lost_since.pop(name, None)
            elif name in self.seen_alive:
                self.lost_since.setdefault(name, now)
        return nodes, alive

    def dying(self, nodes: dict[str, NodeRecord], alive: set[str]) -> list[Suspect]:
        """Every node in trouble, oldest first, also those not dead by the rules yet (a session
        gone for less than the margin): the brake counts them."""
        now, out = self.clock(), []
        deposed = self._lease.get("deposed") if self._term is not None else None
        for name, node in nodes.items():
            if name == self.me or node.daemon_state != "run" or name not in self.seen_alive:
                continue
            since = self.lost_since.get(name)
            if since is not None:
                out.append(Suspect(since, name, f"ZooKeeper session lost {now - since:.1f}s ago",
                                   since + self.policy.margin, "session"))
                continue
            start = max(node.keepalive, now if self.view_since is None else self.view_since)
            if node.keepalive and now - start >= self.policy.hung_after:
                out.append(Suspect(node.keepalive, name, f"keepalive {now - node.keepalive:.0f}s old while "
                                   "its session lives (daemon hung)", start + self.policy.hung_after, "hung"))
                continue
            if isinstance(deposed, dict) and deposed.get("node") == name and deposed.get("fence"):
                at = float(deposed.get("at") or now)
                out.append(Suspect(at, name, f"deposed as primary by {deposed.get('by')}: "
                                   f"{deposed.get('reason')}", at, "deposed"))
        return sorted(out)

    def suspects(self, nodes: dict[str, NodeRecord], alive: set[str]) -> list[Suspect]:
        """Every node that is dead by the rules, oldest first."""
        now = self.clock()
        return [s for s in self.dying(nodes, alive) if s.due <= now]

    # -- the primary lease -------------------------------------------------------------------------

    def _hold_lease(self) -> bool:
        """Claim the lease on becoming primary, renew it afterwards; False: do not act now."""
        if self._term is not None:
            self._renew()
            return True
        doc, version = self.store.lease()
        doc = doc if isinstance(doc, dict) else {}
        generation = int(doc.get("generation") or 0) + 1
        new = {**doc, "holder": self.me, "generation": generation, "renewals": 0,
               "renewed": round(self.clock(), 3)}
        deposed = new.get("deposed")
        if not (isinstance(deposed, dict) and deposed.get("fence")) or deposed.get("node") == self.me:
            new.pop("deposed", None)       # never took the lease (nothing to fence), or it is us
        written = self.store.write_lease(new, version)
        if written is None:
            return False                   # written meanwhile, or the lock is not ours: next pass
        self._term, self._lease, self._lease_version, self._renewed = generation, new, written, self._mono()
        self._say(f"claims the primary lease (generation {generation})", logging.INFO)
        return True

    def _mine(self, doc: Any) -> bool:
        deposed = doc.get("deposed") if isinstance(doc, dict) else None
        return (isinstance(doc, dict) and doc.get("holder") == self.me and doc.get("generation") == self._term
                and not (isinstance(deposed, dict) and deposed.get("node") == self.me))

    def _renew(self) -> None:
        """The fencing token: compare-and-set the lease on the version this monitor wrote last.
        Raises NotPrimary when another coordinator holds it now."""
        def renewed(doc: dict[str, Any]) -> dict[str, Any]:
            return {**doc, "renewals": int(doc.get("renewals") or 0) + 1, "renewed": round(self.clock(), 3)}

        new = renewed(self._lease)
        written = self.store.write_lease(new, self._lease_version)
        if written is None:
            doc, version = self.store.lease()
            if self._mine(doc):            # a harmless write (a deposed node clearing its mark)
                assert isinstance(doc, dict)
                new = renewed(doc)
                written = self.store.write_lease(new, version)
            if written is None:
                self._lose_term(doc)
                raise NotPrimary
        self._lease, self._lease_version, self._renewed = new, written, self._mono()

    def _keep_lease(self) -> None:
        """Inside a long step (many VMs' locks, many placements): renew once a second, so the
        other coordinators do not take a busy primary for a hung one."""
        if self._mono() - self._renewed >= 1.0:
            self._renew()

    def _ceph(self, what: str, step: Callable[[], T]) -> T:
        """A Ceph step of a chain, which may wait long on a Ceph sick from the node's death: the
        lease is kept while it waits, up to `policy.storage_wait` (pvc.node.slowcall)."""
        return call_keeping(step, self._keep_lease, self.policy.storage_wait, what)

    def _update_lease(self, **changes: Any) -> None:
        lease = dict(self._lease)
        for key, value in changes.items():
            if value is None:
                lease.pop(key, None)
            else:
                lease[key] = value
        self._lease = lease
        self._renew()

    def _lose_term(self, doc: Any) -> None:
        doc = doc if isinstance(doc, dict) else {}
        deposed = doc.get("deposed")
        if isinstance(deposed, dict) and deposed.get("node") == self.me:
            why = f"deposed by {deposed.get('by')}: {deposed.get('reason')}"
        else:
            why = (f"the primary lease is held by {doc.get('holder') or 'nobody'} "
                   f"(generation {doc.get('generation')})")
        self._say(f"refuses to act as primary (generation {self._term}): {why}")
        self._term, self._lost_term = None, True
        if self._job is not None:
            self._job.job.cancel()
            self._job = None

    def _watch_primary(self, nodes: dict[str, NodeRecord], alive: set[str]) -> None:
        """A coordinator that is not primary: depose a primary whose HA loop or daemon hangs."""
        holder = self.store.lock_holder()
        doc, version = self.store.lease()
        now = self._mono()
        if (holder, version) != self._seen:
            self._seen, self._seen_since = (holder, version), now
        lease = doc if isinstance(doc, dict) else {}
        deposed = lease.get("deposed")
        if isinstance(deposed, dict) and deposed.get("node") == self.me:
            # this loop runs again: whatever hung here is over
            rest = {k: v for k, v in lease.items() if k != "deposed"}
            if self.store.write_lease(rest, version, guarded=False) is not None:
                self._say("its HA loop runs again: the deposed mark on it is cleared", logging.INFO)
            return
        if holder is None:
            return
        entry, name = holder
        if name == self.me or name not in alive:
            return                            # no session: the ordinary rules take it
        held = now - self._seen_since
        hung = next((s for s in self.suspects(nodes, alive) if s.node == name and s.kind == "hung"), None)
        fence = True
        if hung is not None:
            why = hung.reason
        elif held >= self.policy.lease_after and lease.get("holder") == name:
            why = f"primary lease not renewed for {held:.0f}s while its session lives (HA loop hung)"
        elif held >= self.policy.lease_after:
            why, fence = f"primary for {held:.0f}s without taking the primary lease", False
        else:
            return
        mark = {"node": name, "by": self.me, "at": round(self.clock(), 3), "reason": why, "fence": fence}
        if self.store.depose(entry, {**lease, "deposed": mark}, version):
            self._say(f"deposes primary {name}: {why}")
            self._seen = None

    # -- acting (the primary only) ---------------------------------------------------------------

    def tick(self, primary: bool) -> bool:
        """One pass; True when a chain moved on (the caller may tick again at once)."""
        nodes, alive = self.observe()
        try:
            if primary:
                if self._lost_term or not self._hold_lease():
                    return False              # lost: nothing until the election steps down
                return self.act(nodes, alive)
            self._term, self._lost_term = None, False
            if self._job is not None:         # lost the primary role: the next primary resumes
                self._job.job.cancel()
                self._job = None
            self._watch_primary(nodes, alive)
        except NotPrimary:
            pass
        return False

    def act(self, nodes: dict[str, NodeRecord], alive: set[str]) -> bool:
        moved = self._act(nodes, alive)
        self._tidy_faults(nodes, alive)
        return moved

    def _act(self, nodes: dict[str, NodeRecord], alive: set[str]) -> bool:
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
        dying = self.dying(nodes, alive)
        if self._braked(nodes, dying, records):
            return False
        now = self.clock()
        ready = [s for s in dying if s.due <= now]
        for suspect in ready:
            why = quorum_refusal(self.store.zk_members(suspect.node), suspect.node)
            if why is not None:
                self._hold(suspect, why)
                continue
            self._held.pop(suspect.node, None)
            self._declare_dead(suspect, records.get(suspect.node))
            return True
        for name in set(self._held) - {s.node for s in ready}:
            del self._held[name]              # back, or no longer in run: its fault is resolved below
        return False

    # -- the guards ----------------------------------------------------------------------------------

    def _hold(self, suspect: Suspect, why: str) -> None:
        """The quorum guard: no fence for this node now; a fault, and the next pass looks again."""
        name = suspect.node
        if self._held.get(name) == why:
            return
        self._held[name] = why
        self._say(f"will not fence {name}: {why}")
        self.store.raise_fault(f"{QUORUM_FAULT}{name.upper()}", 50,
                               f"Node {name} is dead ({suspect.reason}) but is not fenced: {why}; waiting "
                               "for an operator to bring another ZooKeeper member back or to restart "
                               f"{name}'s daemon")

    def _braked(self, nodes: dict[str, NodeRecord], dying: list[Suspect],
                records: dict[str, dict[str, Any]]) -> bool:
        """The brake (module docstring); True while it holds every new fence."""
        now, policy = self.clock(), self.policy
        down = {s.node for s in dying}
        brake = self._lease.get("brake")
        exempt: set[str] = set()
        if isinstance(brake, dict):
            braked = set(brake.get("nodes") or [])
            if brake.get("released"):
                if braked & down:
                    exempt = braked           # released by an operator: these are fenced in turn
                else:
                    self._update_lease(brake=None)
            elif not braked & down:
                self._update_lease(brake=None)
                self.store.clear_fault(BRAKE_FAULT)
                self._say(f"fencing brake released: {', '.join(sorted(braked))} came back")
            else:
                state = self.store.fault_state(BRAKE_FAULT)
                if state == "ack" or (state is None and brake.get("reported")):
                    exempt = braked | down
                    self._update_lease(brake={**brake, "nodes": sorted(exempt), "released": True})
                    self.store.clear_fault(BRAKE_FAULT)
                    self._say(f"fencing brake released by an operator: {', '.join(sorted(exempt & down))} "
                              "will be fenced one at a time")
                else:
                    held = braked | down
                    if held != braked or state is None:
                        reported = self._brake_fault(len(nodes), sorted(held))
                        self._update_lease(brake={**brake, "nodes": sorted(held), "reported": reported})
                    return True
        # when each died (dead by the rules), not when it was declared: a hung primary may have
        # left an older death undeclared
        recent = {s.node for s in dying if s.due >= now - policy.brake_window}
        recent |= {n for n, r in records.items()
                   if float(r.get("due") or r.get("started") or 0) >= now - policy.brake_window}
        recent -= exempt
        if not brake_trips(recent, len(nodes), policy.brake_share) or not (recent & down):
            return False
        held_nodes = sorted(recent & down)
        self._say(f"fencing brake: {len(recent)} of {len(nodes)} nodes died within "
                  f"{policy.brake_window:.0f}s ({', '.join(sorted(recent))}); fencing none of "
                  f"{', '.join(held_nodes)}")
        reported = self._brake_fault(len(nodes), sorted(recent))
        self._update_lease(brake={"nodes": held_nodes, "at": round(now, 3), "released": False,
                                  "reported": reported})
        return True

    def _brake_fault(self, total: int, names: list[str]) -> bool:
        """Raise (or update) FENCING_BRAKE; whether it exists now (none is made in maintenance)."""
        policy = self.policy
        self.store.raise_fault(BRAKE_FAULT, 50,
                               f"Fencing braked: {len(names)} of {total} nodes ({', '.join(names)}) died "
                               f"within {policy.brake_window:.0f}s, more than {policy.brake_share:.0%} of "
                               "the cluster; none is fenced until they come back or an operator "
                               "acknowledges this fault")
        return self.store.fault_state(BRAKE_FAULT) is not None

    def _tidy_faults(self, nodes: dict[str, NodeRecord], alive: set[str]) -> None:
        """Resolve the faults whose condition ended: a VM not recovered that runs again (or is
        gone), a quorum hold this primary no longer has. A VM runs again when its status says so
        on the node it is assigned to, and that node is in service (a dead node's stale claims
        say nothing)."""
        now = self._mono()
        if self._faults_at is not None and now - self._faults_at < FAULT_CHECK_EVERY:
            return
        self._faults_at = now
        ids = self.store.active_faults((NOT_RECOVERED_FAULT, QUORUM_FAULT))
        if not ids:
            return
        held = {fault_id(f"{QUORUM_FAULT}{n.upper()}") for n in self._held}
        vms: dict[str, VMRecord] | None = None
        running: dict[str, str] = {}
        for fid in sorted(ids):
            if fid.startswith(QUORUM_FAULT):
                if fid not in held:
                    self.store.clear_fault(fid)
                continue
            if vms is None:
                vms = self.store.vms()
                running = self.store.running_on(sorted(vms))
            same = [vm for vm in vms.values() if fault_id(f"{NOT_RECOVERED_FAULT}{vm.name.upper()}") == fid]
            runs = [vm for vm in same if vm.state == "start" and running.get(vm.uuid) == vm.node
                    and vm.node in alive and vm.node in nodes and nodes[vm.node].daemon_state == "run"]
            if len(runs) == len(same):
                self.store.clear_fault(fid)

    # -- the chain --------------------------------------------------------------------------------

    def _event(self, record: dict[str, Any], phase: str, message: str) -> None:
        record.setdefault("events", []).append({"time": round(self.clock(), 3), "phase": phase,
                                                "message": message})
        del record["events"][:-MAX_EVENTS]
        log.info("fencing %s: %s: %s", record.get("node"), phase, message)

    def _save(self, name: str, record: dict[str, Any]) -> None:
        self.store.put_fence_record(name, record)

    def _declare_dead(self, suspect: Suspect, previous: dict[str, Any] | None) -> None:
        name, reason = suspect.node, suspect.reason
        deposed = self._lease.get("deposed")
        if isinstance(deposed, dict) and deposed.get("node") == name:
            self._update_lease(deposed=None)     # (the lease check before the first write)
        else:
            self._renew()
        history = []
        if previous:
            history = [{k: v for k, v in previous.items() if k != "history"}, *previous.get("history", [])]
        record: dict[str, Any] = {"node": name, "phase": "dead", "started": self.clock(), "reason": reason,
                                  "lost_since": suspect.since, "due": suspect.due, "by": self.me,
                                  "attempts": 0, "fence": "", "fence_message": "", "action": "",
                                  "history": history[:HISTORY], "session_lost": name in self.lost_since,
                                  "generation": self._term}
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
            # again right before the agent: a chain resumed by a new primary, or a member lost since
            why = quorum_refusal(self.store.zk_members(name), name)
            if why is not None:
                if self._held.get(name) != why:
                    self._event(record, "fencing", f"held: {why}")
                    self._save(name, record)
                self._hold(Suspect(float(record.get("lost_since") or 0), name, str(record.get("reason")),
                                   0.0, "chain"), why)
                return
            self._held.pop(name, None)
            self._renew()
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
        self._renew()
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
        self._renew()
        addresses = self.store.node_addresses(name)
        try:
            added = self._ceph(f"blocklist {', '.join(addresses)}",
                               lambda: self.storage.blocklist(addresses)) if addresses else []
            record["blocklisted"] = addresses
            message = (f"Ceph clients from {', '.join(addresses)} blocklisted ({len(added)} entries)"
                       if addresses else "no Ceph client address known for this node")
            self._event(record, "blocklist", message)
            record["blocklist"] = "success" if addresses else "none"
        except PASS_ENDS:
            raise
        except Exception as exc:
            record["blocklist"] = "failed"
            self._event(record, "blocklist-failed", f"could not blocklist {', '.join(addresses)}: {exc}")
        try:
            down = self._ceph(f"mark the OSDs of {name} down", lambda: self.storage.mark_osds_down(name))
            if down:
                self._event(record, "blocklist", f"OSD(s) {', '.join(map(str, down))} marked down")
        except PASS_ENDS:
            raise
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
        self._renew()
        all_vms = self.store.vms()
        vms = [vm for vm in all_vms.values() if needs_recovery(vm, name)]
        # also the VMs the node was migrating: their status still says they run there
        claimed = self.store.claimed_by(name)
        action = record.get("action") or "none"
        if action != "migrate":
            mine = {vm.uuid for vm in vms}
            left = vms + [all_vms[u] for u in sorted(claimed) if u in all_vms and u not in mine]
            for vm in left:
                self.store.raise_fault(f"{NOT_RECOVERED_FAULT}{vm.name.upper()}", 10,
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
            self._keep_lease()
            if vm.rbd_volumes and addresses:
                try:
                    broken = self._ceph(f"flush the RBD locks of {vm.name}",
                                        lambda vm=vm: self.storage.release_locks(vm.rbd_volumes, addresses))
                    if broken:
                        self._event(record, "recover", f"{vm.name}: {broken} RBD lock(s) of {name} flushed")
                except PASS_ENDS:
                    raise
                except Exception as exc:
                    self._event(record, "recover", f"{vm.name}: could not flush RBD locks: {exc}")
        # Never onto a node in trouble itself: dead but not declared yet, hung, deposed.
        avoid = {s.node for s in self.dying(nodes, self._alive)} | {name}
        moved = stranded = 0
        began = self._mono()
        for vm in sorted(vms, key=lambda v: v.name):
            self._keep_lease()
            demand = vm_demand(vm)
            pool = self._pool(avoid, all_vms, began)
            target = find_target(pool.values(), vm.node_selector, self.policy.default_selector,
                                 current=name, limit=vm.node_limit, demand=demand)
            if not self.store.recover_vm(vm.uuid, name, target.name if target else None):
                continue                      # changed meanwhile (an administrator acted)
            if target is None:
                stranded += 1
                self.store.raise_fault(f"{NOT_RECOVERED_FAULT}{vm.name.upper()}", 10,
                                       f"VM {vm.name} ran on dead node {name}; no node can take it "
                                       "(stopped with autostart set)")
                self._event(record, "recover", f"{vm.name}: no target node; stopped, autostart set")
                continue
            moved += 1
            self._placed[vm.uuid] = (target.name, demand, self._mono())
            self._event(record, "recover", f"{vm.name}: restarting on {target.name}")
        released = self.store.release_claims(name)
        if released:
            self._event(record, "recover", f"{released} other VM claim(s) of {name} released "
                                           "(VMs it was migrating)")
        self.store.update_node(name, lambda d: {**d, "domain_state": "flushed", "running_domains": [],
                                                "domains_count": 0})
        self._finish(name, record, moved, stranded)

    def _pool(self, avoid: set[str], vms: dict[str, VMRecord], began: float) -> dict[str, NodeRecord]:
        """Candidate nodes for one placement, from node documents read now (only those with a live
        session), each charged with the VMs this monitor placed on it that its figures do not
        show yet (a node's keepalive refreshes them only every few seconds). A placement of an
        earlier pass counts while `vms` (read in this pass) still has the VM there."""
        nodes, alive = self.store.nodes(), self.store.alive()
        pool = {n: r.model_copy(deep=True) for n, r in nodes.items() if n in alive and n not in avoid}
        now = self._mono()
        for uuid, (target, demand, at) in list(self._placed.items()):
            node, vm = nodes.get(target), vms.get(uuid)
            moved_on = at < began and (vm is None or vm.node != target or vm.state != "start")
            if now - at > PLACED_FOR or node is None or uuid in node.running_domains or moved_on:
                del self._placed[uuid]        # shown by the target's own figures now, or gone
            elif target in pool:
                _account(pool[target], demand)
        return pool

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
            self._renew()
            blocked = record.get("blocklisted") or []
            if blocked:
                try:
                    self._ceph(f"lift the blocklist of {name}",
                               lambda blocked=blocked: self.storage.unblocklist(blocked))
                except PASS_ENDS:
                    raise
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
    """Count a VM just placed on `node`, so the next placement sees it."""
    node.memory.free -= demand.memory_mib
    node.memory.provisioned += demand.memory_mib
    node.vcpu.allocated += demand.vcpus
    node.domains_count += 1
