"""The simulated cluster: nodes, network, ZooKeeper, Ceph and fence agents on a virtual clock.

`World(scenario).run()` steps 0.1 s at a time: scenario actions, fence agents, ZooKeeper
(quorum, client connections, session expiry), the primary lock, then every node daemon; after
every step it checks that no VM runs twice, and at the end that no VM was lost. It returns the
event log, one line per event: `t=<seconds> <who> <what>`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from uuid import NAMESPACE_DNS, uuid5

from pydantic import BaseModel

from pvc.cluster.placement import vm_demand
from pvc.cluster.vms.transitions import Transition, apply_to_doc
from pvc.core.config import (
    FencingActions,
    FencingSettings,
    MigrationSettings,
    TimerSettings,
    ZooKeeperSettings,
)
from pvc.core.errors import ClusterUnavailable
from pvc.core.records import Memory, NodeRecord, VMRecord
from pvc.core.vocabulary import VM_RECOVER_STATES
from pvc.node.fencing import ACTIVE, FencePolicy
from pvc.node.vms import NodeVMStatus, status_of

from .fakes import SimJob, SimStorage
from .nodes import BASE_USED, SimNode
from .zkmodel import TICKS, ZooKeeper, ts


def _shipped(model: type[BaseModel], name: str) -> Any:
    """The default a product config section ships for one key (pvc.core.config), so the
    simulator runs on the timings a fresh install gets rather than on copied numbers."""
    return model.model_fields[name].get_default(call_default_factory=True)


@dataclass(frozen=True)
class Params(FencePolicy):
    """The HA policy under test: the daemon's own FencePolicy with every timing, the brake and
    the fence actions taken from the product config's defaults (the keys
    `FencePolicy.from_settings` reads), plus the ZooKeeper session bound that the simulated
    self-fence uses. A scenario's `config` overrides any of them by name."""

    margin: float = _shipped(FencingSettings, "margin")
    keepalive_interval: float = _shipped(TimerSettings, "keepalive_interval")
    fence_intervals: int = _shipped(FencingSettings, "fence_intervals")
    agent_timeout: float = _shipped(FencingSettings, "agent_timeout")
    successful_fence: str = _shipped(FencingActions, "successful_fence")
    failed_fence: str = _shipped(FencingActions, "failed_fence")
    default_selector: str = _shipped(MigrationSettings, "target_selector")
    lease_timeout: float | None = _shipped(FencingSettings, "lease_timeout")
    brake_share: float = _shipped(FencingSettings, "brake_share")
    brake_window: float = _shipped(FencingSettings, "brake_window")
    session_timeout: float = _shipped(ZooKeeperSettings, "session_timeout")

    @property
    def selector(self) -> str:
        return self.default_selector


@dataclass(frozen=True)
class VM:
    name: str
    node: str
    mem: int = 1024
    state: str = "start"
    limit: tuple[str, ...] = ()
    selector: str = "none"


@dataclass(frozen=True)
class Scenario:
    """A declarative scenario. `expect` maps every VM to its outcome at the end:
    `runs` / `runs@hvN` (exactly one writable instance, on its assigned node, which is in
    service), `stopped` (state stop, autostart set, VM_NOT_RECOVERED fault), `stranded@hvN`
    (still assigned to, or claimed by, the dead node hvN, with the fault, running nowhere else),
    `off` (state stop and running nowhere)."""

    name: str
    story: str
    vms: tuple[VM, ...] = ()
    expect: dict[str, str] = field(default_factory=dict)
    actions: tuple[tuple[Any, ...], ...] = ()        # (seconds, verb, *args)
    until: float = 60.0
    nodes: int = 3
    memory: dict[str, int] = field(default_factory=dict)   # node -> total MiB (default 16384)
    agent: str = "ok"
    agents: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    off: tuple[str, ...] = ()                         # powered off at t=0 (never seen alive)
    hung_node: bool = False          # a VM may also run on a blocklisted node that is still on
    no_fence: bool = False           # no node may be declared dead at all
    forbid: tuple[str, ...] = ()     # regular expressions no log line may match
    known_bug: str = ""              # the scenario shows a bug not fixed yet: xfail, no golden log


class SimFailure(AssertionError):
    pass


class World:
    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.params = p = Params(**sc.config)
        self.policy: FencePolicy = p
        self.tick = 0
        self.lines: list[str] = []
        names = [f"hv{i}" for i in range(1, sc.nodes + 1)]
        self.group: dict[str, int] = {}
        self.zk = ZooKeeper(names[:3], round(p.session_timeout * TICKS), self, self.log)
        self.storage = SimStorage(self)
        self.jobs: list[SimJob] = []
        self.locks: dict[str, str] = {}
        self.agents = {n: sc.agents.get(n, sc.agent) for n in names}
        self.primary: str | None = None
        self._cache: dict[str, tuple[Any, Any]] = {}
        self.nodes = {n: SimNode(self, n, i, i <= 3, sc.memory.get(n, 16384))
                      for i, n in enumerate(names, start=1)}
        for n, node in self.nodes.items():
            mode = "coordinator" if node.coordinator else "hypervisor"
            self.zk.node_docs[n] = NodeRecord(
                name=n, mode=mode, daemon_state="run", domain_state="ready", cpu_count=16,
                coordinator_state="secondary" if node.coordinator else "client",
                memory=Memory(total=node.mem_total, used=BASE_USED, free=node.mem_total - BASE_USED)).doc()
        for vm in sc.vms:
            self.zk.vms[vm.name] = VMRecord(
                uuid=vm.name, name=vm.name, xml=_xml(vm.name, vm.mem), state=vm.state, node=vm.node,
                node_limit=list(vm.limit), node_selector=vm.selector, created=0.0,
                rbd_volumes=[f"vms/{vm.name}_disk0"]).doc()
            self.zk.statuses[vm.name] = {}
            if vm.state == "start" and vm.node not in sc.off:
                self.nodes[vm.node].hv[vm.name] = vm.mem
                self.zk.statuses[vm.name] = {"node": vm.node, "running": True}
                self.locks[f"vms/{vm.name}_disk0"] = vm.node
        assert set(sc.expect) == {vm.name for vm in sc.vms}, "every VM needs an expected outcome"
        for n, node in self.nodes.items():
            if n in sc.off:
                node.powered = False
            else:
                node.start_daemon()
        self.actions: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        for action in sc.actions:
            self.actions[round(action[0] * TICKS)].append(action[1:])

    # -- clock and log -------------------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.tick / TICKS

    def log(self, who: str, what: str, at: float | None = None) -> None:
        when = ts(self.tick) if at is None else f"{at:.1f}"
        self.lines.append(f"t={when} {who} {what}")

    # -- the network (zkmodel.Net) -------------------------------------------------------------------

    def powered(self, node: str) -> bool:
        return self.nodes[node].powered

    def can_talk(self, a: str, b: str) -> bool:
        na, nb = self.nodes[a], self.nodes[b]
        if not (na.powered and nb.powered):
            return False
        if a == b:
            return True
        return na.link and nb.link and self.group.get(a, 0) == self.group.get(b, 0)

    # -- what the adapters ask ---------------------------------------------------------------------

    def require(self, node: str) -> ZooKeeper:
        n = self.nodes[node]
        if not (n.process_running() and n.client.connected):
            raise ClusterUnavailable(f"{node}: ZooKeeper connection lost")
        return self.zk

    def address(self, node: str) -> str:
        return f"10.0.0.{self.nodes[node].index}"

    def osds(self, node: str) -> list[int]:
        n = self.nodes[node]
        return [n.index - 1] if n.coordinator else []

    def agent_for(self, node: str) -> str:
        return self.agents[node]

    def _cached(self, key: str, doc: dict[str, Any], build: Any) -> Any:
        hit = self._cache.get(key)
        if hit is not None and hit[0] is doc:
            return hit[1]
        value = build(doc)
        self._cache[key] = (doc, value)
        return value

    def node_record(self, name: str) -> NodeRecord:
        return self._cached("n:" + name, self.zk.node_docs[name], NodeRecord.model_validate)

    def vm_record(self, uuid: str) -> VMRecord:
        return self._cached("v:" + uuid, self.zk.vms[uuid], VMRecord.model_validate)

    def vm_status(self, uuid: str) -> NodeVMStatus:
        return self._cached("s:" + uuid, self.zk.statuses.get(uuid, {}), status_of)

    def vm_memory(self, uuid: str) -> int:
        return vm_demand(self.vm_record(uuid)).memory_mib

    def vm_name(self, uuid: str) -> str:
        return str(self.zk.vms[uuid]["name"]) if uuid in self.zk.vms else uuid

    def write_node(self, who: str, name: str, new: dict[str, Any]) -> None:
        old = self.zk.node_docs[name]
        for key in ("daemon_state", "domain_state"):
            if old.get(key) != new.get(key):
                self.log(who, f"node {name} {key} {old.get(key)} -> {new.get(key)}")
        self.zk.node_docs[name] = new

    def write_vm(self, who: str, uuid: str, new: dict[str, Any]) -> None:
        old = self.zk.vms[uuid]
        if (old.get("state"), old.get("node")) != (new.get("state"), new.get("node")) \
                or old.get("node_autostart") != new.get("node_autostart"):
            extra = ", autostart" if new.get("node_autostart") and not old.get("node_autostart") else ""
            self.log(who, f"vm {new['name']} -> {new['state']} on {new['node']}{extra}")
        self.zk.vms[uuid] = new

    def change_vm(self, who: str, uuid: str, transition: Transition) -> bool:
        """What a daemon's store does: the very transition the real node applies, on the model."""
        new = apply_to_doc(self.zk.vms[uuid], transition)
        if new is None:
            return False
        self.write_vm(who, uuid, new)
        return True

    def power_off(self, name: str, why: str) -> None:
        node = self.nodes[name]
        if not node.powered:
            self.log(name, f"is already off ({why})")
            return
        gone = sorted(node.hv)
        self.log(name, f"powered off {why}" + (f"; gone: {', '.join(gone)}" if gone else ""))
        node.powered = False
        node.hv = {}
        node.stop_daemon()

    def check_fence_record(self, node: str, record: dict[str, Any]) -> None:
        """A recovery may only happen once the node's VMs cannot write any more."""
        if record.get("phase") != "done" or not record.get("recovered"):
            return
        self._ensure(record.get("fence") == "success" or record.get("blocklist") == "success",
                     f"{node}'s VMs recovered with neither fence nor blocklist")
        if record.get("session_lost"):
            lost = self.zk.expired_at.get(node)
            self._ensure(lost is not None and self.tick - lost >= round(self.params.margin * TICKS),
                         f"{node}'s VMs recovered before session expiry + margin")

    def check_actor(self, node: str) -> None:
        """Only the holder of the primary lease acts (the fencing token): a primary that was
        deposed, or whose election thread has not noticed the loss yet, must write nothing."""
        lease = self.zk.lease or {}
        deposed = lease.get("deposed") or {}
        self._ensure(lease.get("holder") == node and deposed.get("node") != node,
                     f"{node} acted as primary without holding the primary lease ({lease})")

    def check_placement(self, uuid: str, target: str) -> None:
        """A recovered VM goes to a node with a live session (not to another dead one)."""
        self._ensure(target in self.zk.markers, f"{uuid} recovered onto {target}, which has no live session")

    # -- scenario actions --------------------------------------------------------------------------

    def apply(self, verb: str, *args: Any) -> None:
        self.log("scenario", " ".join([verb, *map(str, args)]))
        target = self.nodes.get(args[0]) if args and isinstance(args[0], str) else None
        if verb == "kill":
            assert target is not None
            target.stop_daemon()
        elif verb == "hang":
            assert target is not None
            target.daemon = "hung"
        elif verb == "unhang":
            assert target is not None and target.daemon == "hung"
            target.daemon = "alive"
        elif verb in ("hang_ha", "unhang_ha"):
            assert target is not None and target.monitor is not None
            target.ha_hung = verb == "hang_ha"
        elif verb == "start":
            assert target is not None and target.powered and target.daemon == "dead"
            target.start_daemon()
        elif verb == "ack":
            assert args[0] in self.zk.faults, f"no fault {args[0]} to acknowledge"
            self.zk.acked.add(args[0])
        elif verb == "restart":
            assert target is not None
            target.stop_daemon()
            target.start_daemon()
        elif verb == "power_off":
            self.power_off(args[0], "(power loss)")
        elif verb == "power_on":
            assert target is not None and not target.powered
            target.powered, target.link, target.hv = True, True, {}
            target.start_daemon()
        elif verb == "link_down":
            assert target is not None
            target.link = False
        elif verb == "link_up":
            assert target is not None
            target.link = True
        elif verb == "partition":
            self.group = {n: i for i, names in enumerate(args) for n in names.split(",")}
        elif verb == "heal":
            self.group = {}
        elif verb == "zk_stop":
            self.zk.process[args[0]] = False
        elif verb == "zk_start":
            self.zk.process[args[0]] = True
        elif verb == "zk_election":
            self.zk.no_leader_until = self.tick + round(args[0] * TICKS)
        elif verb == "maintenance":
            self.zk.maintenance = args[0] == "on"
        elif verb in ("ready", "flush"):
            doc = {**self.zk.node_docs[args[0]], "domain_state": "unflush" if verb == "ready" else "flush"}
            self.write_node("admin", args[0], doc)
        elif verb == "blocklist_fails":
            self.storage.fail = args[0] == "on"
        elif verb == "agent":
            self.agents[args[0]] = args[1]
        else:
            raise ValueError(f"unknown scenario verb {verb}")

    # -- the loop ----------------------------------------------------------------------------------

    def prefer(self, node: SimNode) -> list[str]:
        members = self.zk.members
        start = (node.index - 1) % len(members)
        return members[start:] + members[:start]

    def lock_holder(self) -> int | None:
        """The session first in line on the primary lock (a dead process's entry does not count)."""
        for sid in self.zk.queue:
            s = self.zk.sessions[sid]
            node = self.nodes[s.node]
            if not s.expired and s.incarnation == node.incarnation and node.process_running():
                return sid
        return None

    def update_primary(self) -> None:
        sid = self.lock_holder()
        primary = None if sid is None else self.zk.sessions[sid].node
        if primary != self.primary:
            self.primary = primary
            self.log(primary or "zookeeper", "becomes primary" if primary else "no primary left in the lock")

    def step(self) -> None:
        t = self.tick
        for action in self.actions.get(t, []):
            self.apply(*action)
        for job in self.jobs:
            job.advance(t)
        self.zk.update_quorum(t)
        for node in self.nodes.values():
            if node.process_running() and self.zk.step_client(node.name, node.client, self.prefer(node),
                                                              node.incarnation, t) and node.daemon == "alive":
                node.on_new_session()
        self.zk.expire_sessions(t)
        for node in self.nodes.values():
            node.contend()
        self.update_primary()
        for node in self.nodes.values():
            node.step(t)
        self.check_step()

    def run(self) -> list[str]:
        end = round(self.sc.until * TICKS)
        while self.tick <= end:
            self.step()
            self.tick += 1
        self.tick = end
        self.finish()
        return self.lines

    # -- invariants --------------------------------------------------------------------------------

    def _ensure(self, ok: bool, message: str) -> None:
        if not ok:
            tail = "\n".join(self.lines[-40:])
            raise SimFailure(f"{self.sc.name} at t={ts(self.tick)}: {message}\n--- log tail:\n{tail}")

    def running(self) -> dict[str, list[str]]:
        where: dict[str, list[str]] = defaultdict(list)
        for node in self.nodes.values():
            if node.powered:
                for uuid in node.hv:
                    where[uuid].append(node.name)
        return where

    def writable(self, node: str) -> bool:
        return self.nodes[node].powered and self.address(node) not in self.storage.blocklisted

    def check_step(self) -> None:
        for uuid, nodes in self.running().items():
            writers = [n for n in nodes if self.writable(n)]
            self._ensure(len(writers) <= 1, f"{uuid} runs writable on {', '.join(writers)}")
            self._ensure(len(nodes) <= 1 or self.sc.hung_node, f"{uuid} runs on {', '.join(nodes)}")
        active = [n for n, r in self.zk.fence.items() if r.get("phase") in ACTIVE]
        self._ensure(len(active) <= 1, f"more than one fence chain at once: {active}")

    def in_service(self, name: str) -> bool:
        node = self.nodes[name]
        return (node.powered and node.daemon == "alive" and node.client.connected
                and self.zk.node_docs[name].get("daemon_state") == "run")

    def finish(self) -> None:
        where = self.running()
        for uuid in sorted(self.zk.vms, key=self.vm_name):
            doc = self.zk.vms[uuid]
            on = where.get(uuid, [])
            self.log("end", f"vm {doc['name']}: {doc['state']} on {doc['node']}"
                     + (", autostart" if doc.get("node_autostart") else "")
                     + f"; running on {', '.join(on) or 'nothing'}")
        for name, node in self.nodes.items():
            doc = self.zk.node_docs[name]
            power = "on" if node.powered else "off"
            blocked = ", blocklisted" if self.address(name) in self.storage.blocklisted else ""
            self.log("end", f"node {name}: power {power}, daemon {node.daemon}, daemon_state "
                            f"{doc['daemon_state']}, domain_state {doc['domain_state']}{blocked}")
        for name, rec in sorted(self.zk.fence.items()):
            self.log("end", f"fence record {name}: phase {rec['phase']}, fence {rec.get('fence') or '-'}, "
                            f"blocklist {rec.get('blocklist') or '-'}, action {rec.get('action') or '-'}, "
                            f"recovered {rec.get('recovered', 0)}, stranded {rec.get('stranded', 0)}, "
                            f"attempts {rec.get('attempts', 0)}, {len(rec.get('history', []))} earlier")
        for key in sorted(self.zk.faults):
            self.log("end", f"fault {key}")
        for pattern in self.sc.forbid:
            bad = [line for line in self.lines if re.search(pattern, line)]
            self._ensure(not bad, f"forbidden line: {bad[:1]}")
        if self.sc.no_fence:
            self._ensure(not self.zk.fence, f"fenced: {', '.join(sorted(self.zk.fence))}")
        for vm in self.sc.vms:
            self.check_outcome(vm, self.sc.expect[vm.name], where.get(vm.name, []))

    def check_outcome(self, vm: VM, expected: str, on: list[str]) -> None:
        doc = self.zk.vms[vm.name]
        kind, _, node = expected.partition("@")
        fault = f"VM_NOT_RECOVERED_{vm.name.upper()}" in self.zk.faults
        writers = [n for n in on if self.writable(n)]
        what = (f"{vm.name} expected {expected}, is {doc['state']} on {doc['node']} running on {on}, "
                f"fault {fault}")
        if kind == "runs":
            self._ensure(doc["state"] == "start" and len(writers) == 1 and writers[0] == doc["node"]
                         and self.in_service(writers[0]) and (not node or writers[0] == node), what)
        elif kind == "stopped":
            self._ensure(doc["state"] == "stop" and doc.get("node_autostart") and fault and not writers, what)
        elif kind == "stranded":
            # assigned to the dead node, or (it was migrating away) claimed by it
            claimed = self.zk.statuses.get(vm.name, {}).get("node") == node
            self._ensure(doc["state"] in VM_RECOVER_STATES and (doc["node"] == node or claimed) and fault
                         and all(n == node for n in on), what)
        elif kind == "off":
            self._ensure(doc["state"] == "stop" and not on, what)
        else:
            raise ValueError(f"unknown outcome {expected}")


def _xml(name: str, mib: int) -> str:
    return (f"<domain type='kvm'><name>{name}</name><uuid>{uuid5(NAMESPACE_DNS, name)}</uuid>"
            f"<memory unit='MiB'>{mib}</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices/></domain>")
