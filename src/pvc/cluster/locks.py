"""Held ZooKeeper locks with a bounded wait: the one way PVC's processes take a cluster lock.

kazoo's Lock recipe queues a sequence znode under the lock's path. Lock paths are tidied away
by their last holder (nothing piles up under `/locks` for every VM or image ever locked), so a
contender can find the parent gone between making sure it exists and queueing under it: it
then simply queues again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from kazoo.exceptions import NoNodeError

from pvc.core.zk import ZK


@contextlib.contextmanager
def held(zk: ZK, path: str, timeout: float, holder: str) -> Iterator[bool]:
    """Hold the lock at `path` for the block; yields False (and holds nothing) when it could not
    be had within `timeout` seconds (another holder, or ZooKeeper failed)."""
    deadline = time.monotonic() + max(timeout, 0.1)
    lock, got = None, False
    while not got and time.monotonic() < deadline:
        lock = zk.lock(path, holder)
        try:
            got = bool(lock.acquire(timeout=max(deadline - time.monotonic(), 0.1)))
        except NoNodeError:
            # the previous holder tidied the parent away under us: queue again
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


def holders(zk: ZK, path: str) -> list[str]:
    """Who holds or waits for the lock at `path` (the identifiers given to `held`), for messages."""
    try:
        return [str(h) for h in zk.lock(path, "").contenders()]
    except Exception:
        return []
