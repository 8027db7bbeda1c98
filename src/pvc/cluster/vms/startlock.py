"""A VM's start lock: the ZooKeeper lock a node holds while it starts the VM's domain.

Why it is shared: a node starts a domain only under this lock, after re-reading the VM (state
`start`, its node) - and holds it until the start is recorded. A remove takes the same lock
after writing `stop`, so it waits for a start already in flight to finish and be recorded
(then waits for the node to stop it), and no new start can begin until the VM is deleted: a
remove can no longer leave a QEMU running for a VM that is gone (issue #17, orphans).
"""

from __future__ import annotations

import contextlib

from pvc.cluster import locks
from pvc.core import schema
from pvc.core.zk import ZK


def start_lock_path(uuid: str) -> str:
    return f"{schema.LOCKS}/vmstart/{uuid}"


def start_lock(zk: ZK, uuid: str, timeout: float, holder: str) -> contextlib.AbstractContextManager[bool]:
    """Hold the VM's start lock for the block; yields False (and holds nothing) when it could
    not be had within `timeout` seconds (another process starts the VM, or ZooKeeper failed)."""
    return locks.held(zk, start_lock_path(uuid), timeout, holder)
