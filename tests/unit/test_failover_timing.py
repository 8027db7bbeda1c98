"""The failover timing budget (docs/architecture.md, "Failover timing"): the self-fence is timed to
its bound, and the configured session timeout is one ZooKeeper grants as asked (so the node's bound
and the server's expiry are the same number)."""

from __future__ import annotations

import math
from pathlib import Path

from pvc.core.config import FencingSettings, ZooKeeperSettings
from pvc.lab import zookeeper
from pvc.lab.zkserver import ZooKeeperServer
from pvc.node.selffence import SelfFence


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def guard(clock: Clock, destroyed: list[str], bound: float = 4.0, enabled: bool = True) -> SelfFence:
    return SelfFence(bound=lambda: bound, clock=clock, connected=lambda: False,
                     destroy_all=lambda: destroyed.append("vm") or ["vm"], enabled=enabled)


def test_due_in_counts_down_from_the_last_answered_request() -> None:
    clock, destroyed = Clock(), []
    fence = guard(clock, destroyed)
    assert fence.due_in() == 4.0
    clock.now += 1.5
    fence.answered(clock.now - 0.5)              # sent 0.5 s ago: the bound runs from the send
    assert math.isclose(fence.due_in(), 3.5)
    clock.now += 3.5
    assert fence.due_in() == 0.0


def test_a_heartbeat_sleeping_at_most_due_in_fences_on_time() -> None:
    """The heartbeat's loop (pvc.node.services.ha): wake every second or at due_in, whichever is
    first. Without answers the VMs go at the bound itself, not up to a second later."""
    clock, destroyed = Clock(), []
    fence = guard(clock, destroyed, bound=4.0)
    start = clock.now
    while not destroyed:
        fence.check()
        if destroyed:
            break
        clock.now += max(0.05, min(1.0, fence.due_in()))
    assert clock.now - start == 4.0
    assert fence.due_in() == math.inf            # nothing left to do until answers come back


def test_due_in_is_infinite_when_disabled() -> None:
    clock = Clock()
    assert guard(clock, [], enabled=False).due_in() == math.inf


def test_the_default_budget_keeps_its_inequality() -> None:
    """Defaults: 4 s sessions, 1 s margin. The margin must exceed how late a timed self-fence
    ends (milliseconds); both stay inside the limits the settings enforce."""
    session = ZooKeeperSettings(hosts=["zk:2181"], acl=False).session_timeout
    margin = FencingSettings().margin
    assert (session, margin) == (4.0, 1.0)
    assert margin >= 0.5


def test_zookeeper_grants_the_configured_session(tmp_path: Path) -> None:
    """ZooKeeper clamps a requested session timeout into [minSessionTimeout, maxSessionTimeout]
    (by default 2 and 20 ticks). A clamp downwards would expire sessions before the node's own
    bound: the default must lie inside the lab's range and inside a stock server's (tickTime 2000)."""
    session_ms = ZooKeeperSettings(hosts=["zk:2181"], acl=False).session_timeout * 1000
    config = ZooKeeperServer(datadir=tmp_path, port=2181, tick_ms=zookeeper.TICK_MS).write_config()
    values = dict(line.split("=", 1) for line in config.read_text().splitlines() if "=" in line)
    assert int(values["minSessionTimeout"]) <= session_ms <= int(values["maxSessionTimeout"])
    assert 2 * 2000 <= session_ms <= 20 * 2000


def test_a_fence_job_wakes_the_ha_loop_when_its_outcome_is_known() -> None:
    """DispatchAgent(on_done=...): the HA loop is woken when the agent finishes, not on its next
    0.5 s pass; a job that finished before anyone listened calls at once."""
    import threading

    from pvc.adapters.fence import DispatchAgent, LabAgent

    woken = threading.Event()
    agent = DispatchAgent({"lab": LabAgent(command=lambda _lab, _node: ["true"])}, on_done=woken.set)
    job = agent.start("hv2", {"agent": "lab", "lab_name": "x"})
    assert woken.wait(30)
    outcome = job.poll()
    assert outcome is not None and outcome.success
    late = threading.Event()
    job.notify(late.set)                         # already done: called now
    assert late.is_set()


def test_jobs_known_at_once_need_no_wake() -> None:
    from pvc.adapters.fence import DispatchAgent

    calls: list[int] = []
    job = DispatchAgent(on_done=lambda: calls.append(1)).start("hv2", {"agent": "none"})
    outcome = job.poll()
    assert outcome is not None and not outcome.success and calls == []
