"""What every part of a chaos run shares: the clock, the record of events, a small synchronous API
client, and probes into the lab's nodes (each node's libvirtd, its QEMU processes, Ceph from
inside a node's namespace).

Probes never hang the run: a frozen node (SIGSTOP) leaves its libvirtd unanswering and a node
whose links are cut cannot reach Ceph, so every probe has a deadline and a node whose previous
probe still hangs is reported as unanswered instead of being asked again.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from pvc.lab import labtls, proc
from pvc.lab.plan import LabPlan, NodePlan

T = TypeVar("T")

# libvirt's virDomainState numbers (libvirt-domain.h), spelled as the report shows them
DOMAIN_STATES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff",
                 6: "crashed", 7: "pmsuspended"}
# a guest executes in these (a paused domain, e.g. a migration's incoming side, does not)
EXECUTING = ("running", "blocked", "shutdown")


class Clock:
    """Seconds since the run started (monotonic), and the wall time it started at."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.wall0 = time.time()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def at_wall(self, wall: float) -> float:
        """A time.time() value (e.g. a task's `created`) on the run's clock."""
        return round(wall - self.wall0, 2)

    def at(self, monotonic: float) -> float:
        """A time.monotonic() value (e.g. Injected.at) on the run's clock."""
        return round(monotonic - self.t0, 2)


class Events:
    """Thread-safe record of what happened, streamed line by line to `stream` (JSON lines) as it
    happens, so a run that dies still leaves its timeline."""

    def __init__(self, clock: Clock, stream: Path | None = None, echo: Callable[[str], None] | None = None
                 ) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.items: list[dict[str, Any]] = []
        self.stream = stream
        self.echo = echo
        if stream is not None:
            stream.parent.mkdir(parents=True, exist_ok=True)
            stream.write_text("")

    def add(self, event: str, **fields: Any) -> dict[str, Any]:
        item = {"t": self.clock.now(), "event": event, **fields}
        with self.lock:
            self.items.append(item)
            if self.stream is not None:
                with self.stream.open("a") as out:
                    out.write(json.dumps(item, default=str) + "\n")
        if self.echo is not None and event in ("fault", "heal", "healthy", "violation", "phase"):
            self.echo(describe(item))
        return item

    def of(self, event: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(i) for i in self.items if i["event"] == event]


def describe(item: dict[str, Any]) -> str:
    """One line for a recorded event."""
    rest = " ".join(f"{k}={v}" for k, v in item.items() if k not in ("t", "event") and v not in ("", None))
    return f"[{item['t']:8.1f}s] {item['event']}: {rest}"


# -- the API ---------------------------------------------------------------------------------------

@dataclass
class Answer:
    """One API request's outcome. `sent` is False when the request never reached pvcapid (the
    connection or TLS handshake failed), so it cannot have changed anything."""

    status: int | None
    body: Any = None
    sent: bool = True
    error: str = ""

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def unknown(self) -> bool:
        """Sent, but no answer (or a 5xx): it may or may not have been carried out."""
        return self.sent and (self.status is None or self.status >= 500)

    @property
    def message(self) -> str:
        if self.error:
            return self.error
        if isinstance(self.body, dict):
            return str(self.body.get("message") or self.body.get("status") or self.body)[:300]
        return str(self.body)[:300] if self.body is not None else ""

    @property
    def task_id(self) -> str:
        return str(self.body.get("task_id", "")) if isinstance(self.body, dict) else ""


class Api:
    """A small synchronous client of the lab's API (through the lab's 127.0.0.1 relay, verified
    against the lab's CA, with the lab's token), as tests/system use it.

    Writes are sent once: after a lost answer nobody knows whether they happened, and a retry
    could do them twice. Reads are retried until `read_deadline` (the API moves with the primary).
    """

    def __init__(self, plan: LabPlan, timeout: float = 90, read_deadline: float = 60) -> None:
        self.read_deadline = read_deadline
        self.http = labtls.api_client(plan, httpx.Timeout(timeout, connect=10))

    def close(self) -> None:
        self.http.close()

    def send(self, method: str, path: str, params: dict[str, Any] | None = None,
             data: dict[str, Any] | None = None, timeout: float | None = None) -> Answer:
        kwargs: dict[str, Any] = {"params": params, "data": data}
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=10)
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            return Answer(None, sent=False, error=f"not sent: {type(exc).__name__}: {exc}"[:300])
        except httpx.HTTPError as exc:
            return Answer(None, error=f"no answer: {type(exc).__name__}: {exc}"[:300])
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text[:500]
        return Answer(response.status_code, body)

    def read(self, path: str, params: dict[str, Any] | None = None, deadline: float | None = None) -> Answer:
        """GET, retried while there is no answer or a 5xx (until the deadline)."""
        end = time.monotonic() + (self.read_deadline if deadline is None else deadline)
        while True:
            answer = self.send("GET", path, params=params, timeout=30)
            if (answer.sent and not answer.unknown) or time.monotonic() > end:
                return answer
            time.sleep(1)


# -- probes into the lab ---------------------------------------------------------------------------

class Probes:
    """Deadline-bound questions to each node's libvirtd and to Ceph."""

    def __init__(self, plan: LabPlan, timeout: float = 8) -> None:
        self.plan = plan
        self.timeout = timeout
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    def _bounded(self, key: str, fn: Callable[[], T], timeout: float) -> T | None:
        """fn() in a thread; None when it does not finish in time (the thread keeps its slot until
        it returns, so a hung daemon is asked once, not once per sample)."""
        box: dict[str, Any] = {}
        with self._lock:
            if key in self._busy:
                return None
            self._busy.add(key)

        def target() -> None:
            try:
                box["value"] = fn()
            except Exception as exc:  # reported as no answer
                box["error"] = exc
            finally:
                with self._lock:
                    self._busy.discard(key)

        thread = threading.Thread(target=target, name=f"probe-{key}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive() or "error" in box:
            return None
        return box["value"]

    def domains(self, node: NodePlan) -> dict[str, str] | None:
        """uuid -> state name of every domain the node's libvirtd knows; None if it did not answer."""
        def ask() -> dict[str, str]:
            import libvirt

            # a domain that goes away while we look is no error here (nor a line on stderr)
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            conn = libvirt.open(node.libvirt_uri)
            try:
                found = {}
                for dom in conn.listAllDomains(0):
                    try:
                        found[dom.UUIDString()] = DOMAIN_STATES.get(dom.state()[0], "unknown")
                    except libvirt.libvirtError:
                        continue
                return found
            finally:
                conn.close()

        return self._bounded(f"libvirt-{node.name}", ask, self.timeout)

    def all_domains(self, nodes: list[NodePlan] | None = None) -> dict[str, dict[str, str] | None]:
        """domains() of every node, asked at once."""
        nodes = self.plan.nodes if nodes is None else nodes
        out: dict[str, dict[str, str] | None] = {}
        threads = [threading.Thread(target=lambda n=n: out.__setitem__(n.name, self.domains(n)), daemon=True)
                   for n in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.timeout + 2)
        return {n.name: out.get(n.name) for n in nodes}

    def qemus(self, node: NodePlan) -> dict[str, str]:
        """uuid -> process state letter of the QEMU processes in the node's namespace (from /proc:
        answers when the node's libvirtd does not, e.g. a frozen node: its QEMUs are 'T')."""
        return {uuid: state for uuid, (_pid, state) in self.all_qemus().get(node.name, {}).items()}

    def all_qemus(self) -> dict[str, dict[str, tuple[int, str]]]:
        """node -> uuid -> (pid, state letter) of every QEMU process of the lab, in one pass over
        /proc (a process's node is the network namespace it runs in)."""
        import os

        namespaces: dict[int, str] = {}
        for node in self.plan.nodes:
            try:
                namespaces[os.stat(proc.NETNS_DIR / node.netns).st_ino] = node.name
            except OSError:
                continue
        found: dict[str, dict[str, tuple[int, str]]] = {n.name: {} for n in self.plan.nodes}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if not (entry / "comm").read_text().startswith("qemu-system"):
                    continue
                node = namespaces.get(os.stat(entry / "ns" / "net").st_ino)
                args = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rsplit(") ", 1)[1][0]
            except (OSError, IndexError):
                continue
            if node is None:
                continue
            for flag, value in itertools.pairwise(args):
                if flag == b"-uuid":
                    found[node][value.decode(errors="replace")] = (int(entry.name), state)
        return found

    def in_ceph(self, fn: Callable[[Any], T], avoid: set[str] | None = None, timeout: float = 30) -> T | None:
        """fn(rados client) run from a coordinator's namespace that is not in `avoid` (nodes under a
        fault that cuts them off); None when no namespace answered in time."""
        avoid = avoid or set()
        coordinators = self.plan.coordinators
        candidates = [n for n in coordinators if n.name not in avoid] or list(coordinators)
        conf = str(self.plan.ceph_conf)

        def call() -> T:
            import rados

            limits = {"client_mount_timeout": "10", "rados_mon_op_timeout": "10",
                      "rados_osd_op_timeout": "10"}
            client = rados.Rados(conffile=conf, conf=limits)
            client.connect(timeout=10)
            try:
                return fn(client)
            finally:
                client.shutdown()

        for node in candidates:
            try:
                return proc.netns_call(node.netns, call, timeout=timeout)
            except Exception:  # try the next namespace
                continue
        return None


ADDRESS_RE = re.compile(r"(\d+\.\d+\.\d+\.\d+):\d+")


def address_node(plan: LabPlan, address: str) -> str:
    """The lab node whose underlay address a Ceph client address ('v1:10.200.0.2:0/123') carries."""
    match = ADDRESS_RE.search(address or "")
    if not match:
        return f"?{address}"
    for node in plan.nodes:
        if node.address == match.group(1):
            return node.name
    return match.group(1)


def rbd_images(client: Any, pool: str) -> dict[str, dict[str, Any]]:
    """Every image of `pool`: size, snapshots, watcher and exclusive-lock owner addresses. Opened
    read-only (a read-only open registers no watch of its own)."""
    import rbd

    from pvc.adapters.ceph.librados import is_user_snapshot, trashed_from

    out: dict[str, dict[str, Any]] = {}
    own = str(client.get_addrs())      # our own session, in case an open registers a watch

    def theirs(address: str) -> bool:
        tail = address.split(":", 1)[1] if address.startswith(("v1:", "v2:")) else address
        return bool(tail) and tail not in own

    with client.open_ioctx(pool) as ioctx:
        for name in rbd.RBD().list(ioctx):
            try:
                with rbd.Image(ioctx, name, read_only=True) as image:
                    lockers = image.list_lockers() or {}
                    snaps = list(image.list_snaps())
                    out[name] = {
                        "size": image.size(),
                        "snapshots": sorted(s["name"] for s in snaps if is_user_snapshot(s)),
                        # a removal librbd began and nobody finished (under a random UUID name)
                        "trashed": sorted(t for t in map(trashed_from, snaps) if t),
                        "watchers": sorted(a for a in (str(w.get("addr", "")) for w in image.watchers_list())
                                           if theirs(a)),
                        "lockers": sorted(str(locker[2]) for locker in lockers.get("lockers", [])),
                    }
            except rbd.ImageNotFound:
                continue
    return out


@dataclass
class Context:
    """One chaos run's shared state."""

    plan: LabPlan
    seed: int
    clock: Clock
    events: Events
    probes: Probes
    stop: threading.Event = field(default_factory=threading.Event)
    # nodes under a fault now (cut off, frozen): probes go elsewhere, and their silence is expected
    faulted: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # each fault's window on the run's clock: from injection until the lab is healthy again
    windows: dict[str, tuple[float, float | None]] = field(default_factory=dict)

    def rng(self, purpose: str) -> random.Random:
        """An independent random stream per purpose (a worker, the faults), all from the seed, so
        each thread's choices replay whatever the others do."""
        return random.Random(f"{self.seed}:{purpose}")

    def api(self) -> Api:
        return Api(self.plan)

    def set_faulted(self, node: str, what: str | None) -> None:
        with self.lock:
            if what:
                self.faulted[node] = what
            else:
                self.faulted.pop(node, None)

    def fault_began(self, key: str, at: float) -> None:
        with self.lock:
            self.windows[key] = (at, None)

    def fault_ended(self, key: str) -> None:
        with self.lock:
            if key in self.windows:
                self.windows[key] = (self.windows[key][0], self.clock.now())

    def faults_between(self, start: float, end: float) -> bool:
        """Whether any fault was in place (injected, not yet healthy again) between two times."""
        with self.lock:
            return any(t0 <= end and (t1 is None or t1 >= start) for t0, t1 in self.windows.values())

    def faulted_nodes(self) -> set[str]:
        with self.lock:
            return set(self.faulted)

    def sleep(self, seconds: float) -> bool:
        """Sleep unless the run is stopping; True when it should go on."""
        return not self.stop.wait(max(0.0, seconds))
