"""The lab's ZooKeeper ensemble: three members in three node namespaces, a client inside one."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient

from pvc.lab import proc
from pvc.lab import zookeeper as labzk
from pvc.lab.plan import LabPlan

from .labnet import lab_network, processes_mentioning, rss_mb, temp_plan

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(shutil.which("java") is None, reason="needs java + zookeeper"),
]


@pytest.fixture
def lab() -> Iterator[LabPlan]:
    with lab_network(temp_plan("zk", 3)) as plan:
        yield plan


def _client(plan: LabPlan) -> KazooClient:
    """A kazoo client whose connection thread lives inside hv1's namespace."""
    def connect() -> KazooClient:
        client = KazooClient(hosts=",".join(plan.zk_hosts), timeout=4,
                             connection_retry={"max_tries": -1, "delay": 0.1, "max_delay": 1})
        client.start(timeout=15)
        return client
    return proc.netns_call(plan.coordinators[0].netns, connect)


def test_zookeeper_ensemble_in_namespaces(lab: LabPlan) -> None:
    t0 = time.monotonic()
    pids = labzk.start_ensemble(lab)
    modes = labzk.wait_ensemble(lab, timeout=60)
    elapsed = time.monotonic() - t0
    print(f"\nZooKeeper ensemble serving after {elapsed:.2f}s: {modes}")
    assert sorted(modes.values()).count("leader") == 1
    assert sorted(modes.values()).count("follower") == 2
    for node in lab.coordinators:
        assert (lab.pid_dir / f"{node.name}-zookeeper.pid").exists()
        assert (lab.log_dir / f"{node.name}-zookeeper.log").exists()
    # The members really listen inside the namespaces, not in the root one.
    assert "Mode:" not in labzk.four_letter(lab.coordinators[0].address, 2181, "srvr", timeout=0.3)

    client = _client(lab)
    try:
        client.create("/lab/hello", b"world", makepath=True)
        assert client.get("/lab/hello")[0] == b"world"
        print("RSS MB:", {name: round(rss_mb(pid), 1) for name, pid in pids.items()})

        leader = next(n for n in lab.coordinators if modes[n.name] == "leader")
        t1 = time.monotonic()
        labzk.stop_member(lab, leader, kill=True)
        others = [n for n in lab.coordinators if n is not leader]
        proc.wait_until(lambda: all(labzk.member_status(lab, n) in labzk.SERVING for n in others),
                        30, "the two survivors to re-form a quorum")
        client.retry(client.set, "/lab/hello", b"again")
        print(f"quorum re-formed and write done {time.monotonic() - t1:.2f}s after killing "
              f"the leader {leader.name}: {[labzk.member_status(lab, n) for n in others]}")
        assert client.get("/lab/hello")[0] == b"again"
        assert labzk.member_status(lab, leader) == "down"

        # The killed member rejoins as a follower.
        labzk.start_member(lab, leader)
        proc.wait_until(lambda: labzk.member_status(lab, leader) == "follower", 45,
                        "the old leader to rejoin")
    finally:
        client.stop()
        client.close()

    labzk.stop_ensemble(lab)
    assert all(labzk.member_status(lab, n) == "down" for n in lab.coordinators)
    assert not list(lab.pid_dir.glob("*-zookeeper.pid"))
    assert processes_mentioning(str(lab.state_dir)) == []
