"""The lab's ZooKeeper ensemble: one member per coordinator, each inside its node's namespace.

Members listen on the node's underlay address only (client 2181, quorum 2888, election 3888),
exactly like a real coordinator; the root namespace cannot reach them, so every probe runs from
a thread that has entered the node's namespace. Pids go to the lab's pid dir so `pvc-lab down`
can stop members even from another process.
"""

from __future__ import annotations

import time
from pathlib import Path

from pvc.lab import proc
from pvc.lab.plan import ZK_CLIENT_PORT, ZK_ELECTION_PORT, ZK_QUORUM_PORT, LabPlan, NodePlan
from pvc.lab.zkserver import ZooKeeperServer, four_letter

HEAP_MB = 128          # measured: ~55-76 MB RSS per member with this cap (recipe)
TICK_MS = 1000         # ZooKeeper allows sessions of 2-20 ticks: 1 s ticks allow 2 s sessions
SERVING = ("leader", "follower", "standalone")


def pidfile(plan: LabPlan, node: NodePlan) -> Path:
    return plan.pid_dir / f"{node.name}-zookeeper.pid"


def _server(plan: LabPlan, node: NodePlan) -> ZooKeeperServer:
    coordinators = plan.coordinators
    # A single coordinator runs standalone: an ensemble of one needs no quorum ports.
    peers = ({c.index: (c.address, ZK_QUORUM_PORT, ZK_ELECTION_PORT) for c in coordinators}
             if len(coordinators) > 1 else {})
    return ZooKeeperServer(
        datadir=node.dir / "zookeeper", port=ZK_CLIENT_PORT, host=node.address, myid=node.index,
        peers=peers, heap_mb=min(HEAP_MB, 128), tick_ms=TICK_MS, netns=node.netns,
        ready_check=lambda: member_status(plan, node) in SERVING,
        log_file=plan.log_dir / f"{node.name}-zookeeper.log",
    )


def _srvr(node: NodePlan) -> str:
    """`srvr` asked from inside the node's namespace ('' when nothing answers)."""
    try:
        return proc.netns_call(node.netns, four_letter, node.address, ZK_CLIENT_PORT, "srvr",
                               timeout=5)
    except (OSError, proc.LabError):
        return ""


def member_status(plan: LabPlan, node: NodePlan) -> str:
    """'leader'/'follower'/'standalone' when serving, else 'no-quorum', 'starting' or 'down'."""
    answer = _srvr(node)
    for line in answer.splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    if "not currently serving" in answer:
        return "no-quorum"
    if not answer and proc.pid_of(pidfile(plan, node)) is None:
        return "down"
    return "starting"


def start_member(plan: LabPlan, node: NodePlan) -> int:
    """Start one member (no wait: a member alone never serves); returns its pid."""
    if not node.coordinator:
        raise proc.LabError(f"{node.name} is not a coordinator; it runs no ZooKeeper member")
    running = proc.pid_of(pidfile(plan, node))
    if running is not None:
        return running
    server = _server(plan, node).start(wait=0)
    assert server.proc is not None
    # `ip netns exec` execs java, so this is the JVM's pid (and, by start_new_session, its group).
    pidfile(plan, node).parent.mkdir(parents=True, exist_ok=True)
    pidfile(plan, node).write_text(f"{server.proc.pid}\n")
    return server.proc.pid


def stop_member(plan: LabPlan, node: NodePlan, kill: bool = False) -> None:
    proc.stop(pidfile(plan, node), timeout=10, kill=kill)


def start_ensemble(plan: LabPlan) -> dict[str, int]:
    """Start every coordinator's member; they elect a leader once a majority is up."""
    return {node.name: start_member(plan, node) for node in plan.coordinators}


def wait_ensemble(plan: LabPlan, timeout: float = 60) -> dict[str, str]:
    """Wait until every member serves (leader/follower, or standalone); returns name -> mode."""
    deadline = time.monotonic() + timeout
    modes: dict[str, str] = {}
    while True:
        modes = {node.name: member_status(plan, node) for node in plan.coordinators}
        if all(mode in SERVING for mode in modes.values()):
            return modes
        dead = [n.name for n in plan.coordinators if proc.pid_of(pidfile(plan, n)) is None]
        if dead:
            raise proc.LabError(f"ZooKeeper member(s) {', '.join(dead)} not running; "
                                f"see {plan.log_dir}/<node>-zookeeper.log")
        if time.monotonic() > deadline:
            raise proc.LabError(f"ZooKeeper ensemble not serving after {timeout:.0f}s: {modes}")
        time.sleep(0.2)


def stop_ensemble(plan: LabPlan, kill: bool = False) -> None:
    for node in plan.coordinators:
        stop_member(plan, node, kill=kill)
