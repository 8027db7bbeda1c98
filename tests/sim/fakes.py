"""The adapters HAMonitor drives, over the simulated world: HAStore, FenceAgent, StorageFence."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pvc.adapters.ceph import StorageError
from pvc.adapters.fence import FenceOutcome
from pvc.cluster.vms.transitions import apply_to_doc, recover
from pvc.core.records import NodeRecord, VMRecord

from .zkmodel import TICKS

if TYPE_CHECKING:
    from .world import World

AGENT_DELAY = {"ok": 1 * TICKS, "fail": 1 * TICKS, "slow": 20 * TICKS}


class SimStore:
    """HAStore for one coordinator: every call needs that coordinator's live connection, and every
    write of a primary's action is checked to come from the holder of the primary lease."""

    def __init__(self, world: World, me: str) -> None:
        self.world, self.me = world, me

    @property
    def zk(self) -> Any:
        return self.world.require(self.me)

    def nodes(self) -> dict[str, NodeRecord]:
        zk = self.zk
        return {n: self.world.node_record(n) for n in sorted(zk.node_docs)}

    def alive(self) -> set[str]:
        return set(self.zk.markers)

    def maintenance(self) -> bool:
        return bool(self.zk.maintenance)

    def fence_records(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self.zk.fence)

    def put_fence_record(self, node: str, record: dict[str, Any]) -> None:
        zk = self.zk
        self.world.check_actor(self.me)
        old = zk.fence.get(node) or {}
        new = copy.deepcopy(record)
        events = new.get("events", [])
        if old.get("started") == new.get("started"):
            seen = len(old.get("events", []))
            assert len(events) >= seen and events[:seen] == old.get("events", []), "fence events rewritten"
            fresh = events[seen:]
        else:
            fresh = events
        zk.fence[node] = new
        for ev in fresh:
            self.world.log(self.me, f"fence {node} {ev['phase']}: {ev['message']}", at=ev["time"])
        self.world.check_fence_record(node, new)

    def update_node(self, node: str, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        zk = self.zk
        self.world.check_actor(self.me)
        if node in zk.node_docs:
            self.world.write_node(self.me, node, fn(copy.deepcopy(zk.node_docs[node])))

    def fence_info(self, node: str) -> dict[str, Any]:
        self.zk  # noqa: B018 (needs the connection like every read)
        return {"agent": self.world.agent_for(node), "node": node}

    def node_addresses(self, node: str) -> list[str]:
        self.zk  # noqa: B018
        return [self.world.address(node)]

    def vms(self) -> dict[str, VMRecord]:
        zk = self.zk
        return {u: self.world.vm_record(u) for u in sorted(zk.vms)}

    def recover_vm(self, uuid: str, dead: str, target: str | None) -> bool:
        zk = self.zk
        self.world.check_actor(self.me)
        doc = zk.vms.get(uuid)
        new = None if doc is None else apply_to_doc(doc, recover(dead, target))
        if new is None:
            return False
        if target is not None:
            self.world.check_placement(uuid, target)
        self.world.write_vm(self.me, uuid, new)
        status = zk.statuses.get(uuid, {})
        if status.get("node") == dead and status.get("running"):
            zk.statuses[uuid] = {**status, "running": False}
        return True

    def claimed_by(self, node: str) -> set[str]:
        zk = self.zk
        return {u for u, s in zk.statuses.items() if s.get("node") == node and s.get("running")}

    def release_claims(self, node: str) -> int:
        zk = self.zk
        self.world.check_actor(self.me)
        count = 0
        for uuid, status in sorted(zk.statuses.items()):
            if status.get("node") == node and status.get("running"):
                zk.statuses[uuid] = {**status, "running": False}
                count += 1
        return count

    def running_on(self, uuids: list[str]) -> dict[str, str]:
        zk = self.zk
        return {u: s["node"] for u in uuids if (s := zk.statuses.get(u, {})).get("running") and s.get("node")}

    def raise_fault(self, key: str, delta: int, message: str) -> None:
        zk = self.zk
        self.world.check_actor(self.me)
        if zk.faults.get(key) != message:
            zk.faults[key] = message
            self.world.log(self.me, f"fault {key} raised: {message}")

    def clear_fault(self, key: str) -> None:
        zk = self.zk
        self.world.check_actor(self.me)
        zk.acked.discard(key)
        if zk.faults.pop(key, None) is not None:
            self.world.log(self.me, f"fault {key} cleared")

    def fault_state(self, key: str) -> str | None:
        zk = self.zk
        if key not in zk.faults:
            return None
        return "ack" if key in zk.acked else "new"

    def active_faults(self, prefixes: tuple[str, ...]) -> list[str]:
        return sorted(k for k in self.zk.faults if k.startswith(prefixes))

    # -- the primary lease and lock ------------------------------------------------------------------

    def lease(self) -> tuple[dict[str, Any] | None, int]:
        zk = self.zk
        return copy.deepcopy(zk.lease), zk.lease_version

    def _entry(self) -> int | None:
        session = self.world.nodes[self.me].client.session
        return None if session is None else session.id

    def write_lease(self, doc: dict[str, Any], version: int, guarded: bool = True) -> int | None:
        """As ZKHAStore: compare-and-set, and (guarded) only while our lock entry exists."""
        zk = self.zk
        if version != zk.lease_version or (guarded and self._entry() not in zk.queue):
            return None
        zk.lease, zk.lease_version = copy.deepcopy(doc), zk.lease_version + 1
        return zk.lease_version

    def lock_holder(self) -> tuple[str, str] | None:
        zk = self.zk
        holder = self.world.lock_holder()
        return None if holder is None else (str(holder), zk.sessions[holder].node)

    def depose(self, entry: str, doc: dict[str, Any], version: int) -> bool:
        zk = self.zk
        if version != zk.lease_version or int(entry) not in zk.queue:
            return False
        zk.lease, zk.lease_version = copy.deepcopy(doc), zk.lease_version + 1
        zk.queue.remove(int(entry))
        return True

    def zk_members(self, node: str) -> list[tuple[str | None, bool]]:
        zk = self.zk
        return [(m, m in zk.quorum) for m in zk.members]


@dataclass
class SimJob:
    world: World
    owner: str
    incarnation: int
    target: str
    kind: str
    due: int | None
    outcome: FenceOutcome | None = None
    cancelled: bool = False
    gone: bool = False

    def poll(self) -> FenceOutcome | None:
        return self.outcome

    def cancel(self) -> None:
        if not self.cancelled and self.outcome is None:
            self.cancelled = True
            self.world.log(self.owner, f"fence agent '{self.kind}' against {self.target} cancelled")

    def advance(self, now: int) -> None:
        """Called by the world every step: the agent process does its work."""
        if self.cancelled or self.gone or self.outcome is not None:
            return
        owner = self.world.nodes[self.owner]
        if not owner.process_running() or owner.incarnation != self.incarnation:
            self.gone = True
            self.world.log(self.owner, f"fence agent against {self.target} died with its daemon")
            return
        if self.due is None or now < self.due:
            return
        if self.kind == "fail":
            self.outcome = FenceOutcome(False, f"BMC of {self.target} did not answer")
            return
        self.world.power_off(self.target, f"by the fence agent of {self.owner}")
        self.outcome = FenceOutcome(True, f"{self.target} powered off")


class SimAgent:
    """FenceAgent for one coordinator daemon."""

    def __init__(self, world: World, owner: str, incarnation: int) -> None:
        self.world, self.owner, self.incarnation = world, owner, incarnation

    def start(self, node: str, info: dict[str, Any]) -> SimJob:
        kind = info.get("agent", "none")
        delay = AGENT_DELAY.get(kind)
        job = SimJob(self.world, self.owner, self.incarnation, node, kind,
                     None if delay is None else self.world.tick + delay)
        self.world.jobs.append(job)
        return job


class SimStorage:
    """StorageFence over the simulated Ceph: a blocklist of addresses, one RBD lock per VM volume."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.blocklisted: set[str] = set()
        self.fail = False

    def blocklist(self, addresses: list[str]) -> list[str]:
        if self.fail:
            raise StorageError("ceph osd blocklist add: timed out")
        added = [a for a in addresses if a not in self.blocklisted]
        self.blocklisted |= set(added)
        return [f"{a}:0/0" for a in added]

    def unblocklist(self, addresses: list[str]) -> None:
        if self.fail:
            raise StorageError("ceph osd blocklist rm: timed out")
        self.blocklisted -= set(addresses)

    def mark_osds_down(self, node: str) -> list[int]:
        return self.world.osds(node)

    def release_locks(self, volumes: list[str], addresses: list[str]) -> int:
        count = 0
        for volume in volumes:
            holder = self.world.locks.get(volume)
            if holder is not None and self.world.address(holder) in addresses:
                del self.world.locks[volume]
                count += 1
        return count
