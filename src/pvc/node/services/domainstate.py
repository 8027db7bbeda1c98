"""Flush and ready: the domain state requests the API records in this node's document.

The document watch notes each request (and this node's daemon state, which the fencing chain
may set to dead/fenced); a flush or unflush runs the registered hooks in a thread of its own,
one at a time, and stops early when a newer request replaced it (pvc-facts §3.7).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pvc.core.records import NodeRecord
from pvc.node.fencing import OUT_OF_SERVICE
from pvc.node.services.nodedoc import NodeDocument

log = logging.getLogger("pvcnoded")

Hook = Callable[[], None]


class DomainStateService:
    def __init__(self, doc: NodeDocument, stopping: threading.Event) -> None:
        self.doc, self.stopping = doc, stopping
        # Subsystems register what must happen on flush and on unflush.
        self.flush_hooks: list[Hook] = []
        self.unflush_hooks: list[Hook] = []
        self.requested = ""                     # the domain state last seen in our document
        self.daemon_state_seen = ""             # our daemon state as last seen (dead/fenced by HA)
        self._busy = threading.Lock()

    def on_doc(self, data: bytes | None, stat: Any) -> None:
        """React to flush/ready requests the API recorded in our document."""
        if not data or self.stopping.is_set():
            return
        try:
            record = NodeRecord.model_validate_json(data)
        except ValueError:
            return
        state = record.domain_state
        self.daemon_state_seen = record.daemon_state
        self.requested = state
        if state in ("flush", "unflush") and self._busy.acquire(blocking=False):
            threading.Thread(target=self._change, args=(state,), daemon=True).start()

    def still_requested(self, state: str) -> bool:
        """A flush/unflush stops early when a newer request replaced it (pvc-facts §3.7)."""
        return self.requested == state and not self.stopping.is_set()

    def _wait_back_in_service(self) -> bool:
        """A dead/fenced node being readied: the primary lifts its Ceph blocklist and sets it to
        run first (pvc.node.fencing); only then may its VMs come back."""
        deadline = time.monotonic() + 120
        while self.daemon_state_seen in OUT_OF_SERVICE and self.still_requested("unflush"):
            if time.monotonic() > deadline:
                log.warning("still %s after 120s; the unflush waits for the next ready request",
                            self.daemon_state_seen)
                return False
            self.stopping.wait(0.5)
        return self.still_requested("unflush")

    def _change(self, state: str) -> None:
        try:
            hooks, final = (self.flush_hooks, "flushed") if state == "flush" else \
                (self.unflush_hooks, "ready")
            log.info("%s started", "flush" if state == "flush" else "unflush")
            if state == "unflush" and not self._wait_back_in_service():
                return
            for hook in hooks:
                hook()
            self.doc.write(lambda d: {**d, "domain_state": final} if d.get("domain_state") == state else d)
            log.info("domain state is now %s", final)
        except Exception:
            log.exception("domain state change to %s failed", state)
        finally:
            self._busy.release()
        # A request that arrived while this one ran was ignored by on_doc: pick it up now.
        pending = self.requested
        if pending in ("flush", "unflush") and pending != state and not self.stopping.is_set() \
                and self._busy.acquire(blocking=False):
            threading.Thread(target=self._change, args=(pending,), daemon=True).start()
