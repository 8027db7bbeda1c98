"""The node's VM reconciler: make this node's hypervisor match the VM records (DESIGN D2, D7).

The API only writes desired state (`VMRecord.state`, `.node`); this module compares it with what
really runs on this node's hypervisor and acts per PVC's "who acts" table (pvc-facts §4.2):

* only the node named in `node` starts a VM, and only after checking its own hypervisor and that
  no other node reports the VM running (a dead node's claim stands until fencing clears it);
  starts are serialised per VM (one job per UUID in this process) and across processes by a
  ZooKeeper lock, so a VM is never started twice;
* a node running a VM it does not own migrates it away (state migrate*) or stops it;
* restart/shutdown are carried out and then recorded (restart -> start, shutdown -> stop);
* a VM that should run here and does not (QEMU crashed) is started again;
* a VM with rbd disks starts only when no other client holds a lock on them (this node's stale
  locks are broken first) and with monitors and cephx auth filled in (`NodeCeph`).

Watches only wake the loop; a full pass every keepalive catches anything missed, and a restarted
daemon simply adopts the domains libvirtd still runs (they are transient, so they outlive us).
The decision is the pure function `decide()`; all ZooKeeper access goes through a `VMStore`, so
the unit tests run the real reconciler over an in-memory store and a FakeHypervisor.

Every change of a VM document is a transition of `pvc.cluster.vms.transitions`, applied by the
store inside its compare-and-set loop. Extra keys node daemons keep beside the shared records are
read through typed views (`NodeVMStatus`, `PeerNode`): in a VM's status `migrating_to`/
`migrating_from`/`migration_started` (a live sender is moving the VM: its target must not start it
meanwhile), `started` and `last_migration_error`; in a node document `libvirt_migration_uri`/
`migration_address` (written by the node daemon).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError
from pydantic import Field

from pvc.adapters.ceph import StorageError, StorageNotFound
from pvc.adapters.hypervisor import (
    DomainExists,
    DomainInfo,
    DomainNotFound,
    Hypervisor,
    HypervisorError,
    HypervisorUnavailable,
)
from pvc.cluster.placement import find_target, vm_demand
from pvc.cluster.vms.transitions import (
    Transition,
    abort_migration,
    apply_to_doc,
    flush_away,
    flush_shutdown,
    settle,
    unflush_autostart,
    unflush_back,
)
from pvc.core import domainxml, schema
from pvc.core.errors import ClusterUnavailable, InvalidInput, PVCError
from pvc.core.records import NodeRecord, VMRecord, VMStatus
from pvc.core.vocabulary import VM_ACTIVE_STATES, VM_MIGRATE_STATES, VM_STATES
from pvc.core.zk import ZK, decode, encode
from pvc.node.console import ConsoleTail
from pvc.node.storage import NodeCeph, address_ip, lock_decision

log = logging.getLogger("pvcnoded.vms")

# States in which the VM must not run anywhere ("disable/provision/fail/mirror -> nothing runs";
# delete is transient during removal, import/restore are legacy): every state but the active
# ones, the migrate family and stop, so a state new to the vocabulary never runs by default.
NEVER_RUN = frozenset(VM_STATES) - {*VM_ACTIVE_STATES, *VM_MIGRATE_STATES, "stop"}


class Action(enum.Enum):
    NONE = "none"                     # nothing to do
    WAIT = "wait"                     # someone else acts first (a sender, another node)
    ENSURE = "ensure"                 # running as wanted: only keep its status right
    START = "start"                   # start here (guarded)
    RESTART = "restart"               # shut down here, then record start (which starts it)
    SHUTDOWN = "shutdown"             # ACPI, poll, destroy after the timeout, record stop
    STOP = "stop"                     # destroy (the state already says stop)
    TERMINATE = "terminate"           # destroy, no state change (runs where it must not)
    SHUTDOWN_AWAY = "shutdown_away"   # graceful shutdown of a VM we do not own, no state change
    MIGRATE = "migrate"               # sender side of a migration to `node`
    WRITE_START = "write_start"       # restart/migrate* with nothing to do here: record start
    WRITE_STOP = "write_stop"         # shutdown of a VM that runs nowhere: record stop


@dataclass(frozen=True)
class Observation:
    """Everything decide() needs about one VM, as seen from one node."""

    state: str
    node: str
    running_here: bool
    running_elsewhere: bool = False   # another live node reports it running
    incoming: bool = False            # a live sender is migrating it to this node right now


def decide(me: str, obs: Observation) -> Action:
    """PVC's who-acts table (pvc-facts §4.2) as a pure function."""
    state, owner = obs.state, obs.node == me
    if obs.incoming and owner:
        return Action.WAIT            # the domain here may be the paused migration target
    if obs.running_here:
        if state in NEVER_RUN:
            return Action.TERMINATE
        if not owner:
            if state in VM_MIGRATE_STATES:
                return Action.MIGRATE
            if state == "shutdown":
                return Action.SHUTDOWN_AWAY
            return Action.TERMINATE
        return {
            "start": Action.ENSURE,
            "restart": Action.RESTART,
            "shutdown": Action.SHUTDOWN,
            "stop": Action.STOP,
        }.get(state, Action.WRITE_START if state in VM_MIGRATE_STATES else Action.NONE)
    if not owner:
        return Action.NONE
    if state == "start":
        return Action.WAIT if obs.running_elsewhere else Action.START
    if state == "restart":
        return Action.WAIT if obs.running_elsewhere else Action.WRITE_START
    if state == "shutdown":
        return Action.WAIT if obs.running_elsewhere else Action.WRITE_STOP
    if state in VM_MIGRATE_STATES:
        # Nothing to receive when it runs nowhere else (a dead sender, a stopped VM): start here.
        return Action.WAIT if obs.running_elsewhere else Action.WRITE_START
    return Action.NONE


def observe(me: str, record: VMRecord, status: NodeVMStatus, running_here: bool,
            alive: Callable[[str], bool]) -> Observation:
    """Build the Observation from the record, the status document and this hypervisor.

    A claim that the VM runs on another node counts even when that node's session is gone: the
    node may still run it (a dead pvcnoded leaves its QEMUs running). Only that node itself (it
    corrects its own claims) or the fencing chain, once the node is fenced (`pvc.node.fencing`),
    clears it."""
    elsewhere = status.running and status.node not in ("", me)
    sender = status.migrating_from
    incoming = status.migrating_to == me and sender not in ("", me) and alive(sender)
    return Observation(record.state, record.node, running_here, elsewhere, incoming)


# ------------------------------------------------------------------------------------------------
# Storage of records and status


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
    def update_status(self, uuid: str, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None: ...
    def update_statuses(self, changes: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None: ...
    def alive_nodes(self) -> set[str]: ...
    def node_docs(self) -> dict[str, PeerNode]: ...
    def cluster_selector(self) -> str: ...
    def start_lock(self, uuid: str, timeout: float) -> contextlib.AbstractContextManager[bool]: ...
    def put_console(self, uuid: str, text: str) -> None: ...
    def stats_shards(self, node: str) -> dict[int, dict[str, Any]]: ...
    def write_stats(self, node: str, changed: dict[int, dict[str, Any]], stale: list[int]) -> None: ...


class ZKStore:
    """VMStore over ZooKeeper: CAS writes, pipelined bulk reads, never resurrecting a deleted VM."""

    def __init__(self, zk: ZK) -> None:
        self.zk = zk

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

    def update_status(self, uuid: str, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
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
                    self.zk.retry(self.zk.client.create, path, encode(new), makepath=False)
                else:
                    self.zk.retry(self.zk.client.set, path, encode(new), version=doc.version)
                return
            except (BadVersionError, NodeExistsError):
                continue
            except NoNodeError:
                return
        log.warning("status of VM %s: too many concurrent updates", uuid)

    def update_statuses(self, changes: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
        """One pipelined round of reads and one of CAS writes; conflicts fall back to one by one."""
        if not changes:
            return
        client = self.zk.client

        def once() -> list[str]:
            reads = {u: client.get_async(schema.vm_status(u)) for u in changes}
            writes = []
            for uuid, pending in reads.items():
                try:
                    raw, stat = pending.get(timeout=10)
                    current, version = decode(raw), stat.version
                except NoNodeError:
                    current, version = None, None
                base = current if isinstance(current, dict) else {}
                new = changes[uuid](dict(base))
                if new == current:
                    continue
                path = schema.vm_status(uuid)
                op = (client.create_async(path, encode(new), makepath=False) if version is None
                      else client.set_async(path, encode(new), version=version))
                writes.append((uuid, op))
            retry = []
            for uuid, op in writes:
                try:
                    op.get(timeout=10)
                except (BadVersionError, NodeExistsError):
                    retry.append(uuid)
                except NoNodeError:
                    pass
            return retry

        for uuid in self.zk.retry(once):
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
        cluster = self.zk.get(schema.CLUSTER, None)
        return str(cluster.get("migration_target_selector") or "mem") if isinstance(cluster, dict) else "mem"

    @contextlib.contextmanager
    def start_lock(self, uuid: str, timeout: float) -> Iterator[bool]:
        """A ZooKeeper lock per VM around starts: two daemons (old and new, or two nodes that
        both believe they own it) never create the same domain at the same time."""
        path = f"{schema.LOCKS}/vmstart/{uuid}"
        lock = self.zk.client.Lock(path, "vmstart")
        try:
            got = lock.acquire(timeout=timeout)
        except Exception:
            got = False
        try:
            yield got
        finally:
            if got:
                with contextlib.suppress(Exception):
                    lock.release()
                with contextlib.suppress(NoNodeError, NotEmptyError, ClusterUnavailable):
                    self.zk.retry(self.zk.client.delete, path)

    def put_console(self, uuid: str, text: str) -> None:
        path, data = schema.vm_console(uuid), encode(text)

        def once() -> None:
            try:
                self.zk.client.set(path, data)
            except NoNodeError:
                # Create it only while the VM exists, so a deleted VM leaves no console behind.
                tx = self.zk.client.transaction()
                tx.check(schema.vm(uuid), -1)
                tx.create(path, data)
                tx.commit()

        self.zk.retry(once)

    def stats_shards(self, node: str) -> dict[int, dict[str, Any]]:
        """This node's stats shards as stored (read once, so a restarted daemon cleans up)."""
        parent = schema.vm_stats_node(node)
        names = [n for n in self.zk.children(parent) if n.isdigit()]
        docs = self.zk.get_many([schema.vm_stats(node, n) for n in names]) if names else {}
        return {int(n): d if isinstance(d := docs.get(schema.vm_stats(node, n)), dict) else {} for n in names}

    def write_stats(self, node: str, changed: dict[int, dict[str, Any]], stale: list[int]) -> None:
        """Pipelined set (create when missing) of the changed shards, delete of the stale ones."""
        client = self.zk.client

        def once() -> None:
            sets = [(shard, client.set_async(schema.vm_stats(node, shard), encode(doc)))
                    for shard, doc in changed.items()]
            deletes = [client.delete_async(schema.vm_stats(node, shard)) for shard in stale]
            creates = []
            for shard, op in sets:
                try:
                    op.get(timeout=10)
                except NoNodeError:
                    creates.append((shard, client.create_async(schema.vm_stats(node, shard),
                                                               encode(changed[shard]), makepath=True)))
            for op in deletes:
                with contextlib.suppress(NoNodeError):
                    op.get(timeout=10)
            for shard, op in creates:
                try:
                    op.get(timeout=10)
                except NodeExistsError:
                    client.set(schema.vm_stats(node, shard), encode(changed[shard]))

        self.zk.retry(once)


def _record(data: Any) -> VMRecord | None:
    if not isinstance(data, dict):
        return None
    try:
        return VMRecord.model_validate(data)
    except ValueError:
        log.warning("ignoring an unreadable VM document %s", data.get("uuid"))
        return None


# ------------------------------------------------------------------------------------------------
# The reconciler


@dataclass(frozen=True)
class ReconcilerSettings:
    """Timers and paths; defaults are PVC's, tests shrink them."""

    interval: float = 5.0                 # keepalive: the full pass period
    shutdown_timeout: float = 180.0       # timer.vm_shutdown_timeout
    poll_s: float = 1.0                   # shutdown / flush polling
    console_dir: str = "/var/log/libvirt"
    console_lines: int = 1000
    migration_attempts: int = 3
    migration_timeout: float = 120.0
    flush_wait_s: float = 120.0           # per VM, as upstream (600 x 0.2 s)
    start_lock_timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Any) -> ReconcilerSettings:
        return cls(interval=settings.timer.keepalive_interval,
                   shutdown_timeout=float(settings.timer.vm_shutdown_timeout),
                   console_dir=settings.path.console_log_directory,
                   console_lines=settings.logging.console_log_lines)


class VMReconciler:
    """Runs on every node; acts only on this node's hypervisor, records what it did."""

    def __init__(self, store: VMStore, hypervisor: Hypervisor, node: str,
                 settings: ReconcilerSettings | None = None, zk: ZK | None = None,
                 ceph: NodeCeph | None = None) -> None:
        self.store, self.hv, self.name = store, hypervisor, node
        self.settings = settings or ReconcilerSettings()
        self.zk = zk                            # only for watches; None in the unit tests
        self.ceph = ceph                        # rbd disks: monitors, auth, locks; None: no storage
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._dirty: set[str] = set()
        self._threads: dict[str, threading.Thread] = {}
        self._watched: set[str] = set()
        self._status_seen: dict[str, tuple[Any, ...]] = {}
        self._live: dict[str, tuple[str, str | None]] = {}   # uuid -> (vnc, console log path)
        self._unknown_logged: set[str] = set()
        self._stats_written: dict[int, dict[str, Any]] | None = None   # shard -> what we last wrote
        self._last_pass = 0.0
        self._loop: threading.Thread | None = None
        self.console = ConsoleTail(self.settings.console_dir, self.settings.console_lines,
                                   store.put_console)
        self.starts = 0                         # domains this reconciler created (tests, logs)
        # The daemon's veto on starts (self-fenced, or declared dead): see pvc.node.daemon.
        self.may_start: Callable[[], bool] = lambda: True
        # UUIDs of the domains seen running here (last keepalive, plus starts since): what the
        # self-fence kills when libvirtd cannot be asked.
        self.known_running: set[str] = set()
        # Raises (message) or clears (None) the cluster fault of a VM that failed to start.
        self.vm_fault: Callable[[str, str | None], None] = lambda name, message: None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, own_timer: bool = True) -> None:
        """Watch /vms and each VM; with own_timer, also run the periodic pass in a thread
        (the node daemon drives it from its keepalive instead, but a missed keepalive must not
        stop reconciliation, so the loop also fires when no pass happened for 1.5 intervals)."""
        if self.zk is not None:
            self.zk.client.ChildrenWatch(schema.VMS, self._on_children)
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
                self.zk.client.DataWatch(schema.vm(uuid), self._doc_watcher(uuid))
                self.zk.client.DataWatch(schema.vm_status(uuid), self._status_watcher(uuid))
        return True

    def _doc_watcher(self, uuid: str) -> Callable[[bytes | None, Any], bool]:
        def on_doc(data: bytes | None, stat: Any) -> bool:
            if self.stopping.is_set():
                return False
            if data is None and stat is None:
                self._watched.discard(uuid)
                self._status_seen.pop(uuid, None)
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
            if record is None or self.stopping.is_set():
                return Action.NONE
            status = self.store.load_status(uuid)
            here = self.hv.is_running(uuid)
            alive = self._alive_fn()
            action = decide(self.name, observe(self.name, record, status, here, alive))
            if action in (Action.NONE, Action.WAIT, Action.ENSURE):
                if action is not Action.WAIT:     # e.g. a paused incoming domain is not "ours" yet
                    self._settle_status(uuid, status, here)
                return action
            log.info("VM %s (%s): state %s, node %s, running here %s -> %s", record.name, uuid,
                     record.state, record.node, here, action.value)
            if not self._execute(action, record):
                return action
        return action

    def _alive_fn(self) -> Callable[[str], bool]:
        cache: dict[str, bool] = {}
        nodes: set[str] | None = None

        def alive(name: str) -> bool:
            nonlocal nodes
            if name not in cache:
                if nodes is None:
                    nodes = self.store.alive_nodes()
                cache[name] = name in nodes
            return cache[name]
        return alive

    def _settle_status(self, uuid: str, status: NodeVMStatus, here: bool) -> None:
        """Keep the status's claim about this node true (running here or not)."""
        if here and (status.node != self.name or not status.running):
            self._live.pop(uuid, None)
            self._patch(uuid, node=self.name, running=True, libvirt_state="running")
        elif not here and status.node == self.name and status.running:
            self._patch(uuid, running=False, libvirt_state="shutoff", vnc="")

    def _patch(self, uuid: str, **fields: Any) -> None:
        self.store.update_status(uuid, _merge({**fields, "updated": time.time()}))

    def _settle(self, uuid: str, new: str, only_from: Iterable[str]) -> bool:
        """Record that a transitional state is done, only while the VM is still in `only_from`."""
        return self.store.update_vm(uuid, settle(new, only_from))

    # -- actions -------------------------------------------------------------------------------------

    def _execute(self, action: Action, record: VMRecord) -> bool:
        """Carry out one action; True when the VM should be looked at again right away."""
        uuid = record.uuid
        if action is Action.START:
            self._start(record)
            return True
        if action is Action.RESTART:
            self._power_off(uuid, {"restart"})
            return self._settle(uuid, "start", {"restart"})
        if action is Action.SHUTDOWN:
            if self._power_off(uuid, {"shutdown"}):
                self._settle(uuid, "stop", {"shutdown"})
            return True
        if action in (Action.STOP, Action.TERMINATE):
            self._destroy(uuid)
            return True
        if action is Action.SHUTDOWN_AWAY:
            self._power_off(uuid, {"shutdown"})
            return True
        if action is Action.MIGRATE:
            self._migrate(record)
            return True
        if action is Action.WRITE_START:
            return self._settle(uuid, "start", {"restart", *VM_MIGRATE_STATES})
        if action is Action.WRITE_STOP:
            return self._settle(uuid, "stop", {"shutdown"})
        return False

    def console_path(self, record: VMRecord) -> str:
        return os.path.join(self.settings.console_dir, f"{record.name}.log")

    def _start(self, record: VMRecord) -> None:
        """Start here, never twice: under the VM's start lock, re-check everything first."""
        uuid = record.uuid
        with self.store.start_lock(uuid, self.settings.start_lock_timeout) as locked:
            if not locked:
                log.info("VM %s: another process holds its start lock; not starting", uuid)
                return
            fresh = self.store.load_vm(uuid)
            if fresh is None or fresh.state != "start" or fresh.node != self.name:
                return
            if self.hv.is_running(uuid):
                return                                 # adopted: it runs already
            if not self.may_start():
                log.warning("VM %s: not starting it: this node is cut off from the cluster or fenced", uuid)
                return
            status = self.store.load_status(uuid)
            if observe(self.name, fresh, status, False, self._alive_fn()).running_elsewhere:
                log.warning("VM %s: %s still reports it running; not starting here", uuid, status.node)
                return
            try:
                xml = domainxml.adapt_for_host(fresh.xml, self.hv.kvm_available())
                volumes = domainxml.parse(xml).rbd_volumes
                if volumes and self.ceph is not None:
                    began = time.monotonic()
                    prepared = self._prepare_rbd(fresh, xml, volumes)
                    if time.monotonic() - began > 2:
                        log.warning("VM %s: Ceph took %.1fs to check its volumes' locks (monitor or OSD "
                                    "failover under way?)", fresh.name, time.monotonic() - began)
                    if prepared is None:
                        return
                    xml = prepared
                os.makedirs(self.settings.console_dir, exist_ok=True)
                xml = domainxml.serial_log(xml, self.console_path(fresh))
                started = time.monotonic()
                self.hv.start(xml)
            except DomainExists:
                return
            except HypervisorUnavailable:
                raise                                  # outcome unknown: look again next pass
            except (HypervisorError, InvalidInput, OSError) as exc:
                reason = str(exc)
                log.error("VM %s (%s) failed to start: %s", fresh.name, uuid, reason)
                self._settle(uuid, "fail", {"start"})
                self._patch(uuid, node=self.name, running=False, libvirt_state="shutoff",
                            failed_reason=reason)
                self.vm_fault(fresh.name, f"VM {fresh.name} failed to start on {self.name}: {reason}")
                return
            self.starts += 1
            self.known_running.add(uuid)
            self._live.pop(uuid, None)
            log.info("VM %s (%s) started in %.2fs", fresh.name, uuid, time.monotonic() - started)
            self._patch(uuid, node=self.name, running=True, libvirt_state="running", failed_reason="",
                        started=time.time())
            if status.failed_reason:
                self.vm_fault(fresh.name, None)     # it failed before; it runs now

    def _prepare_rbd(self, record: VMRecord, xml: str, volumes: list[str]) -> str | None:
        """Clear this node's stale RBD locks and fill in monitors and auth; the XML to start, or
        None when the VM must not start (now: storage unreachable; or ever: a foreign lock, which
        fails the VM with the reason)."""
        assert self.ceph is not None
        try:
            access = self.ceph.disk_access()
            # The OSD map may be stale right after a node failure (its OSDs just marked down by
            # fencing): without the newest one the lock checks below wait for timeouts (~15 s).
            self.ceph.storage.refresh_maps()
            refusal = self._flush_locks(volumes)
        except HypervisorUnavailable:
            raise
        except (StorageError, HypervisorError) as exc:
            log.warning("VM %s (%s): storage not ready, not starting it yet: %s", record.name, record.uuid,
                        getattr(exc, "message", exc))
            return None
        if refusal:
            log.error("VM %s (%s) not started: %s", record.name, record.uuid, refusal)
            self._settle(record.uuid, "fail", {"start"})
            self._patch(record.uuid, node=self.name, running=False, libvirt_state="shutoff",
                        failed_reason=refusal)
            self.vm_fault(record.name, f"VM {record.name} failed to start on {self.name}: {refusal}")
            return None
        return domainxml.fill_rbd(xml, access.hosts, access.username, access.secret_uuid)

    def _flush_locks(self, volumes: list[str]) -> str:
        """pvc-facts §4.2 start: break this node's stale locks on the VM's volumes, unless some
        volume is locked from elsewhere; then change nothing and return why not to start."""
        assert self.ceph is not None
        storage, own = self.ceph.storage, self.ceph.own_addresses()
        stale = []
        for volume in volumes:
            pool, _, name = volume.partition("/")
            try:
                lockers = storage.lockers(pool, name)
                watchers = storage.watchers(pool, name) if lockers else []
            except StorageNotFound:
                return f"volume {volume} does not exist"
            decision = lock_decision(volume, lockers, watchers, own, self._node_addresses() if any(
                address_ip(lk.address) not in own for lk in lockers) else None)
            if decision.refuse:
                return decision.refuse
            stale += [(pool, name, locker) for locker in decision.stale]
        for pool, name, locker in stale:
            log.info("breaking stale lock of %s on %s/%s (held from this node)", locker.client, pool, name)
            try:
                storage.break_lock(pool, name, locker)
            except StorageNotFound:
                pass                    # released meanwhile
        return ""

    def _node_addresses(self) -> dict[str, str]:
        """Address -> node name, from the node documents (to name a lock's holder)."""
        return {d.migration_address: n for n, d in self.store.node_docs().items() if d.migration_address}

    def _destroy(self, uuid: str) -> None:
        try:
            self.hv.destroy(uuid)
        except DomainNotFound:
            pass
        self._after_gone(uuid)

    def _after_gone(self, uuid: str) -> None:
        if self.store.load_status(uuid).node == self.name:
            self._patch(uuid, running=False, libvirt_state="shutoff", vnc="")

    def _power_off(self, uuid: str, keep: set[str]) -> bool:
        """ACPI shutdown, poll until off; destroy after the timeout. Abort (False) when the state
        leaves `keep` (the administrator changed their mind); True when the VM is off."""
        try:
            self.hv.shutdown(uuid)
        except DomainNotFound:
            self._after_gone(uuid)
            return True
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while self.hv.is_running(uuid):
            if self.stopping.is_set():
                return False
            record = self.store.load_vm(uuid)
            if record is None or record.state not in keep:
                log.info("VM %s: state changed during shutdown; stopping the wait", uuid)
                return False
            if time.monotonic() >= deadline:
                log.warning("VM %s did not shut down within %.0fs; destroying it", uuid,
                            self.settings.shutdown_timeout)
                self._destroy(uuid)
                return True
            self.stopping.wait(self.settings.poll_s)
        self._after_gone(uuid)
        return True

    # -- migration (sender) ----------------------------------------------------------------------------

    def _migrate(self, record: VMRecord) -> None:
        """Send the VM to `record.node`: live (up to 3 tries) unless its method says shutdown;
        fall back to a shutdown move unless live is forced; record where it went."""
        uuid, target = record.uuid, record.node
        force_live = record.migration_method == "live" or record.state == "migrate-live"
        force_shutdown = record.migration_method == "shutdown"
        node_doc = self.store.node_docs().get(target)
        alive = target in self.store.alive_nodes()
        if not alive or node_doc is None or node_doc.daemon_state != "run":
            self._abort_migration(record, f"target node {target} is not running")
            return
        self._patch(uuid, migrating_to=target, migrating_from=self.name, migration_started=time.time())
        try:
            error = ""
            if not force_shutdown:
                uri, address = node_doc.libvirt_migration_uri, node_doc.migration_address
                if not uri:
                    error = (f"node {target} publishes no migration URI (set hypervisor.migration_address "
                             "in its configuration)")
                else:
                    for attempt in range(1, self.settings.migration_attempts + 1):
                        if not self._still_migrating(uuid, target):
                            return
                        try:
                            result = self.hv.migrate(
                                uuid, uri, f"tcp://{address}" if address else None,
                                max_downtime_ms=max(1, record.migration_max_downtime), live=True,
                                timeout=self.settings.migration_timeout)
                        except DomainNotFound:
                            return                     # gone meanwhile; look again
                        except HypervisorError as exc:
                            error = str(exc)
                            log.warning("VM %s: live migration to %s, attempt %d failed: %s", uuid,
                                        target, attempt, error)
                            continue
                        self._migrated(record, target, result.duration_s, result.downtime_ms)
                        return
                if force_live:
                    self._abort_migration(record, f"live migration to {target} failed: {error}")
                    return
                log.info("VM %s: falling back to a shutdown migration to %s", uuid, target)
            # Shutdown move: power off here, then record start; the target starts it.
            if not self._power_off(uuid, set(VM_MIGRATE_STATES)):
                return
            self._settle(uuid, "start", VM_MIGRATE_STATES)
            self._patch(uuid, last_migration={"time": time.time(), "duration_s": None,
                                              "downtime_ms": None, "from": self.name, "to": target,
                                              "method": "shutdown"})
        finally:
            self._patch(uuid, migrating_to="", migrating_from="")

    def _still_migrating(self, uuid: str, target: str) -> bool:
        record = self.store.load_vm(uuid)
        return record is not None and record.state in VM_MIGRATE_STATES and record.node == target

    def _migrated(self, record: VMRecord, target: str, duration: float, downtime: int | None) -> None:
        log.info("VM %s (%s) migrated to %s in %.2fs, downtime %s ms", record.name, record.uuid, target,
                 duration, downtime)
        self._live.pop(record.uuid, None)
        # Status first (it runs there now), then the state: the target sees a consistent picture.
        self._patch(record.uuid, node=target, running=True, migrating_to="", migrating_from="",
                    last_migration={"time": time.time(), "duration_s": round(duration, 3),
                                    "downtime_ms": downtime, "from": self.name, "to": target,
                                    "method": "live"})
        self._settle(record.uuid, "start", VM_MIGRATE_STATES)

    def _abort_migration(self, record: VMRecord, why: str) -> None:
        """Keep the VM here: state start, node back to this node, the origin forgotten."""
        log.error("VM %s (%s): migration aborted: %s", record.name, record.uuid, why)
        self.store.update_vm(record.uuid, abort_migration(self.name))
        self._patch(record.uuid, last_migration_error={"time": time.time(), "to": record.node, "error": why})

    # -- the periodic pass -----------------------------------------------------------------------------

    def full_pass(self, records: dict[str, VMRecord] | None = None,
                  statuses: dict[str, NodeVMStatus] | None = None,
                  domains: dict[str, DomainInfo] | None = None) -> None:
        """Decide for every VM from bulk reads; kick the ones with work (jobs re-read fresh)."""
        self._last_pass = time.monotonic()
        records = self.store.load_vms() if records is None else records
        statuses = self.store.load_statuses(list(records)) if statuses is None else statuses
        domains = self.hv.list_domains() if domains is None else domains
        alive = self._alive_fn()
        for uuid, record in records.items():
            status = statuses.get(uuid) or NodeVMStatus()
            here = uuid in domains and domains[uuid].running
            action = decide(self.name, observe(self.name, record, status, here, alive))
            stale_mark = (status.migrating_from == self.name and status.migrating_to
                          and not self.busy(uuid))
            if stale_mark:
                self._patch(uuid, migrating_to="", migrating_from="")
            if action not in (Action.NONE, Action.WAIT, Action.ENSURE):
                self.kick(uuid)
        for uuid, info in domains.items():
            if uuid not in records and info.running and uuid not in self._unknown_logged:
                self._unknown_logged.add(uuid)
                log.info("domain %s (%s) runs here but is not a PVC VM; leaving it alone", info.name, uuid)

    def keepalive(self) -> dict[str, Any]:
        """One keepalive: a full pass, VM status (one all_stats call, batched writes), consoles,
        and this node's VM figures for its node document."""
        domains = self.hv.list_domains()
        self.known_running = {u for u, d in domains.items() if d.running}
        stats = self.hv.all_stats()
        records = self.store.load_vms()
        statuses = self.store.load_statuses(list(records))
        self.full_pass(records, statuses, domains)
        running = {u: d for u, d in domains.items() if d.running and u in records}
        changes: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        now = time.time()
        for uuid in records:
            status = statuses.get(uuid) or NodeVMStatus()
            fields: dict[str, Any] | None = None
            if uuid in running:
                if status.migrating_to == self.name or self.busy(uuid):
                    # incoming migration (the sender reports it) or a job acting on the VM now
                    # (it writes the status itself; this snapshot may be older than its write)
                    continue
                fields = {"node": self.name, "running": True, "libvirt_state": running[uuid].state,
                          "vnc": self._live_facts(uuid, records[uuid])[0]}
            elif (status.node == self.name and status.running and not self.busy(uuid)
                  and not status.migrating_to):
                fields = {"running": False, "libvirt_state": "shutoff", "vnc": ""}
            # Only a real change rewrites the status: every write wakes the API's /vms cache.
            stale = fields is not None and any(getattr(status, k) != v for k, v in fields.items())
            # (stats kept in the status by older versions move to schema.vm_stats)
            if fields is not None and (stale or "stats" in status.model_fields_set):
                changes[uuid] = _merge({**fields, "updated": now})
        self.store.update_statuses(changes)
        self._write_stats({u: stats.get(u, {}) for u in running})
        self.console.tick({u: path for u in running
                           if (path := self._live_facts(u, records[u])[1]) is not None})
        for gone in [u for u in self._live if u not in running]:
            self._live.pop(gone, None)
        return self.figures(records, running)

    def _write_stats(self, stats: dict[str, dict[str, Any]]) -> None:
        """This node's stats shards (schema.vm_stats): write the changed ones, drop the stale ones.

        A VM that no longer runs here leaves its shard; a restarted daemon first reads what
        its predecessor left, so shards beyond the current count are deleted, not orphaned.
        """
        size = schema.VM_STATS_SHARD
        uuids = sorted(stats)
        shards = {i // size: {u: stats[u] for u in uuids[i:i + size]} for i in range(0, len(uuids), size)}
        if self._stats_written is None:
            self._stats_written = self.store.stats_shards(self.name)
        changed = {i: doc for i, doc in shards.items() if self._stats_written.get(i) != doc}
        stale = [i for i in self._stats_written if i not in shards]
        if changed or stale:
            self.store.write_stats(self.name, changed, stale)
        self._stats_written = shards

    def _live_facts(self, uuid: str, record: VMRecord) -> tuple[str, str | None]:
        """VNC address and console log file from the live XML, read once per arrival here.

        The log path comes from the running domain, not from this node's settings: after a live
        migration QEMU keeps writing where the sender's XML said."""
        if uuid not in self._live:
            try:
                live = self.hv.live_xml(uuid)
                self._live[uuid] = (domainxml.vnc_address(live), _console_file(live))
            except (HypervisorError, InvalidInput):
                return "", self.console_path(record)
        return self._live[uuid]

    def figures(self, records: dict[str, VMRecord], running: dict[str, DomainInfo]) -> dict[str, Any]:
        """running_domains, domains_count, vcpu.allocated, memory.allocated/provisioned (MiB)."""
        allocated = sum(d.memory_mib for d in running.values())
        vcpus = sum(d.vcpus for d in running.values())
        provisioned = allocated
        for uuid, record in records.items():
            if uuid not in running and record.node == self.name:
                provisioned += vm_demand(record).memory_mib
        return {"running_domains": sorted(running), "domains_count": len(running),
                "vcpu_allocated": vcpus, "memory_allocated": allocated,
                "memory_provisioned": provisioned}

    # -- flush / unflush ---------------------------------------------------------------------------------

    def flush(self, keep_going: Callable[[], bool] = lambda: True) -> None:
        """Move every VM running here away (pvc-facts §3.7), one at a time, waiting for each."""
        records = self.store.load_vms()
        here = [u for u, d in self.hv.list_domains().items() if d.running and u in records]
        log.info("flush: %d VM(s) to move away", len(here))
        for uuid in here:
            if not keep_going():
                log.info("flush aborted by a new request")
                return
            self._wait_state_leaves(uuid, {"restart", "shutdown"}, keep_going)
            record = self.store.load_vm(uuid)
            if record is None:
                continue
            if record.node == self.name:
                self._send_away(record)
            self.kick(uuid)
            self._wait_gone(uuid, keep_going)

    def _send_away(self, record: VMRecord) -> None:
        nodes = list(self.store.node_docs().values())
        alive = self.store.alive_nodes()
        target = find_target([n for n in nodes if n.name in alive], record.node_selector,
                             self.store.cluster_selector(), current=self.name, limit=record.node_limit,
                             demand=vm_demand(record))
        if target is None:
            log.info("flush: no target for VM %s; shutting it down (autostart on ready)", record.name)
            self.store.update_vm(record.uuid, flush_shutdown(self.name))
            return
        log.info("flush: migrating VM %s to %s", record.name, target.name)
        self.store.update_vm(record.uuid, flush_away(self.name, target.name))

    def _wait_state_leaves(self, uuid: str, states: set[str], keep_going: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.settings.flush_wait_s
        while time.monotonic() < deadline and keep_going() and not self.stopping.is_set():
            record = self.store.load_vm(uuid)
            if record is None or record.state not in states:
                return
            self.stopping.wait(self.settings.poll_s)

    def _wait_gone(self, uuid: str, keep_going: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.settings.flush_wait_s
        while time.monotonic() < deadline and keep_going() and not self.stopping.is_set():
            record = self.store.load_vm(uuid)
            if record is None or not self.hv.is_running(uuid):
                return
            if record.node == self.name and record.state not in ("shutdown", *VM_MIGRATE_STATES):
                log.warning("flush: VM %s stays here (state %s)", record.name, record.state)
                return
            self.stopping.wait(self.settings.poll_s)
        if self.hv.is_running(uuid):
            log.warning("flush: VM %s still runs here after %.0fs", uuid, self.settings.flush_wait_s)

    def unflush(self, keep_going: Callable[[], bool] = lambda: True) -> None:
        """Bring back VMs flushed from here and start the ones flush shut down (autostart)."""
        waiting = []
        for uuid, record in self.store.load_vms().items():
            if not keep_going():
                return
            if record.node_autostart and record.node == self.name:
                self.store.update_vm(uuid, unflush_autostart(self.name))
            elif record.last_node == self.name:
                self.store.update_vm(uuid, unflush_back(self.name))
            else:
                continue
            waiting.append(uuid)
            self.kick(uuid)
        for uuid in waiting:
            self._wait_state_leaves(uuid, {*VM_MIGRATE_STATES, "shutdown"}, keep_going)


def _console_file(live_xml: str) -> str | None:
    """The file serial port 0 logs to (a <log file=...> or a type='file' source), if any."""
    try:
        root = ET.fromstring(live_xml)
    except ET.ParseError:
        return None
    for serial in root.findall("devices/serial"):
        target = serial.find("target")
        if target is not None and target.get("port") not in (None, "0"):
            continue
        logged = serial.find("log")
        if logged is not None and logged.get("file"):
            return logged.get("file")
        source = serial.find("source")
        if serial.get("type") == "file" and source is not None and source.get("path"):
            return source.get("path")
    return None


_STATUS_BASE = {k: v for k, v in VMStatus().doc().items() if k != "stats"}


def _merge(fields: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Status update: defaults, the current document, then fields; stats live in schema.vm_stats."""
    def merged(doc: dict[str, Any]) -> dict[str, Any]:
        out = {**_STATUS_BASE, **doc, **fields}
        out.pop("stats", None)
        return out
    return merged
