"""The lab itself: every component up, reachable through 127.0.0.1 only, failure tools work,
two labs coexist, and `down` leaves nothing behind (even after a killed `up`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from pvc.lab import labtls, netns, proc
from pvc.lab import main as labmain
from pvc.lab.plan import STATE_ROOT, LabPlan
from tests.system import ha
from tests.system.helpers import lab_traces

pytestmark = pytest.mark.system


QUIET = 6.0      # seconds, more than a keepalive interval: a killed node's keepalive stays put


def api(plan: LabPlan) -> httpx.Client:
    return labtls.api_client(plan, timeout=30)


def pvc(plan: LabPlan, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pvc.cli", "-c", labmain._conn_name(plan), *args],
                          capture_output=True, text=True, timeout=120)


def node_info(plan: LabPlan, name: str, timeout: float = 60) -> dict:
    """GET /node/<name>, riding out a primary change (pvcapid moves with the primary role)."""
    def attempt() -> dict | None:
        try:
            with api(plan) as client:
                response = client.get(f"/node/{name}")
                return response.json()[0] if response.status_code == 200 else None
        except httpx.HTTPError:
            return None

    return proc.wait_until(attempt, timeout, f"the API to answer for {name}")


def test_every_component_up(lab: LabPlan) -> None:
    rows = labmain.lab_status(lab)
    down = [r for r in rows if not r["state"].startswith(("up", "run"))]
    assert not down, down
    components = {(r["node"], r["component"]) for r in rows}
    for node in lab.nodes:
        for component in ("namespace", "pvcnoded", "pvcworkerd", "libvirtd", "pvc node"):
            assert (node.name, component) in components
        if node.coordinator:
            assert (node.name, "zookeeper") in components
    with api(lab) as client:
        nodes = client.get("/node").json()
        assert {n["name"]: (n["daemon_state"], n["domain_state"]) for n in nodes} == {
            n.name: ("run", "ready") for n in lab.nodes}
        assert sum(n["coordinator_state"] == "primary" for n in nodes) == 1


def test_no_address_in_root_namespace(lab: LabPlan) -> None:
    addresses = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True).stdout
    for entry in json.loads(addresses):
        for info in entry.get("addr_info", []):
            assert info["local"].startswith(("127.", "::1")) or not info["local"].startswith("10.200."), entry


def test_cli_and_selftest_through_relay(lab: LabPlan) -> None:
    listed = pvc(lab, "node", "list", "-f", "json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(n["name"] for n in json.loads(listed.stdout)) == [n.name for n in lab.nodes]
    result = pvc(lab, "cluster", "selftest", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    with api(lab) as client:
        tasks = client.get("/tasks").json()
        assert isinstance(tasks, dict)
    # Every node reached its own libvirtd and the lab's Ceph.
    assert "passed" in result.stdout, result.stdout


def test_zookeeper_published_on_loopback(lab: LabPlan) -> None:
    from pvc.lab.pvcnodes import lab_zk

    zk = lab_zk(lab)            # the lab's ZooKeeper has digest ACLs on: credentials needed
    try:
        assert sorted(zk.children("/nodes")) == [n.name for n in lab.nodes]
    finally:
        zk.stop()


def test_isolate_and_rejoin(lab: LabPlan) -> None:
    hv1, hv3 = lab.node("hv1"), lab.node("hv3")
    ping = ["ping", "-c", "1", "-W", "1", hv3.address]
    assert proc.run(ping, netns=hv1.netns, check=False).returncode == 0
    netns.isolate(lab, hv3)
    try:
        assert proc.run(ping, netns=hv1.netns, check=False).returncode != 0
    finally:
        netns.rejoin(lab, hv3)
    proc.wait_until(lambda: proc.run(ping, netns=hv1.netns, check=False).returncode == 0, 20, "ping")


def test_node_kill_and_start(lab: LabPlan) -> None:
    hv3 = lab.node("hv3")
    before = node_info(lab, "hv3")["keepalive"]
    killed_at = time.time()
    assert labmain.node_kill(lab, hv3) > 0
    left = proc.run(["ip", "netns", "pids", hv3.netns]).stdout.split()
    assert [pid for pid in left if proc.alive(int(pid))] == []
    time.sleep(1)                   # a keepalive written just before the kill has landed by now
    stale = node_info(lab, "hv3")["keepalive"]
    stale_at = time.monotonic()
    # Meanwhile the cluster fences hv3 (pvc.node.fencing); the lab's fence agent also cuts its
    # links. The keepalive must not move all that time (and at least QUIET seconds). Back in
    # service it takes a rejoin, a start and `ready` (tests/system/test_ha.py tests that).
    with api(lab) as client:
        def fenced() -> bool:
            record = ha.fencing(client, "hv3") or {}
            times = [record.get("started")] + [e.get("time") for e in record.get("events") or []]
            return record.get("phase") == "done" and max(float(t or 0) for t in times) >= killed_at - 2
        proc.wait_until(fenced, 90, "hv3 fenced after this kill")
        time.sleep(max(0.0, QUIET - (time.monotonic() - stale_at)))
        assert node_info(lab, "hv3")["keepalive"] == stale >= before
        ha.restore(lab, client, "hv3")
    assert node_info(lab, "hv3")["keepalive"] > stale
    rows = [r for r in labmain.lab_status(lab) if r["node"] == "hv3"]
    assert all(r["state"].startswith(("up", "run")) for r in rows), rows


def test_second_lab_coexists_and_down_cleans(lab: LabPlan, lab2: LabPlan) -> None:
    """The second lab is the run's shared one (tests/conftest.py `lab2`, also used by the send
    test): its teardown checks that `down` leaves no trace of it and that a second down is safe."""
    assert lab2.api_port != lab.api_port
    with api(lab2) as client:
        assert [n["name"] for n in client.get("/node").json()] == ["hv1"]
    with api(lab) as client:
        assert len(client.get("/node").json()) == len(lab.nodes)
    with pytest.raises(proc.LabError, match="already exists"):
        labmain.lab_up(lab2.name, 1)


@pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")
def test_down_after_killed_up() -> None:
    name = "pst3"
    labmain.lab_down(name)
    up = subprocess.Popen([sys.executable, "-m", "pvc.lab.main", "up", "--name", name, "--nodes", "1"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Kill it mid-way: once ZooKeeper runs (namespaces and processes exist by then).
        proc.wait_until(lambda: list((STATE_ROOT / name / "pids").glob("*zookeeper*")), 120,
                        "the killed up to get going")
    finally:
        os.killpg(up.pid, signal.SIGKILL)
        up.wait()
    assert lab_traces(name)  # something to clean
    labmain.lab_down(name)
    assert lab_traces(name) == []


def test_clean_stop_and_fence(lab: LabPlan) -> None:
    hv1, hv2 = lab.node("hv1"), lab.node("hv2")
    labmain.node_stop(lab, hv2)
    assert node_info(lab, "hv2")["daemon_state"] == "stop"  # a clean stop reports itself
    labmain.node_start(lab, hv2)
    proc.wait_until(lambda: node_info(lab, "hv2")["daemon_state"] == "run", 90, "hv2 running again")

    # The fence agent: nothing of hv2 runs any more and it is cut off.
    labmain.fence(lab, hv2)
    left = proc.run(["ip", "netns", "pids", hv2.netns]).stdout.split()
    assert [pid for pid in left if proc.alive(int(pid))] == []
    ping = ["ping", "-c", "1", "-W", "1", hv2.address]
    assert proc.run(ping, netns=hv1.netns, check=False).returncode != 0
    stale = node_info(lab, "hv2")["keepalive"]

    netns.rejoin(lab, hv2)
    labmain.node_start(lab, hv2)
    proc.wait_until(lambda: node_info(lab, "hv2")["keepalive"] > stale, 90, "hv2 back after the fence")
