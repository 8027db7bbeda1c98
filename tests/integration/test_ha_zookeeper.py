"""The fencing chain against real ZooKeeper: `HAMonitor` over `ZKHAStore`, sessions that really
expire, the API's view of the chain and the return of a fenced node to service.

The fence agent and Ceph are stand-ins here (tests/integration/test_fence_agents.py runs the real
agents; the lab's system tests run everything together)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from pvc.adapters.fence import FenceOutcome
from pvc.cluster import faults, nodes
from pvc.cluster.state import cluster_status
from pvc.core import schema
from pvc.core.errors import Conflict
from pvc.core.records import VMRecord
from pvc.core.zk import ZK
from pvc.node.fencing import FencePolicy, HAMonitor
from pvc.node.hastore import ZKHAStore
from tests.integration.apihelp import node_record

MINIMAL_XML = """<domain type='kvm'><name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>256</memory>
<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices/></domain>"""


class Job:
    def __init__(self, outcome: FenceOutcome | None) -> None:
        self.outcome, self.cancelled = outcome, False

    def poll(self) -> FenceOutcome | None:
        return self.outcome

    def cancel(self) -> None:
        self.cancelled = True


class Agent:
    def __init__(self, outcome: FenceOutcome | None = FenceOutcome(True, "powered off")) -> None:
        self.outcome, self.calls = outcome, []
        self.jobs: list[Job] = []

    def start(self, node: str, info: dict[str, Any]) -> Job:
        self.calls.append((node, info))
        self.jobs.append(Job(self.outcome))
        return self.jobs[-1]


class Ceph:
    def __init__(self) -> None:
        self.blocked: set[str] = set()
        self.locks_released: list[tuple[list[str], list[str]]] = []

    def blocklist(self, addresses: list[str]) -> list[str]:
        self.blocked |= set(addresses)
        return [f"{a}:0/0" for a in addresses]

    def unblocklist(self, addresses: list[str]) -> None:
        self.blocked -= set(addresses)

    def mark_osds_down(self, node: str) -> list[int]:
        return [2] if node == "hv2" else []

    def release_locks(self, volumes: list[str], addresses: list[str]) -> int:
        self.locks_released.append((volumes, addresses))
        return len(volumes)


def marker(zk_server: Any, zk_root: str, name: str) -> ZK:
    """A node daemon's session: its alive marker lives exactly as long as this session."""
    session = ZK([zk_server.address], zk_root, session_timeout=2).start()
    session.create(schema.node_alive(name), {"pid": 1}, ephemeral=True)
    return session


def add_vm(zk: ZK, name: str, node: str, **fields: Any) -> str:
    vm_uuid = str(uuid.uuid4())
    record = VMRecord(uuid=vm_uuid, name=name, xml=MINIMAL_XML.format(uuid=vm_uuid, name=name), state="start",
                      node=node, rbd_volumes=[f"vms/{name}_vda"], **fields)
    zk.put(schema.vm(vm_uuid), record.doc())
    zk.put(schema.vm_status(vm_uuid), {"node": node, "running": True})
    return vm_uuid


@pytest.fixture
def cluster(zk: ZK, zk_server: Any, zk_root: str) -> Any:
    now = time.time()
    for name in ("hv1", "hv2", "hv3"):
        zk.put(schema.node(name), node_record(name, keepalive=now, memory={"total": 8192, "free": 4096})
               .doc() | {"ceph_client_addresses": [f"10.0.0.{name[-1]}"]})
        zk.put(schema.node_fence_info(name), {"agent": "lab", "node": name})
    sessions = {name: marker(zk_server, zk_root, name) for name in ("hv1", "hv2", "hv3")}
    yield sessions
    for session in sessions.values():
        try:
            session.stop()
        except Exception:
            pass


def run_chain(monitor: HAMonitor, zk: ZK, node: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        monitor.tick(primary=True)
        record = zk.get(schema.node_fencing(node), None)
        if isinstance(record, dict) and record.get("phase") == "done":
            return record
        time.sleep(0.1)
    record = zk.get(schema.node_fencing(node), None)
    raise AssertionError(f"the fencing chain of {node} did not finish: {record}")


def test_dead_node_is_fenced_and_its_vms_restart_elsewhere(zk: ZK, cluster: Any) -> None:
    vm1, vm2 = add_vm(zk, "vm1", "hv2"), add_vm(zk, "vm2", "hv2", node_limit=["hv2"])
    stopped = add_vm(zk, "vm3", "hv2")
    zk.update(schema.vm(stopped), lambda d: {**d, "state": "stop"})
    zk.put(schema.vm_status(stopped), {"node": "hv2", "running": False})
    agent, ceph = Agent(), Ceph()
    monitor = HAMonitor("hv1", ZKHAStore(zk), agent, ceph, FencePolicy(margin=0.5), time.time)
    monitor.tick(primary=True)                       # sees hv2 alive
    assert zk.get(schema.node_fencing("hv2"), None) is None
    cluster["hv2"].stop()                            # closing the session removes its marker at once
    record = run_chain(monitor, zk, "hv2")

    assert agent.calls == [("hv2", {"agent": "lab", "node": "hv2"})]
    assert ceph.blocked == {"10.0.0.2"}
    phases = [e["phase"] for e in record["events"]]
    assert phases[:4] == ["detect", "dead", "fencing", "fenced"] and phases[-1] == "done"
    assert record["fence"] == "success" and record["action"] == "migrate"
    assert record["recovered"] == 1 and record["stranded"] == 1
    times = [e["time"] for e in record["events"]]
    assert times == sorted(times)

    moved = VMRecord.model_validate(zk.get(schema.vm(vm1)))
    assert (moved.state, moved.node, moved.last_node) == ("start", "hv1", "hv2")   # mem: a tie, lowest name
    assert zk.get(schema.vm_status(vm1))["running"] is False                  # the claim is released
    limited = VMRecord.model_validate(zk.get(schema.vm(vm2)))
    assert (limited.state, limited.node, limited.node_autostart) == ("stop", "hv2", True)
    assert VMRecord.model_validate(zk.get(schema.vm(stopped))).state == "stop"
    node = nodes.get_node(zk, "hv2")
    assert (node.daemon_state, node.domain_state) == ("fenced", "flushed")
    messages = [f.message for f in faults.load_faults(zk)]
    assert any("Node hv2 is dead" in m for m in messages)
    assert any("VM vm2 ran on dead node hv2" in m for m in messages)
    # volumes of both assigned running VMs had their locks flushed before recovery
    assert sorted(v for vols, _ in ceph.locks_released for v in vols) == ["vms/vm1_vda", "vms/vm2_vda"]

    view = nodes.node_view(node, nodes.load_fencing(zk, ["hv2"])["hv2"])
    assert view["fencing"]["phase"] == "done" and view["fencing"]["events"][0]["phase"] == "detect"
    status = cluster_status(zk)
    assert [f["node"] for f in status["fencing"]] == ["hv2"]


def test_a_fenced_node_returns_only_when_readied(zk: ZK, zk_server: Any, zk_root: str, cluster: Any) -> None:
    agent, ceph = Agent(), Ceph()
    monitor = HAMonitor("hv1", ZKHAStore(zk), agent, ceph, FencePolicy(margin=0.5), time.time)
    monitor.tick(primary=True)
    cluster["hv2"].stop()
    run_chain(monitor, zk, "hv2")
    with pytest.raises(Conflict, match="node daemon is not running"):
        nodes.set_domain_state(zk, "hv2", "ready")
    cluster["hv2"] = marker(zk_server, zk_root, "hv2")     # its daemon is back
    for _ in range(5):
        monitor.tick(primary=True)
    assert nodes.get_node(zk, "hv2").daemon_state == "fenced"   # not back by itself
    assert "Returning fenced node hv2" in nodes.set_domain_state(zk, "hv2", "ready")
    monitor.tick(primary=True)
    node = nodes.get_node(zk, "hv2")
    assert node.daemon_state == "run" and node.domain_state == "unflush"
    assert ceph.blocked == set()
    assert not any("Node hv2 is dead" in f.message for f in faults.load_faults(zk))
    assert zk.get(schema.node_fencing("hv2"))["events"][-1]["phase"] == "ready"


def test_failed_fence_leaves_the_vms_and_maintenance_pauses(zk: ZK, cluster: Any) -> None:
    vm1 = add_vm(zk, "vm1", "hv3")
    zk.put(schema.CLUSTER, {"name": "t", "maintenance": True})
    agent, ceph = Agent(FenceOutcome(False, "BMC unreachable")), Ceph()
    monitor = HAMonitor("hv1", ZKHAStore(zk), agent, ceph, FencePolicy(margin=0.2), time.time)
    monitor.tick(primary=True)
    cluster["hv3"].stop()
    for _ in range(10):
        monitor.tick(primary=True)
        time.sleep(0.1)
    assert zk.get(schema.node_fencing("hv3"), None) is None and agent.calls == []    # paused
    zk.put(schema.CLUSTER, {"name": "t", "maintenance": False})
    record = run_chain(monitor, zk, "hv3")
    assert record["fence"] == "failed" and record["action"] == "none"
    assert VMRecord.model_validate(zk.get(schema.vm(vm1))).node == "hv3"      # failed_fence: none
    assert zk.get(schema.vm_status(vm1))["running"] is True                    # its claim stands
    assert nodes.get_node(zk, "hv3").daemon_state == "dead"


def test_only_the_primary_acts_and_a_new_primary_resumes(zk: ZK, cluster: Any) -> None:
    add_vm(zk, "vm1", "hv3")
    hanging = Agent(None)
    first = HAMonitor("hv1", ZKHAStore(zk), hanging, Ceph(), FencePolicy(margin=0.2), time.time)
    second = HAMonitor("hv2", ZKHAStore(zk), Agent(), Ceph(), FencePolicy(margin=0.2), time.time)
    first.tick(primary=True)
    second.tick(primary=False)
    cluster["hv3"].stop()
    deadline = time.monotonic() + 10
    while not hanging.calls and time.monotonic() < deadline:
        first.tick(primary=True)
        second.tick(primary=False)
        time.sleep(0.1)
    assert hanging.calls and zk.get(schema.node_fencing("hv3"))["phase"] == "fencing"
    first.tick(primary=False)                        # hv1 loses the primary role mid-fence
    assert hanging.jobs[0].cancelled
    record = run_chain(second, zk, "hv3")
    assert record["attempts"] == 2 and record["fence"] == "success"
    assert "resumed after a primary change" in " ".join(e["message"] for e in record["events"])


# -- the primary lease, the guards and the faults they resolve (over real ZooKeeper) ----------------

def _session(zk_server: Any, zk_root: str) -> ZK:
    return ZK([zk_server.address], zk_root, session_timeout=6).start()


def _coordinators(one: ZK, two: ZK, ceph: Ceph, agent: Agent) -> tuple[HAMonitor, HAMonitor, threading.Event]:
    """hv1 holds the primary lock over session `one`, hv2 queues on it over `two` (the event is
    set once hv2 has it); their HA monitors with a 2 s lease, hv1's Ceph and hv2's agent given."""
    lock1, lock2 = one.lock(schema.PRIMARY_ELECTION, "hv1"), two.lock(schema.PRIMARY_ELECTION, "hv2")
    assert lock1.acquire(timeout=5)
    got = threading.Event()
    threading.Thread(target=lambda: lock2.acquire() and got.set(), daemon=True).start()
    policy = FencePolicy(margin=0.5, lease_timeout=2)
    first = HAMonitor("hv1", ZKHAStore(one, lock_guard=True), Agent(), ceph, policy, time.time,
                      mono=time.monotonic)
    second = HAMonitor("hv2", ZKHAStore(two, lock_guard=True), agent, Ceph(), policy, time.time,
                       mono=time.monotonic)
    return first, second, got


def test_a_hung_primary_is_deposed_and_refuses_to_act_when_it_wakes(zk: ZK, zk_server: Any, zk_root: str,
                                                                   cluster: Any) -> None:
    """hv1 holds the lock and the lease, then its HA loop stops (no more ticks); hv2, queued on
    the lock, deposes it once the lease is 2 s old, gets the lock, claims generation 2 and
    declares hv1 dead; hv1's loop, woken, can neither renew nor act."""
    from pvc.node.election import PRIMARY_LEASE

    one, two = _session(zk_server, zk_root), _session(zk_server, zk_root)
    try:
        agent = Agent()
        first, second, got = _coordinators(one, two, Ceph(), agent)
        first.tick(primary=True)
        lease = zk.get(PRIMARY_LEASE)
        assert (lease["holder"], lease["generation"]) == ("hv1", 1)
        deadline = time.monotonic() + 15
        while not got.is_set() and time.monotonic() < deadline:   # hv1's loop hangs from now on
            second.tick(primary=False)
            time.sleep(0.2)
        assert got.is_set(), "the lock did not pass to hv2"
        lease = zk.get(PRIMARY_LEASE)
        assert lease["deposed"]["node"] == "hv1" and lease["deposed"]["by"] == "hv2"
        assert "HA loop hung" in lease["deposed"]["reason"] and lease["deposed"]["fence"]
        record = run_chain(second, zk, "hv1")
        lease = zk.get(PRIMARY_LEASE)
        assert (lease["holder"], lease["generation"]) == ("hv2", 2) and "deposed" not in lease
        assert (record["by"], record["generation"]) == ("hv2", 2)
        assert "deposed as primary" in record["reason"]
        assert agent.calls and agent.calls[0][0] == "hv1"
        # hv1 wakes believing it is primary: its lease write fails, it writes nothing
        before = zk.get(schema.node_fencing("hv1"))
        assert first.tick(primary=True) is False
        assert zk.get(PRIMARY_LEASE)["holder"] == "hv2" and zk.get(schema.node_fencing("hv1")) == before
        assert first.tick(primary=True) is False             # and stays quiet until it steps down
    finally:
        one.stop()
        two.stop()


class SlowCeph(Ceph):
    """A Ceph whose blocklist waits (a monitor election after the node died): `seconds`, or
    until `answer` is set."""

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        self.seconds, self.answer, self.waited = seconds, threading.Event(), 0.0

    def blocklist(self, addresses: list[str]) -> list[str]:
        began = time.monotonic()
        self.answer.wait(self.seconds or None)
        self.waited = time.monotonic() - began
        return super().blocklist(addresses)


def test_a_primary_waiting_on_ceph_keeps_its_lease(zk: ZK, zk_server: Any, zk_root: str,
                                                   cluster: Any) -> None:
    """hv1's chain waits 5 s on a blocklist, more than twice the 2 s lease: its HA loop keeps the
    lease meanwhile, so hv2, watching, does not take the busy primary for a hung one (nor depose
    and fence it); the chain then finishes under the same lease."""
    from pvc.node.election import PRIMARY_LEASE

    one, two = _session(zk_server, zk_root), _session(zk_server, zk_root)
    running = threading.Event()
    try:
        slow = SlowCeph(seconds=5)
        first, second, got = _coordinators(one, two, slow, Agent())
        first.tick(primary=True)
        second.tick(primary=False)
        cluster["hv3"].stop()

        def ha_loop() -> None:                        # hv1's HA loop: a pass every 0.1 s
            while running.is_set():
                first.tick(primary=True)
                time.sleep(0.1)

        running.set()
        threading.Thread(target=ha_loop, daemon=True).start()
        deadline, record = time.monotonic() + 40, None
        while time.monotonic() < deadline:
            second.tick(primary=False)
            record = zk.get(schema.node_fencing("hv3"), None)
            if isinstance(record, dict) and record.get("phase") == "done":
                break
            time.sleep(0.2)
        assert isinstance(record, dict) and record.get("phase") == "done", record
        assert slow.waited >= 4.5 and record["blocklist"] == "success"
        lease = zk.get(PRIMARY_LEASE)
        assert (lease["holder"], lease["generation"]) == ("hv1", 1) and "deposed" not in lease, lease
        assert not got.is_set() and (record["by"], record["generation"]) == ("hv1", 1)
    finally:
        running.clear()
        one.stop()
        two.stop()


def test_a_ceph_step_that_never_answers_is_given_up(zk: ZK, cluster: Any) -> None:
    """A blocklist with no answer within `storage_wait`: the step is recorded failed, naming the
    wait, and the chain goes on (the fence succeeded, so the VMs are recovered)."""
    vm1 = add_vm(zk, "vm1", "hv3")
    slow = SlowCeph()                                  # answers only when told
    monitor = HAMonitor("hv1", ZKHAStore(zk), Agent(), slow, FencePolicy(margin=0.2, storage_wait=1),
                        time.time)
    try:
        monitor.tick(primary=True)
        cluster["hv3"].stop()
        record = run_chain(monitor, zk, "hv3")
    finally:
        slow.answer.set()
    assert record["fence"] == "success" and record["blocklist"] == "failed"
    events = " ".join(e["message"] for e in record["events"])
    assert "blocklist 10.0.0.3: no answer within 1s" in events, events
    assert VMRecord.model_validate(zk.get(schema.vm(vm1))).node != "hv3"


def test_zookeeper_members_are_probed_and_placed_on_nodes(zk: ZK, zk_server: Any, cluster: Any) -> None:
    from pvc.lab.zkserver import free_port
    from pvc.node.hastore import serves

    host, port = zk_server.address.rsplit(":", 1)
    assert serves(host, int(port)) is True                 # standalone: "Mode: standalone"
    assert serves("127.0.0.1", free_port()) is False        # nothing listens
    for name in ("hv1", "hv2", "hv3"):
        zk.update(schema.node(name), lambda d, n=name: {**d, "cluster_address": f"10.9.0.{n[-1]}"})
    answers = {"10.9.0.1": True, "10.9.0.2": True, "10.9.0.3": False, "10.9.0.9": True}
    store = ZKHAStore(zk, ["10.9.0.1:2181", "10.9.0.2:2181", "10.9.0.3:2181", "10.9.0.9:2181"],
                      probe=lambda h, p: answers[h])
    assert store.zk_members("hv3") == [("hv1", True), ("hv2", True), ("hv3", False), (None, True)]
    asked: list[str] = []
    store.probe = lambda h, p: asked.append(h) or True
    assert store.zk_members("hv1") == [("hv1", False), ("hv2", True), ("hv3", True), (None, True)]
    assert sorted(asked) == ["10.9.0.2", "10.9.0.3", "10.9.0.9"]          # not hv1's own member
    asked.clear()
    assert store.zk_members("hv5") == [("hv1", True), ("hv2", True), ("hv3", True), (None, True)]
    assert asked == []                                                     # hv5 runs no member


def test_quorum_guard_holds_a_member_node_until_the_others_are_a_quorum(zk: ZK, cluster: Any) -> None:
    answers = {"hv1": True, "hv2": True, "hv3": False}
    store = ZKHAStore(zk, ["hv1:2181", "hv2:2181", "hv3:2181"], probe=lambda h, p: answers[h])
    agent = Agent()
    monitor = HAMonitor("hv1", store, agent, Ceph(), FencePolicy(margin=0.2), time.time)
    monitor.tick(primary=True)
    cluster["hv2"].stop()                                  # hv2's daemon dies; its member serves on
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not faults.load_faults(zk):
        monitor.tick(primary=True)
        time.sleep(0.1)
    (fault,) = [f for f in faults.load_faults(zk) if f.id == "FENCING_QUORUM_HV2"]
    assert "1 of 3 members serving" in fault.message and agent.calls == []
    assert zk.get(schema.node_fencing("hv2"), None) is None
    answers["hv3"] = True                                  # an operator brought hv3's member back
    record = run_chain(monitor, zk, "hv2")
    assert record["fence"] == "success"
    time.sleep(1.1)
    monitor.tick(primary=True)
    assert faults.get_fault(zk, "FENCING_QUORUM_HV2").active is False


def test_the_brake_holds_until_an_operator_acknowledges(zk: ZK, cluster: Any) -> None:
    agent = Agent()
    monitor = HAMonitor("hv1", ZKHAStore(zk), agent, Ceph(), FencePolicy(margin=0.2), time.time)
    monitor.tick(primary=True)
    cluster["hv2"].stop()
    cluster["hv3"].stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(f.id == "FENCING_BRAKE" for f in faults.load_faults(zk)):
        monitor.tick(primary=True)
        time.sleep(0.1)
    brake = faults.get_fault(zk, "FENCING_BRAKE")
    assert brake.active and "2 of 3 nodes (hv2, hv3)" in brake.message
    for _ in range(5):
        monitor.tick(primary=True)
    assert agent.calls == [] and nodes.load_fencing(zk) == {}
    faults.ack_fault(zk, "FENCING_BRAKE")
    run_chain(monitor, zk, "hv2")
    run_chain(monitor, zk, "hv3")
    assert [c[0] for c in agent.calls] == ["hv2", "hv3"]
    assert faults.get_fault(zk, "FENCING_BRAKE").active is False


def test_vm_not_recovered_is_resolved_once_the_vm_runs_again(zk: ZK, cluster: Any) -> None:
    limited = add_vm(zk, "vm2", "hv2", node_limit=["hv2"])
    monitor = HAMonitor("hv1", ZKHAStore(zk), Agent(), Ceph(), FencePolicy(margin=0.2), time.time)
    monitor.tick(primary=True)
    cluster["hv2"].stop()
    run_chain(monitor, zk, "hv2")
    assert faults.get_fault(zk, "VM_NOT_RECOVERED_VM2").active
    # hv2 is back (a live session), in service, and starts it (what its daemon does on ready)
    cluster["hv2"] = marker_for(zk, "hv2")
    zk.update(schema.node("hv2"), lambda d: {**d, "daemon_state": "run", "domain_state": "ready"})
    zk.update(schema.vm(limited), lambda d: {**d, "state": "start", "node_autostart": False})
    time.sleep(1.1)
    monitor.tick(primary=True)
    assert faults.get_fault(zk, "VM_NOT_RECOVERED_VM2").active        # its status says not running yet
    zk.put(schema.vm_status(limited), {"node": "hv2", "running": True})
    time.sleep(1.1)
    monitor.tick(primary=True)
    assert faults.get_fault(zk, "VM_NOT_RECOVERED_VM2").active is False


def marker_for(zk: ZK, name: str) -> Any:
    """The alive marker written by `zk`'s own session (the test's): the node has a live session."""
    zk.create(schema.node_alive(name), {"pid": 1}, ephemeral=True)

    class Handle:
        def stop(self) -> None:
            zk.delete(schema.node_alive(name))

    return Handle()
