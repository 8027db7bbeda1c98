"""A VM's start lock: the ZooKeeper lock a node holds while it starts the VM's domain.

Why it is shared: a node starts a domain only under this lock, after re-reading the VM (state
`start`, its node) - and holds it until the start is recorded. A remove takes the same lock
after writing `stop`, so it waits for a start already in flight to finish and be recorded
(then waits for the node to stop it), and no new start can begin until the VM is deleted: a
remove can no longer leave a QEMU running for a VM that is gone (issue #17, orphans).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from kazoo.exceptions import NoNodeError

from pvc.core import schema
from pvc.core.zk import ZK


def start_lock_path(uuid: str) -> str:
    return f"{schema.LOCKS}/vmstart/{uuid}"


@contextlib.contextmanager
def start_lock(zk: ZK, uuid: str, timeout: float, holder: str) -> Iterator[bool]:
    """Hold the VM's start lock for the block; yields False (and holds nothing) when it could
    not be had within `timeout` seconds (another process starts the VM, or ZooKeeper failed)."""
    path = start_lock_path(uuid)
    deadline = time.monotonic() + max(timeout, 0.1)
    lock, got = None, False
    while not got and time.monotonic() < deadline:
        lock = zk.lock(path, holder)
        try:
            got = bool(lock.acquire(timeout=max(deadline - time.monotonic(), 0.1)))
        except NoNodeError:
            # The previous holder tidied the lock's parent away between our making sure it
            # exists and queueing under it (a remove right behind a start): queue again.
            with contextlib.suppress(Exception):
                lock.cancel()
            continue
        except Exception:
            with contextlib.suppress(Exception):
                lock.cancel()
            break
        if not got:
            break
    try:
        yield got
    finally:
        if got and lock is not None:
            with contextlib.suppress(Exception):
                lock.release()
            with contextlib.suppress(Exception):
                zk.delete(path, recursive=False)      # others may be queued under it
