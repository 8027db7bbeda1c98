"""One ZooKeeper lock per RBD image: PVC's maintenance operations on an image never overlap.

pvcapid and pvcworkerd install `guard(zk, holder)` as their process's image guard
(`pvc.adapters.ceph.base.set_image_guard`): every snapshot create, remove, rename, rollback and
resize the Ceph adapter makes then runs under the image's lock, and so does a running VM's live
disk resize (`vm.block_resize`, which QEMU performs). Why: librbd aborts the process whose image
handle closes while another client's operation on the same image is still notifying it
(`ceph_assert(m_pending_ops == 0)`), which took a whole worker down in a chaos run.

A lock that cannot be had within IMAGE_LOCK_TIMEOUT refuses the operation with StorageInUse,
naming who holds it; nothing has been changed then.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

from pvc.adapters.ceph.base import ImageGuard, ImageRef, StorageInUse
from pvc.cluster import locks
from pvc.core import schema
from pvc.core.zk import ZK

IMAGE_LOCK_TIMEOUT = 120.0     # a rollback of a large image holds its lock for a while


def image_lock_path(pool: str, volume: str) -> str:
    return f"{schema.LOCKS}/rbd/{pool}/{volume}"


@contextlib.contextmanager
def image_locks(zk: ZK, refs: Sequence[ImageRef], holder: str,
                timeout: float = IMAGE_LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the locks of every image in `refs` (taken in sorted order, so two holders of several
    images never wait for each other) for the block; StorageInUse when one cannot be had."""
    deadline = time.monotonic() + timeout
    with contextlib.ExitStack() as stack:
        for pool, volume in sorted(set(refs)):
            path = image_lock_path(pool, volume)
            got = stack.enter_context(locks.held(zk, path, max(deadline - time.monotonic(), 0.1), holder))
            if not got:
                others = [h for h in locks.holders(zk, path) if h != holder]
                why = (f"busy with {'; '.join(others)}" if others
                       else "its lock in ZooKeeper could not be taken")
                raise StorageInUse(f"{holder}: volume {pool}/{volume} is {why} (waited {timeout:.0f} s); "
                                   f"nothing was changed, try again")
        yield


def guard(zk: ZK, holder: str) -> ImageGuard:
    """The image guard of a process: `holder` names it (e.g. "pvcworkerd on hv1") in the locks,
    so a refusal says who holds the image."""
    def guarded(refs: Sequence[ImageRef], what: str) -> contextlib.AbstractContextManager[None]:
        return image_locks(zk, refs, f"{what} ({holder})")
    return guarded
