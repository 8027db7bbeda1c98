"""Primary coordinator election over a kazoo Lock (exactly one holder at a time).

Every running coordinator queues on the lock; the holder is the primary. A hand-over request
(`/config/primary_request`, written by the API) names the node that should take over, or the
node that should step down. Coordinators the request excludes leave the queue, and the primary
releases the lock only once the wanted successor is next in line, so the lock's fairness hands it
over exactly. Requests older than REQUEST_TTL are ignored, so a request naming a node that then
dies cannot leave the cluster without a primary.

The primary steps down locally as soon as its ZooKeeper session is lost: its lock znode is gone,
so another coordinator may already hold the lock. It also steps down (within a second) when its
lock entry was deleted by a coordinator that deposed it: its HA loop stopped renewing the primary
lease (`PRIMARY_LEASE`, `pvc.node.fencing`). A coordinator the lease marks as deposed for a hang
does not contend until that mark is cleared.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import CancelledError, KazooException
from kazoo.protocol.states import KazooState

from pvc.core import schema
from pvc.core.errors import ClusterUnavailable
from pvc.core.zk import ZK, decode

log = logging.getLogger(__name__)

REQUEST_TTL = 30.0
HANDOVER_WAIT = 10.0
# The primary lease (pvc.node.fencing): {holder, generation, renewals, renewed, deposed?, brake?},
# renewed by the primary's HA loop; a lock znode's sibling, so backups leave it out like the lock.
PRIMARY_LEASE = f"{schema.LOCKS}/primary_lease"


def deposed_for_hang(lease: Any, node: str) -> bool:
    """Whether the lease marks `node` as a primary deposed because it hung (it must not contend)."""
    mark = lease.get("deposed") if isinstance(lease, dict) else None
    return isinstance(mark, dict) and mark.get("node") == node and bool(mark.get("fence"))


def name_thread(name: str) -> None:
    """Give the calling thread its name in the kernel too (ps -L, top -H, /proc/<pid>/task/*/comm),
    so an operator, or a lab test freezing one thread, can tell the daemon's threads apart."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)          # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def request_wants(request: Any, node: str, now: float) -> str:
    """What a hand-over request means for `node`: 'take', 'avoid' or 'none' (pure)."""
    if not isinstance(request, dict) or now - float(request.get("time", 0)) > REQUEST_TTL:
        return "none"
    if request.get("node"):
        return "take" if request["node"] == node else "avoid"
    if request.get("exclude"):
        return "avoid" if request["exclude"] == node else "none"
    return "none"


class PrimaryElection:
    """Runs in its own thread; calls become_primary/become_secondary around lock ownership."""

    def __init__(
        self,
        zk: ZK,
        node: str,
        may_contend: Callable[[], bool],
        become_primary: Callable[[], None],
        become_secondary: Callable[[], None],
    ) -> None:
        self.zk = zk
        self.node = node
        self.may_contend = may_contend
        self.become_primary = become_primary
        self.become_secondary = become_secondary
        self.is_primary = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._session_lost = threading.Event()
        self._shutdown = threading.Event()
        self._handover_timeout = 0.0
        self._lock = zk.lock(schema.PRIMARY_ELECTION, node)
        self._thread = threading.Thread(target=self._run, name="election", daemon=True)
        zk.add_listener(self._on_session)

    def start(self) -> None:
        self.zk.watch_data(schema.PRIMARY_REQUEST, self._on_request)
        self._thread.start()

    def stop(self, handover: bool = True, timeout: float = 30.0) -> None:
        """Stop contending; a primary first waits (up to timeout) for a successor to queue."""
        self._handover_timeout = timeout if handover else 0.0
        self._shutdown.set()
        self._wake.set()
        if not self.is_primary:
            self._lock.cancel()
        self._thread.join(timeout + 5)

    # -- events ----------------------------------------------------------------------------------

    def _on_session(self, state: KazooState) -> None:
        if state == KazooState.LOST:
            self._session_lost.set()
            self._lock.cancel()
        self._wake.set()

    def _on_request(self, data: bytes | None, _stat: Any) -> None:
        if request_wants(decode(data), self.node, time.time()) == "avoid" and not self.is_primary:
            self._lock.cancel()  # leave the queue so the lock passes to the wanted node
        self._wake.set()

    def _request(self) -> Any:
        try:
            return self.zk.get(schema.PRIMARY_REQUEST, None)
        except (ClusterUnavailable, KazooException):
            return None

    def _request_says(self) -> str:
        return request_wants(self._request(), self.node, time.time())

    # -- main loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        name_thread("pvc-election")
        while not self._stop.is_set():
            if self._shutdown.is_set():
                if self.is_primary:
                    self._handover(lambda contenders: bool(contenders), self._handover_timeout)
                    if self.is_primary:
                        self._step_down()
                self._stop.set()
                return
            try:
                if self.is_primary:
                    self._serve()
                else:
                    self._contend()
            except Exception:
                log.exception("election loop error")
                self._stop.wait(1)

    def _contend(self) -> None:
        self._session_lost.clear()
        if self._shutdown.is_set():
            return
        if not (self.zk.connected and self.may_contend()) or self._request_says() == "avoid":
            self._wake.wait(0.5)
            self._wake.clear()
            return
        try:
            acquired = self._lock.acquire(blocking=True, timeout=None)
        except CancelledError:
            return
        except (KazooException, ClusterUnavailable):
            self._stop.wait(0.5)
            return
        if not acquired or self._shutdown.is_set():
            self._release()
            return
        if self._session_lost.is_set() or self._request_says() == "avoid" or not self.may_contend():
            self._release()
            return
        log.info("won the primary election")
        self.is_primary = True
        try:
            self.become_primary()
        except Exception:
            log.exception("taking over as primary failed; stepping down")
            self._step_down()
            return
        request = self._request()
        if isinstance(request, dict) and (request.get("node") == self.node or request.get("exclude")):
            self._clear_request()  # the hand-over it asked for is done

    def _serve(self) -> None:
        """While primary: watch for loss of the session, a hand-over request or shutdown."""
        self._wake.wait(1.0)
        self._wake.clear()
        if self._shutdown.is_set():
            return
        if self._session_lost.is_set() or not self._holds_lock():
            log.warning("lost the primary lock (ZooKeeper session lost, or deposed by another coordinator); "
                        "stepping down")
            self._step_down(write=False)
            return
        if not self.may_contend():
            log.warning("this daemon can no longer serve as primary (keepalive stuck?); handing over")
            self._handover(lambda contenders: bool(contenders), HANDOVER_WAIT)
            return
        request = self._request()
        says = request_wants(request, self.node, time.time())
        if says == "avoid":
            wanted = request.get("node") if isinstance(request, dict) else None
            if wanted:
                self._handover(lambda contenders: bool(contenders) and contenders[0] == wanted,
                               HANDOVER_WAIT)
            else:
                self._handover(lambda contenders: bool(contenders), HANDOVER_WAIT)

    def _holds_lock(self) -> bool:
        if not self.zk.connected:
            return True  # suspended: we cannot know yet; the LOST event decides
        node = getattr(self._lock, "node", None)
        if not node:
            return False
        try:
            stat = self.zk.stat(f"{schema.PRIMARY_ELECTION}/{node}", retry=False)
        except KazooException:
            return True
        return stat is not None and stat.ephemeralOwner == self.zk.session_id

    def _handover(self, successor_ready: Callable[[list[str]], bool], timeout: float) -> None:
        """Step down once a suitable successor is queued on the lock (or give up after timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                contenders = [c for c in self._lock.contenders() if c != self.node]
            except KazooException:
                contenders = []
            if successor_ready(contenders):
                log.info("handing primary over (next in line: %s)", contenders[0])
                self._step_down()
                return
            time.sleep(0.1)
        if not self._shutdown.is_set():
            log.warning("no suitable coordinator took over within %.0fs; staying primary", timeout)
            self._clear_request()

    def _step_down(self, write: bool = True) -> None:
        try:
            self.become_secondary() if write else None
        except Exception:
            log.exception("stepping down cleanly failed")
        finally:
            self.is_primary = False
            self._release()
        if not write:
            try:
                self.become_secondary()
            except Exception:
                log.debug("could not record secondary state yet", exc_info=True)

    def _release(self) -> None:
        try:
            self._lock.release()
        except KazooException:
            log.debug("lock release failed (session gone?)", exc_info=True)

    def _clear_request(self) -> None:
        try:
            self.zk.delete(schema.PRIMARY_REQUEST)
        except (ClusterUnavailable, KazooException):
            log.debug("could not clear the hand-over request", exc_info=True)
