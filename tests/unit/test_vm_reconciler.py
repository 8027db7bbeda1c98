"""The VM reconciler's decisions and actions, over an in-memory store and FakeHypervisors.

`decide()` is checked against every row of PVC's who-acts table; the reconciler itself runs for
real (threads, per-VM jobs, locks) over MemoryStore, a VMStore kept in dictionaries, so crash
restarts, double-start races, migration fallbacks and flush target choice need no ZooKeeper.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pvc.adapters.ceph import Locker
from pvc.adapters.ceph.fake import FakeStorage
from pvc.adapters.hypervisor.fake import FakeHypervisor, FakeHypervisorNetwork
from pvc.cluster.vms.transitions import Transition, apply_to_doc
from pvc.core import domainxml, schema
from pvc.core.domainxml import parsing, tree
from pvc.core.records import NodeRecord, VMRecord
from pvc.node.storage import NodeCeph, secret_uuid
from pvc.node.vms import (
    Action,
    NodeVMStatus,
    Observation,
    PeerNode,
    ReconcilerSettings,
    VMReconciler,
    decide,
    status_of,
)

ME = "hv1"


class MemoryStore:
    """A VMStore in memory; one instance is "the cluster" that several reconcilers share."""

    def __init__(self) -> None:
        self.vms: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.alive: set[str] = set()
        self.consoles: dict[str, str] = {}
        self.stats: dict[str, dict[int, dict[str, Any]]] = {}    # node -> shard -> {uuid: stats}
        self.stats_writes = 0
        self.selector = "mem"
        self.lock = threading.RLock()
        self._start_locks: dict[str, threading.Lock] = {}

    def load_vm(self, uuid: str) -> VMRecord | None:
        with self.lock:
            doc = self.vms.get(uuid)
            return VMRecord.model_validate(doc) if doc else None

    def load_vms(self) -> dict[str, VMRecord]:
        with self.lock:
            return {u: VMRecord.model_validate(d) for u, d in self.vms.items()}

    def load_status(self, uuid: str) -> NodeVMStatus:
        with self.lock:
            return status_of(self.statuses.get(uuid))

    def load_statuses(self, uuids: list[str]) -> dict[str, NodeVMStatus]:
        return {u: self.load_status(u) for u in uuids}

    def update_vm(self, uuid: str, transition: Transition) -> bool:
        with self.lock:
            doc = self.vms.get(uuid)
            if doc is None:
                return False
            new = apply_to_doc(dict(doc), transition)
            if new is None or new == doc:
                return False
            self.vms[uuid] = new
            return True

    def update_status(self, uuid: str, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        with self.lock:
            if uuid in self.vms:
                self.statuses[uuid] = fn(dict(self.statuses.get(uuid, {})))

    def update_statuses(self, changes: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
        for uuid, fn in changes.items():
            self.update_status(uuid, fn)

    def alive_nodes(self) -> set[str]:
        return set(self.alive)

    def node_docs(self) -> dict[str, PeerNode]:
        return {n: PeerNode.model_validate(d) for n, d in self.nodes.items()}

    def cluster_selector(self) -> str:
        return self.selector

    def cluster_id(self, create: bool = False) -> str:
        return "test-cluster"

    def vm_exists(self, uuid: str) -> bool:
        with self.lock:
            return uuid in self.vms

    @contextlib.contextmanager
    def start_lock(self, uuid: str, timeout: float) -> Iterator[bool]:
        with self.lock:
            lock = self._start_locks.setdefault(uuid, threading.Lock())
        got = lock.acquire(timeout=timeout)
        try:
            yield got
        finally:
            if got:
                lock.release()

    def put_console(self, uuid: str, text: str) -> None:
        self.consoles[uuid] = text

    def stats_shards(self, node: str) -> dict[int, dict[str, Any]]:
        with self.lock:
            return {i: dict(d) for i, d in self.stats.get(node, {}).items()}

    def write_stats(self, node: str, changed: dict[int, dict[str, Any]], stale: list[int]) -> None:
        with self.lock:
            shards = self.stats.setdefault(node, {})
            shards.update({i: dict(d) for i, d in changed.items()})
            for i in stale:
                shards.pop(i, None)
            self.stats_writes += len(changed)

    def vm_stats(self, node: str, uuid: str) -> dict[str, Any] | None:
        for shard in self.stats.get(node, {}).values():
            if uuid in shard:
                return dict(shard[uuid])
        return None

    # helpers for tests
    def add_node(self, name: str, hv: FakeHypervisor, free: int = 8000, **extra: Any) -> None:
        self.nodes[name] = {**NodeRecord(name=name, daemon_state="run", domain_state="ready",
                                         cpu_count=8).doc(),
                            "memory": {"total": 16000, "free": free, "used": 16000 - free},
                            "libvirt_migration_uri": hv.uri, "migration_address": f"10.0.0.{len(self.nodes)}",
                            **extra}
        self.alive.add(name)

    def add_vm(self, name: str = "vm1", state: str = "stop", node: str = ME, **fields: Any) -> str:
        uuid = str(uuidlib.uuid4())
        self.vms[uuid] = VMRecord(uuid=uuid, name=name, xml=xml(name, uuid), state=state, node=node,
                                  **fields).doc()
        return uuid

    def state(self, uuid: str) -> str:
        return str(self.vms[uuid]["state"])

    def set(self, uuid: str, **fields: Any) -> None:
        with self.lock:
            self.vms[uuid] = {**self.vms[uuid], **fields}


def xml(name: str, uuid: str, mib: int = 128) -> str:
    return f"""<domain type='kvm'>
  <name>{name}</name><uuid>{uuid}</uuid>
  <memory unit='MiB'>{mib}</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/tmp/{name}.img'/>
      <target dev='vda' bus='virtio'/></disk>
  </devices>
</domain>"""


# The test VMs have file disks in /tmp: allowed by name, as the domain XML policy requires.
FAST = ReconcilerSettings(interval=0.2, shutdown_timeout=0.3, poll_s=0.01, migration_timeout=5,
                          flush_wait_s=3, start_lock_timeout=2,
                          domain_policy=domainxml.DomainPolicy(host_disks=("/tmp",)))


@pytest.fixture
def cluster(tmp_path: Any) -> Iterator[tuple[MemoryStore, dict[str, FakeHypervisor],
                                             dict[str, VMReconciler]]]:
    store, net = MemoryStore(), FakeHypervisorNetwork()
    hvs, recs = {}, {}
    settings = ReconcilerSettings(**{**FAST.__dict__, "console_dir": str(tmp_path)})
    for name in ("hv1", "hv2", "hv3"):
        hvs[name] = FakeHypervisor(uri=f"fake:///{name}", network=net)
        store.add_node(name, hvs[name], free={"hv1": 8000, "hv2": 6000, "hv3": 7000}[name])
        recs[name] = VMReconciler(store, hvs[name], name, settings)
    yield store, hvs, recs
    for rec in recs.values():
        rec.stop()


def settle(*recs: VMReconciler, timeout: float = 5.0) -> None:
    """Run full passes until no job is running anywhere (twice in a row)."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline:
        for rec in recs:
            rec.full_pass()
        time.sleep(0.02)
        if all(rec.idle() for rec in recs):
            quiet += 1
            if quiet >= 3:
                return
        else:
            quiet = 0
    raise AssertionError("reconcilers did not settle")


def starts(hv: FakeHypervisor, uuid: str) -> int:
    return sum(1 for op, u in hv.calls if op == "start" and u == uuid)


# -- the who-acts table, row by row -------------------------------------------------------------

A = Action
TABLE = [
    # state, running here & node==me, not running & node==me, running here & node!=me
    ("start", A.ENSURE, A.START, A.TERMINATE),
    ("restart", A.RESTART, A.WRITE_START, A.TERMINATE),
    ("shutdown", A.SHUTDOWN, A.WRITE_STOP, A.SHUTDOWN_AWAY),
    ("stop", A.STOP, A.NONE, A.TERMINATE),
    ("migrate", A.WRITE_START, A.WRITE_START, A.MIGRATE),
    ("migrate-live", A.WRITE_START, A.WRITE_START, A.MIGRATE),
    ("disable", A.TERMINATE, A.NONE, A.TERMINATE),
    ("provision", A.TERMINATE, A.NONE, A.TERMINATE),
    ("mirror", A.TERMINATE, A.NONE, A.TERMINATE),
    ("fail", A.TERMINATE, A.NONE, A.TERMINATE),
]


@pytest.mark.parametrize(("state", "mine_running", "mine_stopped", "theirs_running"), TABLE)
def test_who_acts(state: str, mine_running: Action, mine_stopped: Action, theirs_running: Action) -> None:
    assert decide(ME, Observation(state, ME, running_here=True)) is mine_running
    assert decide(ME, Observation(state, ME, running_here=False)) is mine_stopped
    assert decide(ME, Observation(state, "hv2", running_here=True)) is theirs_running
    assert decide(ME, Observation(state, "hv2", running_here=False)) is A.NONE


@pytest.mark.parametrize("state", ["start", "restart", "shutdown", "migrate", "migrate-live"])
def test_owner_waits_while_another_live_node_runs_it(state: str) -> None:
    assert decide(ME, Observation(state, ME, running_here=False, running_elsewhere=True)) is A.WAIT


@pytest.mark.parametrize("here", [True, False])
def test_migration_target_waits_for_the_sender(here: bool) -> None:
    # the paused incoming domain must not be taken for "migration stuck, write start"
    assert decide(ME, Observation("migrate", ME, running_here=here, incoming=True)) is A.WAIT


# -- start, crash, double start --------------------------------------------------------------------

def test_start_adapts_xml_and_records_status(cluster: Any) -> None:
    store, hvs, recs = cluster
    uuid = store.add_vm(state="start")
    settle(recs["hv1"], recs["hv2"])
    assert hvs["hv1"].is_running(uuid) and not hvs["hv2"].is_running(uuid)
    running_xml = hvs["hv1"].live_xml(uuid)
    assert "type=\"qemu\"" in running_xml or "type='qemu'" in running_xml      # TCG here
    assert 'event_idx="off"' in running_xml or "event_idx='off'" in running_xml
    assert "vm1.log" in running_xml                                              # serial console log
    status = store.statuses[uuid]
    assert (status["node"], status["running"], status["failed_reason"]) == ("hv1", True, "")


def test_crashed_vm_is_started_again_once(cluster: Any) -> None:
    store, hvs, recs = cluster
    uuid = store.add_vm(state="start")
    settle(recs["hv1"])
    hvs["hv1"].crash(uuid)
    settle(recs["hv1"], recs["hv2"])
    assert hvs["hv1"].is_running(uuid)
    assert starts(hvs["hv1"], uuid) == 2
    settle(recs["hv1"], recs["hv2"])
    assert starts(hvs["hv1"], uuid) == 2 and store.state(uuid) == "start"


def test_two_reconcilers_with_the_same_record_start_it_once(cluster: Any) -> None:
    store, hvs, _recs = cluster
    # an old and a new daemon of the same node (same hypervisor), racing on every kick
    twins = [VMReconciler(store, hvs["hv1"], "hv1", FAST) for _ in range(2)]
    uuid = store.add_vm(state="start")
    threads = [threading.Thread(target=t.kick, args=(uuid,)) for t in twins for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    settle(*twins)
    assert starts(hvs["hv1"], uuid) == 1 and sum(t.starts for t in twins) == 1
    for twin in twins:
        twin.stop()


def test_no_start_while_another_node_reports_it_running(cluster: Any) -> None:
    store, hvs, recs = cluster
    uuid = store.add_vm(state="start")
    store.statuses[uuid] = {"node": "hv2", "running": True}
    settle(recs["hv1"])
    assert starts(hvs["hv1"], uuid) == 0
    store.alive.discard("hv2")                     # hv2's session is gone: it may still run the VM
    settle(recs["hv1"])
    assert starts(hvs["hv1"], uuid) == 0
    store.statuses[uuid]["running"] = False        # what the fencing chain writes once hv2 is fenced
    settle(recs["hv1"])
    assert hvs["hv1"].is_running(uuid)


def test_start_failure_records_fail_and_reason(cluster: Any) -> None:
    store, hvs, recs = cluster
    uuid = store.add_vm(state="start")
    faults: dict[str, str | None] = {}
    recs["hv1"].vm_fault = lambda name, message: faults.__setitem__(name, message)
    hvs["hv1"].fail_start(uuid=uuid)
    settle(recs["hv1"])
    assert store.state(uuid) == "fail"
    assert "injected failure" in store.statuses[uuid]["failed_reason"]
    assert not hvs["hv1"].is_running(uuid)
    name = store.vms[uuid]["name"]
    assert "failed to start on hv1" in str(faults[name])
    store.set(uuid, state="start")                 # the administrator starts it again: it runs
    settle(recs["hv1"])
    assert hvs["hv1"].is_running(uuid) and faults[name] is None


def test_adopts_running_domains_after_a_daemon_restart(cluster: Any) -> None:
    store, hvs, recs = cluster
    uuid = store.add_vm(state="start")
    settle(recs["hv1"])
    recs["hv1"].stop()
    again = VMReconciler(store, hvs["hv1"], "hv1", FAST)
    settle(again)
    assert starts(hvs["hv1"], uuid) == 1
    assert not any(op in ("destroy", "shutdown") for op, _ in hvs["hv1"].calls)
    again.stop()


# -- restart, shutdown, stop, terminate -----------------------------------------------------------------

def test_restart_shuts_down_starts_and_records_start(cluster: Any) -> None:
    store, hvs, recs = cluster
    uuid = store.add_vm(state="start")
    settle(recs["hv1"])
    store.set(uuid, state="restart")
    settle(recs["hv1"])
    assert store.state(uuid) == "start" and hvs["hv1"].is_running(uuid)
    assert starts(hvs["hv1"], uuid) == 2 and ("shutdown", uuid) in hvs["hv1"].calls


def test_shutdown_records_stop_and_destroys_after_the_timeout(cluster: Any) -> None:
    store, hvs, recs = cluster
    uuid = store.add_vm(state="start")
    settle(recs["hv1"])
    store.set(uuid, state="shutdown")
    settle(recs["hv1"])
    assert store.state(uuid) == "stop" and not hvs["hv1"].is_running(uuid)
    assert ("destroy", uuid) not in hvs["hv1"].calls
    store.set(uuid, state="start")
    settle(recs["hv1"])
    hvs["hv1"].ignore_acpi(uuid)
    store.set(uuid, state="shutdown")
    settle(recs["hv1"])
    assert store.state(uuid) == "stop" and ("destroy", uuid) in hvs["hv1"].calls


def test_stop_destroys(cluster: Any) -> None:
    store, hvs, recs = cluster
    uuid = store.add_vm(state="start")
    settle(recs["hv1"])
    store.set(uuid, state="stop")
    settle(recs["hv1"])
    assert not hvs["hv1"].is_running(uuid) and store.statuses[uuid]["running"] is False


def test_a_vm_running_on_the_wrong_node_is_terminated(cluster: Any) -> None:
    store, hvs, recs = cluster
    uuid = store.add_vm(state="start", node="hv2")
    hvs["hv1"].start(xml("vm1", uuid))             # e.g. left over from before a fence
    store.statuses[uuid] = {"node": "hv1", "running": True}
    settle(recs["hv1"], recs["hv2"])
    assert not hvs["hv1"].is_running(uuid) and hvs["hv2"].is_running(uuid)
    assert store.state(uuid) == "start"


# -- migration ---------------------------------------------------------------------------------------

def running_on(store: MemoryStore, recs: dict[str, VMReconciler], node: str = "hv1", **fields: Any) -> str:
    uuid = store.add_vm(state="start", node=node, **fields)
    settle(*recs.values())
    return uuid


def test_live_migration_records_where_and_downtime(cluster: Any) -> None:
    store, hvs, recs = cluster
    uuid = running_on(store, recs)
    store.set(uuid, state="migrate", node="hv2", last_node="hv1")
    settle(*recs.values())
    assert hvs["hv2"].is_running(uuid) and not hvs["hv1"].is_running(uuid)
    assert store.state(uuid) == "start" and store.vms[uuid]["last_node"] == "hv1"
    last = store.statuses[uuid]["last_migration"]
    assert (last["from"], last["to"], last["downtime_ms"], last["method"]) == ("hv1", "hv2", 30, "live")
    assert starts(hvs["hv2"], uuid) == 0 and store.statuses[uuid]["migrating_to"] == ""


def test_failed_live_migration_falls_back_to_shutdown_move(cluster: Any) -> None:
    store, hvs, recs = cluster
    uuid = running_on(store, recs, migration_method="none")
    hvs["hv1"].fail_migrations(3, uuid=uuid)
    store.set(uuid, state="migrate", node="hv2", last_node="hv1")
    settle(*recs.values())
    assert sum(op == "migrate" for op, u in hvs["hv1"].calls if u == uuid) == 3
    assert hvs["hv2"].is_running(uuid) and starts(hvs["hv2"], uuid) == 1
    assert store.state(uuid) == "start" and store.statuses[uuid]["last_migration"]["method"] == "shutdown"


def test_second_live_attempt_succeeds(cluster: Any) -> None:
    store, hvs, recs = cluster
    uuid = running_on(store, recs)
    hvs["hv1"].fail_migrations(2, uuid=uuid)
    store.set(uuid, state="migrate", node="hv2", last_node="hv1")
    settle(*recs.values())
    assert hvs["hv2"].is_running(uuid) and starts(hvs["hv2"], uuid) == 0


@pytest.mark.parametrize(("state", "method"), [("migrate-live", "none"), ("migrate", "live")])
def test_forced_live_migration_aborts_instead_of_falling_back(cluster: Any, state: str, method: str) -> None:
    store, hvs, recs = cluster
    uuid = running_on(store, recs, migration_method=method)
    hvs["hv1"].fail_migrations(3, uuid=uuid)
    store.set(uuid, state=state, node="hv2", last_node="hv1")
    settle(*recs.values())
    assert hvs["hv1"].is_running(uuid) and not hvs["hv2"].is_running(uuid)
    doc = store.vms[uuid]
    assert (doc["state"], doc["node"], doc["last_node"]) == ("start", "hv1", "")
    assert "injected failure" in store.statuses[uuid]["last_migration_error"]["error"]
    assert starts(hvs["hv1"], uuid) == 1


def test_shutdown_method_never_tries_live(cluster: Any) -> None:
    store, hvs, recs = cluster
    uuid = running_on(store, recs, migration_method="shutdown")
    store.set(uuid, state="migrate", node="hv2", last_node="hv1")
    settle(*recs.values())
    assert not any(op == "migrate" for op, _ in hvs["hv1"].calls)
    assert hvs["hv2"].is_running(uuid) and store.state(uuid) == "start"


def test_target_without_migration_uri_falls_back_or_aborts(cluster: Any) -> None:
    store, hvs, recs = cluster
    store.nodes["hv2"]["libvirt_migration_uri"] = ""
    uuid = running_on(store, recs, migration_method="live")
    store.set(uuid, state="migrate", node="hv2", last_node="hv1")
    settle(*recs.values())
    assert "hypervisor.migration_address" in store.statuses[uuid]["last_migration_error"]["error"]
    assert hvs["hv1"].is_running(uuid) and store.vms[uuid]["node"] == "hv1"


def test_target_does_not_start_during_an_incoming_migration(cluster: Any) -> None:
    store, hvs, recs = cluster
    uuid = store.add_vm(state="migrate", node="hv1")
    store.statuses[uuid] = {"node": "hv2", "running": False, "migrating_to": "hv1", "migrating_from": "hv2"}
    settle(recs["hv1"])
    assert starts(hvs["hv1"], uuid) == 0 and store.state(uuid) == "migrate"
    store.alive.discard("hv2")                     # the sender died: nothing is coming
    settle(recs["hv1"])
    assert hvs["hv1"].is_running(uuid) and store.state(uuid) == "start"


# -- flush / unflush -----------------------------------------------------------------------------------

def test_flush_picks_targets_by_selector_and_limit(cluster: Any) -> None:
    store, hvs, recs = cluster
    by_mem = running_on(store, recs, name="a")                           # mem: hv3 has most free
    limited = running_on(store, recs, name="b", node_limit=["hv2"])
    by_vms = running_on(store, recs, name="c", node_selector="vms")
    store.nodes["hv3"]["domains_count"] = 5
    recs["hv1"].flush()
    settle(*recs.values())
    assert hvs["hv3"].is_running(by_mem) and hvs["hv2"].is_running(limited) and hvs["hv2"].is_running(by_vms)
    assert hvs["hv1"].list_domains() == {}
    for uuid in (by_mem, limited, by_vms):
        assert (store.vms[uuid]["state"], store.vms[uuid]["last_node"]) == ("start", "hv1")


def test_flush_without_target_shuts_down_and_unflush_brings_everything_back(cluster: Any) -> None:
    store, hvs, recs = cluster
    moved = running_on(store, recs, name="a")
    stuck = running_on(store, recs, name="b", node_limit=["hv1"])
    recs["hv1"].flush()
    settle(*recs.values())
    assert not hvs["hv1"].is_running(stuck) and store.vms[stuck]["node_autostart"] is True
    assert store.state(stuck) == "stop" and hvs["hv3"].is_running(moved)
    recs["hv1"].unflush()
    settle(*recs.values())
    assert hvs["hv1"].is_running(stuck) and hvs["hv1"].is_running(moved)
    doc = store.vms[moved]
    assert (doc["node"], doc["last_node"], doc["state"]) == ("hv1", "", "start")
    assert store.vms[stuck]["node_autostart"] is False and store.state(stuck) == "start"


# -- keepalive figures, console -------------------------------------------------------------------------

def test_keepalive_figures_and_status(cluster: Any, tmp_path: Any) -> None:
    store, _hvs, recs = cluster
    running = running_on(store, recs, name="a")
    store.add_vm(name="b", state="stop")                   # assigned here, stopped: provisioned only
    (tmp_path / "a.log").write_text("PVC-GUEST-BOOT-OK name=a\npartial")
    figures = recs["hv1"].keepalive()
    assert figures == {"running_domains": [running], "domains_count": 1, "vcpu_allocated": 1,
                       "memory_allocated": 128, "memory_provisioned": 256}
    status = store.statuses[running]
    assert "stats" not in status and status["libvirt_state"] == "running"
    assert (store.vm_stats("hv1", running) or {})["state"] == "RUNNING"
    assert store.consoles[running] == "PVC-GUEST-BOOT-OK name=a\n"
    recs["hv1"].keepalive()
    assert store.consoles[running] == "PVC-GUEST-BOOT-OK name=a\n"
    assert store.statuses[running] == status            # nothing but stats changed: no status write


def test_keepalive_stats_shards(cluster: Any, monkeypatch: Any) -> None:
    """Stats go to per-node shards; unchanged shards are not rewritten, a stopped VM leaves."""
    store, _hvs, recs = cluster
    monkeypatch.setattr(schema, "VM_STATS_SHARD", 2)
    uuids = [running_on(store, recs, name=f"s{i}") for i in range(5)]
    store.stats["hv1"] = {7: {"gone": {}}}                 # left by a previous daemon
    hv1 = recs["hv1"]
    hv1.keepalive()
    assert sorted(store.stats["hv1"]) == [0, 1, 2]
    assert sorted(u for shard in store.stats["hv1"].values() for u in shard) == sorted(uuids)
    writes = store.stats_writes
    frozen = {u: {"cputime": 1} for u in uuids}
    monkeypatch.setattr(hv1.hv, "all_stats", lambda: dict(frozen))
    hv1.keepalive()
    writes = store.stats_writes
    hv1.keepalive()
    assert store.stats_writes == writes                    # nothing changed: nothing written
    last = sorted(uuids)[-1]
    hv1.hv.destroy(last)
    store.set(last, state="stop")
    settle(hv1)
    hv1.keepalive()
    assert sorted(store.stats["hv1"]) == [0, 1]
    assert store.vm_stats("hv1", last) is None
    assert not store.statuses[last]["running"] and "stats" not in store.statuses[last]


# -- VMs on RBD: monitors and auth filled in, locks checked before a start -----------------------------

MY_ADDRESS = "10.200.0.1"


def rbd_xml(name: str, uuid: str) -> str:
    """A definition as the API stores it: the rbd disk names only pool/volume."""
    return f"""<domain type='kvm'>
  <name>{name}</name><uuid>{uuid}</uuid>
  <memory unit='MiB'>128</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='network' device='disk'><driver name='qemu' type='raw' cache='none'/>
      <source protocol='rbd' name='vms/{name}_vda'/><target dev='vda' bus='virtio'/></disk>
  </devices>
</domain>"""


@pytest.fixture
def rbd_node(tmp_path: Any) -> Iterator[tuple[MemoryStore, FakeHypervisor, FakeStorage, VMReconciler]]:
    keyring = tmp_path / "keyring"
    keyring.write_text("[client.admin]\n\tkey = QVFCc2VjcmV0a2V5MDEyMzQ1Njc4OQ==\n")
    store, hv, storage = MemoryStore(), FakeHypervisor(uri="fake:///hv1"), FakeStorage()
    store.add_node("hv1", hv)
    store.add_node("hv2", FakeHypervisor(uri="fake:///hv2"))
    storage.create_pool("vms", 16, 3, 2)
    ceph = NodeCeph(storage, hv, keyring=str(keyring), addresses=lambda: {MY_ADDRESS})
    settings = ReconcilerSettings(**{**FAST.__dict__, "console_dir": str(tmp_path)})
    rec = VMReconciler(store, hv, "hv1", settings, ceph=ceph)
    yield store, hv, storage, rec
    rec.stop()


def add_rbd_vm(store: MemoryStore, storage: FakeStorage, name: str = "rbd1") -> str:
    storage.create_volume("vms", f"{name}_vda", 1 << 30)
    uuid = store.add_vm(name=name, state="start")
    store.set(uuid, xml=rbd_xml(name, uuid))
    return uuid


def test_rbd_vm_starts_with_monitors_auth_and_the_secret_defined(rbd_node: Any) -> None:
    store, hv, storage, rec = rbd_node
    uuid = add_rbd_vm(store, storage)
    settle(rec)
    assert hv.is_running(uuid)
    disk = domainxml.parse(hv.live_xml(uuid)).disks[0]
    secret = secret_uuid(storage.cluster_fsid)
    assert disk.source is not None and disk.auth is not None
    assert disk.source.hosts == (("10.200.0.1", "6789"), ("10.200.0.2", "6789"), ("10.200.0.3", "6789"))
    assert (disk.auth.username, disk.auth.secret_type, disk.auth.secret_uuid) == ("admin", "ceph", secret)
    ops = [op for op, _ in hv.calls]
    assert secret in hv.secrets and ops.index("ensure_secret") < ops.index("start")
    assert "<host" not in store.vms[uuid]["xml"]                 # filled in at start, not written back


def test_stale_lock_of_this_node_is_broken_before_the_start(rbd_node: Any) -> None:
    store, hv, storage, rec = rbd_node
    uuid = add_rbd_vm(store, storage)
    storage.add_locker("vms", "rbd1_vda", Locker("client.4100", "auto 1", f"{MY_ADDRESS}:0/4100"))
    settle(rec)
    assert hv.is_running(uuid) and storage.lockers("vms", "rbd1_vda") == []
    assert store.state(uuid) == "start"


@pytest.mark.parametrize(("watching", "reason"), [(True, "still has it open"), (False, "pvc vm flush-locks")])
def test_foreign_lock_fails_the_vm_naming_volume_and_holder(rbd_node: Any, watching: bool,
                                                           reason: str) -> None:
    store, hv, storage, rec = rbd_node
    uuid = add_rbd_vm(store, storage)
    theirs = Locker("client.4467", "auto 2", "10.0.0.1:0/4467")       # hv2's migration address
    storage.add_locker("vms", "rbd1_vda", theirs)
    storage.add_locker("vms", "rbd1_vda", Locker("client.4100", "auto 1", f"{MY_ADDRESS}:0/4100"))
    if watching:
        storage.set_watchers("vms", "rbd1_vda", [theirs.address])
    settle(rec)
    assert not hv.is_running(uuid) and store.state(uuid) == "fail"
    failed = store.statuses[uuid]["failed_reason"]
    assert "vms/rbd1_vda" in failed and "client.4467" in failed and "(node hv2)" in failed
    assert reason in failed
    assert len(storage.lockers("vms", "rbd1_vda")) == 2              # refused: nothing broken


def test_missing_volume_fails_the_vm(rbd_node: Any) -> None:
    store, _hv, storage, rec = rbd_node
    uuid = add_rbd_vm(store, storage)
    storage.remove_volume("vms", "rbd1_vda")
    settle(rec)
    assert store.state(uuid) == "fail"
    assert "vms/rbd1_vda does not exist" in store.statuses[uuid]["failed_reason"]


def test_unreachable_storage_delays_the_start_without_failing_it(rbd_node: Any) -> None:
    store, hv, storage, rec = rbd_node
    uuid = add_rbd_vm(store, storage)
    storage.available = False
    settle(rec)
    assert not hv.is_running(uuid) and store.state(uuid) == "start"
    storage.available = True
    settle(rec)
    assert hv.is_running(uuid) and store.state(uuid) == "start"


# -- one parse: a start parses the stored definition once, a keepalive the live XML once -----------------

@pytest.fixture
def parses(monkeypatch: Any) -> dict[str, list[Any]]:
    """Every parse in pvc.core.domainxml, by step: "text" (text -> tree, `_load_root`, given the
    text) and "typed" (tree -> Domain, `_domain_from_root`), patched in every module using them."""
    seen: dict[str, list[Any]] = {"text": [], "typed": []}
    for key, original in (("text", tree._load_root), ("typed", parsing._domain_from_root)):
        def counting(first: Any, *rest: Any, _key: str = key, _original: Any = original) -> Any:
            seen[_key].append(first)
            return _original(first, *rest)
        for module in [m for n, m in sys.modules.items() if n.startswith("pvc.")]:
            for attr, value in list(vars(module).items()):
                if value is original:
                    monkeypatch.setattr(module, attr, counting)
    return seen


def test_a_start_parses_the_stored_definition_once(rbd_node: Any, parses: dict[str, list[Any]]) -> None:
    store, hv, storage, rec = rbd_node
    uuid = add_rbd_vm(store, storage)
    record = store.load_vm(uuid)
    assert record is not None
    rec.actions.start(record)
    assert hv.is_running(uuid)
    live = hv.live_xml(uuid)
    assert "<host" in live and "<auth" in live and "rbd1.log" in live     # every host edit applied
    assert parses["text"] == [record.xml]                                   # one text parse ...
    assert len(parses["typed"]) == 1                                        # ... and one model built
    rec.keepalive()
    rec.keepalive()
    assert parses["text"] == [record.xml, live]      # the live XML: once per arrival, VNC and log both
    assert store.statuses[uuid]["running"] is True
