"""The simulator's own checks bite: each test breaks one safety mechanism and expects a failure."""

from __future__ import annotations

import dataclasses

import pytest

from .scenarios import BY_NAME, LOAD_RECOVERED
from .world import SimFailure, World


def test_a_node_that_does_not_self_fence_runs_its_vms_twice() -> None:
    world = World(BY_NAME["fence_fails_migrate"])
    selffence = world.nodes["hv3"].selffence
    assert selffence is not None
    selffence.enabled = False
    with pytest.raises(SimFailure, match=r"runs on hv[12], hv3"):
        world.run()


def test_a_blocklist_that_blocks_nothing_lets_two_copies_write() -> None:
    world = World(BY_NAME["hung_daemon_fence_fails_migrate"])
    world.storage.blocklist = lambda addresses: []           # type: ignore[method-assign]
    with pytest.raises(SimFailure, match="runs writable"):
        world.run()


def test_recovery_without_the_margin_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # The shipped margin (1 s) is no longer than the sim's "ok" agent (1 s), so a missing margin
    # would hide behind the agent's own time: a 0.1 s agent takes that cover away (the margin,
    # not the agent's speed, is what must keep a recovery after the self-fence).
    from . import fakes

    monkeypatch.setitem(fakes.AGENT_DELAY, "ok", 1)
    world = World(BY_NAME["power_loss_with_vms"])
    for node in world.nodes.values():
        if node.monitor is not None:
            node.monitor.policy = dataclasses.replace(node.monitor.policy, margin=0.0)
    with pytest.raises(SimFailure, match=r"before session expiry \+ margin"):
        world.run()


def test_a_vm_left_behind_is_lost() -> None:
    sc = dataclasses.replace(BY_NAME["fence_fails_none"], expect=LOAD_RECOVERED)
    with pytest.raises(SimFailure, match="vm1 expected runs"):
        World(sc).run()


def test_two_chains_at_once_are_caught() -> None:
    world = World(BY_NAME["two_nodes_die_5"])
    world.zk.fence.update(hv4={"phase": "fencing"}, hv5={"phase": "recovering"})
    with pytest.raises(SimFailure, match="more than one fence chain"):
        world.check_step()


def test_placement_on_stale_figures_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    from pvc.node import fencing

    monkeypatch.setattr(fencing, "_account", lambda node, demand: None)     # count nothing placed
    with pytest.raises(SimFailure, match="vm5 expected runs@hv1"):
        World(BY_NAME["placement_fresh_figures"]).run()


def test_a_deposed_primary_that_acts_without_its_lease_is_caught() -> None:
    world = World(BY_NAME["primary_hung_wakes"])
    monitor = world.nodes["hv1"].monitor
    assert monitor is not None
    monitor._renew = lambda: None                                           # type: ignore[method-assign]
    end = round(world.sc.until * 10)
    with pytest.raises(SimFailure, match="hv1 acted as primary without holding the primary lease"):
        while world.tick <= end:
            if world.tick == 455:       # a fault only a primary resolves, right when hv1 wakes
                world.zk.faults["VM_NOT_RECOVERED_VM3"] = "VM vm3 was not recovered"
            world.step()
            world.tick += 1


def test_no_scenario_is_a_known_bug() -> None:
    from .scenarios import SCENARIOS

    assert not [sc.name for sc in SCENARIOS if sc.known_bug]
