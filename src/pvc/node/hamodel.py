"""What `pvc.node.fencing.HAMonitor` stands on: the interfaces it drives (`HAStore`,
`StorageFence`; `pvc.node.hastore` implements them over ZooKeeper and Ceph, tests/sim over the
simulated world) and the pure rules of its guards (the brake, the quorum guard)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pvc.core.records import NodeRecord, VMRecord

Clock = Callable[[], float]


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

    def running_on(self, uuids: list[str]) -> dict[str, str]:
        """{uuid: node} of those VMs whose status says they run (on that node)."""

    def raise_fault(self, key: str, delta: int, message: str) -> None: ...
    def clear_fault(self, key: str) -> None: ...

    def fault_state(self, key: str) -> str | None:
        """'new' or 'ack' for an active fault, None when there is none (resolved or deleted)."""

    def active_faults(self, prefixes: tuple[str, ...]) -> list[str]:
        """Ids of the active faults whose id starts with one of these prefixes."""

    def lease(self) -> tuple[dict[str, Any] | None, int]:
        """The primary lease document and its version (-1: none yet)."""

    def write_lease(self, doc: dict[str, Any], version: int, guarded: bool = True) -> int | None:
        """Write the lease only at `version` (create it at -1) and, `guarded`, only while this
        coordinator's entry on the primary lock exists; the new version, None when either changed."""

    def lock_holder(self) -> tuple[str, str] | None:
        """(entry, node) of the first in line on the primary lock: the primary."""

    def depose(self, entry: str, doc: dict[str, Any], version: int) -> bool:
        """In one transaction: the lease written at `version` and the lock entry deleted."""

    def zk_members(self, node: str) -> list[tuple[str | None, bool]]:
        """Every configured ZooKeeper member: (the node it runs on or None, whether it serves),
        for the quorum guard about `node`: members on `node` need not be asked (reported as not
        serving), and none is asked when `node` runs none."""


@dataclass(frozen=True, order=True)
class Suspect:
    """A node in trouble: `since` the trouble began, dead by the rules from `due` on."""

    since: float
    node: str
    reason: str = field(compare=False)
    due: float = field(compare=False)
    kind: str = field(compare=False)      # session | hung | deposed


def quorum_refusal(members: list[tuple[str | None, bool]], node: str) -> str | None:
    """Why fencing `node` would leave ZooKeeper without a quorum, or None when it would not: the
    members serving on other nodes must be a majority of the ensemble by themselves."""
    if not any(owner == node for owner, _ in members):
        return None
    total = len(members)
    others = sum(1 for owner, serving in members if serving and owner != node)
    if others * 2 > total:
        return None
    return (f"it runs a ZooKeeper member and powering it off would leave {others} of {total} members "
            f"serving, no quorum (a quorum needs {total // 2 + 1})")


def brake_trips(recent: set[str], total: int, share: float) -> bool:
    """More than `share` of the cluster's `total` nodes died within the window."""
    return total > 0 and len(recent) > share * total
