"""The reconciler's view of ZooKeeper: VM records, statuses, peer nodes, locks, consoles, stats.

`VMStore` is what the reconciler needs; `ZKStore` implements it over ZooKeeper (the unit tests
use an in-memory one). Every change of a VM document is a transition of
`pvc.cluster.vms.transitions`, applied inside the store's compare-and-set loop, so a decision is
always made on what is stored. Status writes are merges of fields into the raw document (keys
this version does not know are kept); reads are typed: `NodeVMStatus` and `PeerNode` add the keys
node daemons keep beside the shared records — in a VM's status `migrating_to`/`migrating_from`/
`migration_started` (a live sender is moving the VM: its target must not start it meanwhile),
`started` and `last_migration_error`; in a node document `libvirt_migration_uri`/
`migration_address` (written by the node daemon).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError
from pydantic import Field

from pvc.cluster import clusterinfo
from pvc.cluster.clusterinfo import get_cluster
from pvc.cluster.vms import startlock
from pvc.cluster.vms.transitions import Transition, apply_to_doc
from pvc.core import schema
from pvc.core.records import NodeRecord, VMRecord, VMStatus
from pvc.core.zk import ZK

log = logging.getLogger("pvcnoded.vms")

StatusChange = Callable[[dict[str, Any]], dict[str, Any]]


class NodeVMStatus(VMStatus):
    """A VM's status as node daemons read it: VMStatus plus the keys only they write."""

    migrating_to: str = ""              # a live sender moves the VM there: that node must not start it
    migrating_from: str = ""
    migration_started: float = 0.0
    started: float = 0.0
    last_migration_error: dict[str, Any] = Field(default_factory=dict)


class PeerNode(NodeRecord):
    """A node document as the VM reconciler reads it: NodeRecord plus what its daemon adds."""

    libvirt_migration_uri: str = ""     # where live migrations to it go
    migration_address: str = ""
    cluster_address: str = ""


def status_of(data: Any) -> NodeVMStatus:
    """The typed status of a raw document; an absent or unreadable one claims nothing."""
    if isinstance(data, dict):
        try:
            return NodeVMStatus.model_validate(data)
        except ValueError:
            log.warning("ignoring an unreadable VM status %s", data)
    return NodeVMStatus()


class VMStore(Protocol):
    """The reconciler's view of ZooKeeper (an in-memory one exists for the unit tests)."""

    def load_vm(self, uuid: str) -> VMRecord | None: ...
    def load_vms(self) -> dict[str, VMRecord]: ...
    def load_status(self, uuid: str) -> NodeVMStatus: ...
    def load_statuses(self, uuids: list[str]) -> dict[str, NodeVMStatus]: ...
    def update_vm(self, uuid: str, transition: Transition) -> bool:
        """Apply a transition to the stored document (compare-and-set); True when it wrote."""
    def update_status(self, uuid: str, fn: StatusChange) -> None: ...
    def update_statuses(self, changes: dict[str, StatusChange]) -> None: ...
    def alive_nodes(self) -> set[str]: ...
    def node_docs(self) -> dict[str, PeerNode]: ...
    def cluster_selector(self) -> str: ...
    def cluster_id(self, create: bool = False) -> str: ...
    def vm_exists(self, uuid: str) -> bool: ...
    def start_lock(self, uuid: str, timeout: float) -> contextlib.AbstractContextManager[bool]: ...
    def put_console(self, uuid: str, text: str) -> None: ...
    def stats_shards(self, node: str) -> dict[int, dict[str, Any]]: ...
    def write_stats(self, node: str, changed: dict[int, dict[str, Any]], stale: list[int]) -> None: ...


class ZKStore:
    """VMStore over ZooKeeper: CAS writes, pipelined bulk reads, never resurrecting a deleted VM."""

    def __init__(self, zk: ZK) -> None:
        self.zk = zk
        self._cluster_id = ""

    def load_vm(self, uuid: str) -> VMRecord | None:
        data = self.zk.get(schema.vm(uuid), None)
        return _record(data)

    def load_vms(self) -> dict[str, VMRecord]:
        uuids = self.zk.children(schema.VMS)
        docs = self.zk.get_many([schema.vm(u) for u in uuids]) if uuids else {}
        out = {}
        for uuid in uuids:
            record = _record(docs.get(schema.vm(uuid)))
            if record is not None:
                out[uuid] = record
        return out

    def load_status(self, uuid: str) -> NodeVMStatus:
        return status_of(self.zk.get(schema.vm_status(uuid), None))

    def load_statuses(self, uuids: list[str]) -> dict[str, NodeVMStatus]:
        docs = self.zk.get_many([schema.vm_status(u) for u in uuids]) if uuids else {}
        return {u: status_of(docs.get(schema.vm_status(u))) for u in uuids}

    def update_vm(self, uuid: str, transition: Transition) -> bool:
        written = False

        def change(doc: Any) -> Any:
            nonlocal written
            if not isinstance(doc, dict):
                return doc
            try:
                new = apply_to_doc(dict(doc), transition)
            except ValueError:
                log.warning("VM %s: unreadable document, not changing it", uuid)
                return doc
            written = new is not None and new != doc
            return doc if new is None else new

        try:
            self.zk.update(schema.vm(uuid), change)
        except NoNodeError:
            return False
        return written

    def update_status(self, uuid: str, fn: StatusChange) -> None:
        path = schema.vm_status(uuid)
        for _ in range(20):
            doc = self.zk.get_doc(path)
            current = doc.data if doc is not None and isinstance(doc.data, dict) else {}
            new = fn(dict(current))
            if doc is not None and new == doc.data:
                return
            try:
                if doc is None:
                    # makepath=False: a status write must never re-create a VM that was removed
                    self.zk.create_doc(path, new, makepath=False)
                else:
                    self.zk.set_doc(path, new, doc.version)
                return
            except (BadVersionError, NodeExistsError):
                continue
            except NoNodeError:
                return
        log.warning("status of VM %s: too many concurrent updates", uuid)

    def update_statuses(self, changes: dict[str, StatusChange]) -> None:
        """One pipelined round of reads and one of CAS writes; conflicts fall back to one by one.
        Creates use makepath=False: a status write must never re-create a VM that was removed
        (its write fails with NoNodeError and is dropped)."""
        if not changes:
            return
        paths = {uuid: schema.vm_status(uuid) for uuid in changes}
        docs = self.zk.get_many_docs(list(paths.values()))
        writes: list[tuple[str, Any, int | None]] = []
        for uuid, path in paths.items():
            doc = docs.get(path)
            current = None if doc is None else doc.data
            new = changes[uuid](dict(current if isinstance(current, dict) else {}))
            if new != current:
                writes.append((path, new, None if doc is None else doc.version))
        lost = self.zk.write_many(writes, makepath=False)
        for uuid, path in paths.items():
            if isinstance(lost.get(path), BadVersionError | NodeExistsError):
                self.update_status(uuid, changes[uuid])

    def alive_nodes(self) -> set[str]:
        names = self.zk.children(schema.NODES)
        markers = self.zk.get_many([schema.node_alive(n) for n in names]) if names else {}
        return {n for n in names if markers.get(schema.node_alive(n)) is not None}

    def node_docs(self) -> dict[str, PeerNode]:
        names = self.zk.children(schema.NODES)
        docs = self.zk.get_many([schema.node(n) for n in names]) if names else {}
        out = {}
        for name in names:
            doc = docs.get(schema.node(name))
            try:
                out[name] = PeerNode.model_validate(doc)
            except ValueError:
                continue                # absent or unreadable: not a node to migrate to
        return out

    def cluster_selector(self) -> str:
        return get_cluster(self.zk).migration_target_selector or "mem"

    def cluster_id(self, create: bool = False) -> str:
        """This cluster's id (what the domains started here are marked with); "" when it has
        none and `create` is false. Read once: the id never changes."""
        if not self._cluster_id:
            self._cluster_id = (clusterinfo.cluster_id(self.zk) if create
                                else clusterinfo.get_cluster(self.zk).id)
        return self._cluster_id

    def vm_exists(self, uuid: str) -> bool:
        """Whether the VM's znode exists (read now, whatever its content)."""
        return self.zk.exists(schema.vm(uuid))

    @contextlib.contextmanager
    def start_lock(self, uuid: str, timeout: float) -> Iterator[bool]:
        """A ZooKeeper lock per VM around starts: two daemons (old and new, or two nodes that
        both believe they own it) never create the same domain at the same time, and a remove
        waits for a start in flight (pvc.cluster.vms.startlock)."""
        with startlock.start_lock(self.zk, uuid, timeout, "vmstart") as got:
            yield got

    def put_console(self, uuid: str, text: str) -> None:
        # Created only while the VM exists, so a deleted VM leaves no console behind.
        self.zk.put_guarded(schema.vm_console(uuid), text, guard=schema.vm(uuid))

    def stats_shards(self, node: str) -> dict[int, dict[str, Any]]:
        """This node's stats shards as stored (read once, so a restarted daemon cleans up)."""
        parent = schema.vm_stats_node(node)
        names = [n for n in self.zk.children(parent) if n.isdigit()]
        docs = self.zk.get_many([schema.vm_stats(node, n) for n in names]) if names else {}
        return {int(n): d if isinstance(d := docs.get(schema.vm_stats(node, n)), dict) else {} for n in names}

    def write_stats(self, node: str, changed: dict[int, dict[str, Any]], stale: list[int]) -> None:
        """Pipelined set (create when missing) of the changed shards, delete of the stale ones."""
        self.zk.put_many({schema.vm_stats(node, shard): doc for shard, doc in changed.items()})
        self.zk.delete_many([schema.vm_stats(node, shard) for shard in stale])


def _record(data: Any) -> VMRecord | None:
    if not isinstance(data, dict):
        return None
    try:
        return VMRecord.model_validate(data)
    except ValueError:
        log.warning("ignoring an unreadable VM document %s", data.get("uuid"))
        return None



_STATUS_BASE = {k: v for k, v in VMStatus().doc().items() if k != "stats"}


def merge_status(fields: dict[str, Any]) -> StatusChange:
    """Status update: defaults, the current document, then fields; stats live in schema.vm_stats."""
    def merged(doc: dict[str, Any]) -> dict[str, Any]:
        out = {**_STATUS_BASE, **doc, **fields}
        out.pop("stats", None)
        return out
    return merged
