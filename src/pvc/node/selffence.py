"""Self-fence: a node cut off from ZooKeeper destroys its VMs before the cluster may restart them.

The cluster treats a node's VMs as free only after its ZooKeeper session expired plus a margin
(`pvc.node.fencing`). The session expires no earlier than `session_timeout` after the server
last heard from us, which is no earlier than when we *sent* our last answered request. So a node
that has had no answered request for `session_timeout` seconds destroys every VM it runs at that
moment at the latest: before the cluster can act, whatever happened on the network. A heartbeat
thread (`pvc.node.services.ha`) feeds `answered(sent_at)` about once a second and calls `check()`
at least as often and again exactly when `due_in()` says the bound is reached, so the VMs are gone
within milliseconds of `last answer sent + session_timeout`, well inside `fencing.margin` (the
timing budget and its inequality: docs/architecture.md, "Failover timing"). Everything is
measured on the monotonic clock: a wall-clock step cannot shorten or stretch the bound.

With a hardware watchdog configured, the heartbeat pets it only while answers come; a node whose
daemon hangs or dies (and so can no longer fence itself) is then reset by the hardware.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("pvcnoded.selffence")


@dataclass
class SelfFence:
    bound: Callable[[], float]              # seconds: the ZooKeeper session timeout
    clock: Callable[[], float]              # monotonic seconds
    connected: Callable[[], bool]
    destroy_all: Callable[[], list[str]]    # destroys every VM here; the names/UUIDs destroyed
    enabled: bool = True
    last_answer: float = field(default=0.0)
    fenced_at: float | None = None          # set while the outage that fenced us lasts
    warned: bool = False
    events: list[tuple[float, str]] = field(default_factory=list)   # (clock, message), to publish

    def __post_init__(self) -> None:
        self.last_answer = self.clock()

    def answered(self, sent_at: float) -> None:
        """A request sent at `sent_at` got its answer: the session was alive then."""
        self.last_answer = max(self.last_answer, sent_at)
        self.warned = False
        if self.fenced_at is not None and self.connected():
            self.fenced_at = None
            self._note("ZooKeeper answers again; VMs may start here once the cluster agrees")

    def silent_for(self) -> float:
        return self.clock() - self.last_answer

    def due_in(self) -> float:
        """Seconds until `check()` must run to destroy the VMs on time (infinite when it has
        nothing left to do): the heartbeat sleeps no longer than this, so the self-fence is not
        late by up to a heartbeat period, which the margin would otherwise have to cover."""
        if not self.enabled or self.fenced_at is not None:
            return math.inf
        return max(0.0, self.bound() - self.silent_for())

    def check(self) -> list[str] | None:
        """Destroy the VMs once the bound is reached without an answer; what was destroyed."""
        # Not gated on the client's "connected": kazoo treats every request it sends as a ping,
        # so while requests keep going out it may report a dead connection as connected for good.
        if not self.enabled or self.fenced_at is not None:
            return None
        silent = self.silent_for()
        if silent < self.bound():
            if silent >= self.bound() / 2 and not self.warned:
                self.warned = True
                log.warning("no ZooKeeper answer for %.1fs; self-fence in %.1fs unless one comes",
                            silent, self.bound() - silent)
            return None
        self.fenced_at = self.clock()
        try:
            destroyed = self.destroy_all()
        except Exception as exc:
            log.exception("self-fence: destroying the VMs failed")
            self._note(f"self-fence after {silent:.1f}s without ZooKeeper FAILED: {exc}")
            self.fenced_at = None            # try again on the next check
            return None
        self._note(f"self-fence: no ZooKeeper answer for {silent:.1f}s (session timeout "
                   f"{self.bound():.1f}s); destroyed {len(destroyed)} VM(s)"
                   + (f": {', '.join(sorted(destroyed))}" if destroyed else ""))
        return destroyed

    def may_start(self) -> bool:
        """No VM starts here while the session may be gone (answers count, not the client's
        connected state, for the reason given in check())."""
        return self.fenced_at is None and self.silent_for() < self.bound() / 2

    def _note(self, message: str) -> None:
        log.warning(message)
        self.events.append((self.clock(), message))
        del self.events[:-50]
