"""ZooKeeper as the HA simulator models it: members, quorum, leader, sessions, ephemerals, data.

Time is counted in ticks of 0.1 s. The model keeps what matters for split-brain questions:

* a member serves clients only while its node is powered, its process runs and it belongs to
  the component of members that holds a quorum (a majority of all members, able to talk);
* a session lives on the server side while the quorum keeps hearing from its client; it expires
  when the quorum side sees it silent for longer than the session timeout, on the 1 s tick
  boundary after that (ZooKeeper's expiry queue rounds up); a newly elected leader restarts every
  session's timer (as ZooKeeper's session tracker does when a leader is established);
* expiry deletes the session's ephemerals: the node's alive marker and its primary-lock entry;
* the primary lease is one versioned document, written by compare-and-set;
* a client whose member stops serving tries another one every second, keeping its session if it
  has not expired, else it gets a new one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

TICKS = 10                      # ticks per second


def ts(tick: int) -> str:
    return f"{tick // TICKS}.{tick % TICKS}"


class Net(Protocol):
    def powered(self, node: str) -> bool: ...
    def can_talk(self, a: str, b: str) -> bool: ...


@dataclass
class Session:
    id: int
    node: str
    incarnation: int            # the daemon process that owns it
    last_heard: int
    expired: bool = False


@dataclass
class Client:
    """One daemon process's kazoo client."""

    session: Session | None = None
    member: str | None = None
    connected: bool = False
    retry_at: int = 0


@dataclass
class ZooKeeper:
    members: list[str]
    timeout: int                                   # session timeout, ticks
    net: Net
    log: Callable[[str, str], None]
    process: dict[str, bool] = field(default_factory=dict)
    leader: str | None = None
    quorum: frozenset[str] = frozenset()
    no_leader_until: int = -1
    sessions: dict[int, Session] = field(default_factory=dict)
    markers: dict[str, int] = field(default_factory=dict)       # node -> owning session id
    queue: list[int] = field(default_factory=list)              # primary lock entries, in order
    expired_at: dict[str, int] = field(default_factory=dict)    # node -> tick of its last expiry
    # data
    node_docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    fence: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: dict[str, str] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)                # faults an operator acknowledged
    maintenance: bool = False
    lease: dict[str, Any] | None = None                         # the primary lease document
    lease_version: int = -1
    _next_id: int = 1

    def __post_init__(self) -> None:
        self.process = {m: True for m in self.members}

    # -- server side -------------------------------------------------------------------------------

    def serving(self, member: str) -> bool:
        return member in self.quorum

    def update_quorum(self, now: int) -> None:
        up = [m for m in self.members if self.process[m] and self.net.powered(m)]
        quorum: frozenset[str] = frozenset()
        seen: set[str] = set()
        for m in up:
            if m in seen:
                continue
            group = {x for x in up if self.net.can_talk(m, x)}
            seen |= group
            if len(group) * 2 > len(self.members):
                quorum = frozenset(group)
        if now < self.no_leader_until:
            quorum = frozenset()
        self.quorum = quorum
        if not quorum:
            if self.leader is not None:
                self.log("zookeeper", "quorum lost: no member serves clients")
                self.leader = None
            return
        if self.leader not in quorum:
            self.leader = max(quorum)
            members = ", ".join(sorted(quorum))
            self.log("zookeeper", f"{self.leader} leads ({members}); session timers restart")
            for s in self.sessions.values():
                if not s.expired:
                    s.last_heard = now

    def expire_sessions(self, now: int) -> None:
        if not self.quorum:
            return
        for s in list(self.sessions.values()):
            if s.expired:
                continue
            # ZooKeeper's expiry queue: the next whole tick (1 s) after last heard + timeout
            due = ((s.last_heard + self.timeout) // TICKS + 1) * TICKS
            if now >= due:
                s.expired = True
                self.expired_at[s.node] = now
                self.log("zookeeper", f"session {s.id} of {s.node} expired (last heard t={ts(s.last_heard)})")
                if self.markers.get(s.node) == s.id:
                    del self.markers[s.node]
                if s.id in self.queue:
                    self.queue.remove(s.id)

    def new_session(self, node: str, incarnation: int, now: int) -> Session:
        s = Session(self._next_id, node, incarnation, now)
        self._next_id += 1
        self.sessions[s.id] = s
        return s

    # -- client side -------------------------------------------------------------------------------

    def usable(self, node: str, member: str | None) -> bool:
        return member is not None and self.serving(member) and self.net.can_talk(node, member)

    def step_client(self, node: str, client: Client, prefer: list[str], incarnation: int, now: int) -> bool:
        """Advance one client; True when it got a new session this step."""
        if client.connected and self.usable(node, client.member) and client.session is not None \
                and not client.session.expired:
            client.session.last_heard = now
            return False
        if client.connected:
            client.connected, client.member = False, None
            client.retry_at = now + TICKS
            self.log(node, "lost its ZooKeeper connection")
        if now < client.retry_at:
            return False
        member = next((m for m in prefer if self.usable(node, m)), None)
        if member is None:
            client.retry_at = now + TICKS
            return False
        client.member, client.connected = member, True
        fresh = client.session is None or client.session.expired
        if fresh:
            client.session = self.new_session(node, incarnation, now)
            self.log(node, f"connected to {member}: new session {client.session.id}")
        else:
            assert client.session is not None
            self.log(node, f"reconnected to {member}: session {client.session.id} kept")
        client.session.last_heard = now
        return fresh
