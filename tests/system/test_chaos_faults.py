"""Every chaos fault injected once into the lab and healed: afterwards faults.healthy() is empty.

One of them (links_cut) stays long enough for the HA monitor to fence the node, so the heal's way
back from a fence (rejoin, restart, ready) runs too. state_dir_full needs a lab brought up for
chaos (PVC_LAB_CHAOS=1 in the environment of the run that builds the lab); without, it is skipped.
"""

from __future__ import annotations

import random
import time

import pytest

from pvc.lab.chaos import faults
from pvc.lab.plan import LabPlan
from tests.system.helpers import wait

FENCED_KIND = "links_cut"
DWELL = 3.0          # seconds a fault stays before its heal, except FENCED_KIND's


def _settled(lab: LabPlan, timeout: float = 180) -> None:
    last: list[str] = []

    def clean() -> bool:
        last[:] = faults.healthy(lab.name)
        return not last

    try:
        wait("the lab healthy", clean, timeout)
    except Exception as exc:
        raise AssertionError(f"still not healthy: {last}") from exc


def _fenced(lab: LabPlan, name: str) -> bool:
    """"fenced", not "dead": a node is "dead" before its fence agent runs, and a heal begun then
    meets the agent killing what it starts (restore_node rides that out, but this test is about
    the way back from a finished fence)."""
    view = faults.observe(lab, with_ceph=False)
    return view.nodes[name].daemon_state == "fenced"


@pytest.mark.parametrize("kind", faults.KINDS)
def test_fault_injects_and_heals(lab: LabPlan, kind: str) -> None:
    if kind == "state_dir_full" and not lab.chaos:
        pytest.skip("the lab was not brought up with PVC_LAB_CHAOS=1 (no size-limited state directory)")
    _settled(lab)
    choices = faults.targets(kind, lab.name)
    assert choices, f"no valid target for {kind} in a healthy lab"
    target = choices[-1]
    injected = faults.inject(kind, lab.name, target, random.Random(17))
    assert injected.kind == kind and injected.target == target and injected.detail
    problems = faults.healthy(lab.name)
    print(f"{kind} {target}: {injected.detail}; unhealthy: {problems}")
    # the fault is visible (pvcapid and ZooKeeper come back by themselves quickly, so not those)
    if kind not in ("kill_pvcapid", "zk_member_restart", "zk_leader_restart"):
        assert problems, f"{kind} on {target} left no trace in healthy()"
    if kind == FENCED_KIND:
        wait(f"{target} fenced", lambda: _fenced(lab, target), 120)
    else:
        time.sleep(DWELL)
    t0 = time.monotonic()
    injected.heal()
    healed = time.monotonic()
    injected.heal()      # idempotent
    _settled(lab)
    print(f"{kind} {target}: healed in {healed - t0:.1f}s, healthy {time.monotonic() - healed:.1f}s later")
