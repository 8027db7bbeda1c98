"""A slow external call made by a loop that must be seen alive while it waits.

The primary's HA loop proves it is not hung by renewing the primary lease (pvc.node.fencing). Its
Ceph calls in a fence chain (blocklist, OSDs down, RBD locks) may each wait up to the client's
operation timeout on a Ceph that is sick precisely because a node died: a monitor election, PGs
whose OSD went with the node. Made inline, such a wait outlasts the lease and another coordinator
deposes, and may fence, a primary that was only busy. So the call runs in a worker thread while
the loop's own thread goes on renewing; a loop that really hangs still renews nothing, and the
wait is bounded, so a call that never answers cannot hold the lease for ever.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pvc.node.election import name_thread

T = TypeVar("T")


class SlowCallTimeout(Exception):
    """The call gave no answer within its bound (it may still finish in the background)."""


def call_keeping(fn: Callable[[], T], keep: Callable[[], None], bound: float, what: str,
                 beat: float = 0.5) -> T:
    """fn() in a worker thread; every `beat` seconds while it runs, keep() in this thread (an
    exception from keep, such as a lost lease, ends the wait and propagates). Raises fn's own
    exception, or SlowCallTimeout naming `what` after `bound` seconds."""
    box: dict[str, Any] = {}

    def run() -> None:
        name_thread("pvc-slowcall")
        try:
            box["value"] = fn()
        except BaseException as exc:   # handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=run, name=f"slowcall {what}", daemon=True)
    worker.start()
    deadline = time.monotonic() + bound
    while True:
        worker.join(beat)
        if not worker.is_alive():
            break
        if time.monotonic() >= deadline:
            raise SlowCallTimeout(f"{what}: no answer within {bound:g}s")
        keep()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]
