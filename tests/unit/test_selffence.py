"""SelfFence on a virtual clock: it destroys the VMs exactly when the session must be gone."""

from __future__ import annotations

from pvc.node.selffence import SelfFence


class World:
    def __init__(self) -> None:
        self.now, self.connected, self.vms = 100.0, True, {"a", "b"}

    def destroy(self) -> list[str]:
        gone, self.vms = sorted(self.vms), set()
        return gone


def fence(world: World, bound: float = 6.0) -> SelfFence:
    return SelfFence(bound=lambda: bound, clock=lambda: world.now, connected=lambda: world.connected,
                     destroy_all=world.destroy)


def test_nothing_happens_while_answers_come_or_the_bound_is_not_reached() -> None:
    world = World()
    guard = fence(world)
    for _ in range(20):
        world.now += 1
        guard.answered(world.now - 0.1)
        assert guard.check() is None
    world.connected = False
    world.now += 5.8                      # last answer sent 5.9 s ago: the session may still live
    assert guard.check() is None and world.vms == {"a", "b"}
    assert not guard.may_start()          # but nothing may start now


def test_destroys_once_at_the_bound_and_recovers_after_answers() -> None:
    world = World()
    guard = fence(world)
    guard.answered(world.now)
    world.connected = False
    world.now += 6.0
    assert guard.check() == ["a", "b"] and world.vms == set()
    world.now += 3
    assert guard.check() is None          # one self-fence per outage
    assert "destroyed 2 VM(s): a, b" in guard.events[0][1]
    world.connected = True
    guard.answered(world.now)
    assert guard.fenced_at is None and guard.may_start()
    assert "answers again" in guard.events[-1][1]


def test_silence_fences_even_while_the_client_says_connected() -> None:
    """kazoo counts each request it sends as a ping, so it may call a dead connection connected
    for as long as requests keep going out: only answers count."""
    world = World()
    guard = fence(world)
    world.now += 6
    assert guard.check() == ["a", "b"]


def test_a_failed_destroy_is_retried() -> None:
    world = World()
    calls = []

    def broken() -> list[str]:
        calls.append(1)
        raise RuntimeError("libvirt gone")

    guard = SelfFence(bound=lambda: 6.0, clock=lambda: world.now, connected=lambda: False, destroy_all=broken)
    world.now += 7
    assert guard.check() is None and guard.check() is None
    assert len(calls) == 2 and "FAILED" in guard.events[0][1]


def test_disabled() -> None:
    world = World()
    guard = SelfFence(bound=lambda: 6.0, clock=lambda: world.now, connected=lambda: False,
                      destroy_all=world.destroy, enabled=False)
    world.now += 60
    assert guard.check() is None and world.vms == {"a", "b"}
