"""The storage adapter interface (`Storage`), its errors, and the values every implementation shares.

Every failure is a StorageError whose message names the object and what went wrong; "not found"
and "already exists" have their own subclasses so callers can map them to 404/400 without parsing
text. Sizes are bytes. Volume `info()` has the shape of `rbd info --format json` (PVC stores it).
"""

from __future__ import annotations

import abc
import threading
import uuid as uuidlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

# The OSD flags `ceph osd set/unset` accepts (pvc storage osd set/unset).
from pvc.core.vocabulary import IMAGE_FORMATS, OSD_FLAGS  # noqa: F401 - re-exported by the adapter


class StorageError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StorageUnavailable(StorageError):
    """Ceph is not configured here or cannot be reached."""


class StorageNotFound(StorageError):
    pass


class StorageInUse(StorageError):
    """An image a client still has open (a watcher): a QEMU, or one that died less than Ceph's
    watch timeout (30 s) ago."""


class StorageExists(StorageError):
    pass


ImageRef = tuple[str, str]          # (pool, volume)
# A guard held around one maintenance operation on images: (the images, what is done to them).
ImageGuard = Callable[[Sequence[ImageRef], str], AbstractContextManager[None]]

_image_guard: ImageGuard | None = None
_held = threading.local()


def set_image_guard(guard: ImageGuard | None) -> None:
    """Install the process's guard around image maintenance operations (snapshot create, remove,
    rename, rollback; resize): pvcapid and pvcworkerd install a ZooKeeper lock per image
    (pvc.cluster.storage.imagelock), so no two of PVC's operations on one image overlap anywhere
    in the cluster.

    Why: librbd aborts its process (`ceph_assert(m_pending_ops == 0)` in ~AsyncOpTracker) when an
    image handle closes while notifications from another client's operation on the same image
    are still being handled: a worker removing a snapshot while a live resize of the same disk
    ran took the whole pvcworkerd down. Without a guard (tools, unit tests) nothing is held.
    """
    global _image_guard
    _image_guard = guard


@contextmanager
def image_guarded(refs: Sequence[ImageRef], what: str) -> Iterator[None]:
    """Hold the process's guard for `refs` during the block; re-entrant per thread (an undo run
    inside a guarded block, e.g. removing a snapshot just made, does not wait for itself)."""
    held: set[ImageRef] = _held.__dict__.setdefault("refs", set())
    todo = sorted(set(refs) - held)
    guard = _image_guard
    if not todo or guard is None:
        yield
        return
    with guard(todo, what):
        held.update(todo)
        try:
            yield
        finally:
            held.difference_update(todo)


@dataclass(frozen=True)
class Locker:
    """An RBD lock holder: `client` (e.g. client.4123), `cookie`, `address` (ip:port/nonce)."""

    client: str
    cookie: str
    address: str


class Storage(abc.ABC):
    """The operations PVC performs on its Ceph cluster."""

    # -- cluster -------------------------------------------------------------------------------
    @abc.abstractmethod
    def fsid(self) -> str: ...

    @abc.abstractmethod
    def mon_command(self, prefix: str, **args: Any) -> Any:
        """One mon command with format=json; returns the parsed answer (None when empty)."""

    @abc.abstractmethod
    def mon_command_text(self, prefix: str, **args: Any) -> str:
        """One mon command with the plain (human) format, e.g. `status`, `df`."""

    @abc.abstractmethod
    def mon_addresses(self) -> list[tuple[str, int]]:
        """(host, v1 port) of every monitor, for libvirt network disks."""

    # -- OSDs ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def set_flag(self, flag: str, enabled: bool) -> None: ...

    @abc.abstractmethod
    def set_osd_in(self, osd_id: int, is_in: bool) -> None: ...

    # -- pools ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def list_pools(self) -> list[str]: ...

    @abc.abstractmethod
    def create_pool(self, name: str, pgs: int, size: int, min_size: int,
                    rule: str = "replicated_rule") -> None:
        """Create a replicated RBD pool (application rbd enabled, initialised for RBD)."""

    @abc.abstractmethod
    def ensure_tier_rule(self, tier: str) -> str:
        """The CRUSH rule placing replicas on device class `tier` (created if missing); its name."""

    @abc.abstractmethod
    def set_pool_pgs(self, name: str, pgs: int) -> None: ...

    @abc.abstractmethod
    def remove_pool(self, name: str) -> None: ...

    # -- volumes (RBD images) -----------------------------------------------------------------
    @abc.abstractmethod
    def list_volumes(self, pool: str) -> list[str]: ...

    @abc.abstractmethod
    def volume_info(self, pool: str, name: str) -> dict[str, Any]:
        """`rbd info --format json` shape: name, id, size, objects, order, object_size,
        snapshot_count, block_name_prefix, format, features, op_features, flags, timestamps."""

    @abc.abstractmethod
    def create_volume(self, pool: str, name: str, size: int) -> None: ...

    @abc.abstractmethod
    def resize_volume(self, pool: str, name: str, size: int) -> None: ...

    @abc.abstractmethod
    def rename_volume(self, pool: str, name: str, new_name: str) -> None: ...

    @abc.abstractmethod
    def copy_volume(self, pool: str, name: str, new_name: str) -> None:
        """A full, independent copy (`rbd copy`)."""

    @abc.abstractmethod
    def remove_volume(self, pool: str, name: str) -> None:
        """Remove the image and all its snapshots.

        The name is free at once; the data may be deleted a little later (see purge_trash).
        """

    def purge_trash(self, pool: str) -> int:
        """Delete what remove_volume left for later (nothing by default); how many images."""
        return 0

    @abc.abstractmethod
    def write_volume(self, pool: str, name: str, source: BinaryIO, chunk: int = 4 << 20) -> int:
        """Copy a raw byte stream into the start of the volume, chunk by chunk; bytes written."""

    @abc.abstractmethod
    def convert_into_volume(self, pool: str, name: str, path: str, image_format: str) -> None:
        """`qemu-img convert -f FORMAT -O raw PATH` onto the (existing) volume."""

    @abc.abstractmethod
    def watchers(self, pool: str, name: str) -> list[str]:
        """Addresses of clients that have the volume open (a running QEMU does)."""

    @abc.abstractmethod
    def lockers(self, pool: str, name: str) -> list[Locker]: ...

    @abc.abstractmethod
    def break_lock(self, pool: str, name: str, locker: Locker) -> None: ...

    # -- snapshots -----------------------------------------------------------------------------
    @abc.abstractmethod
    def list_snapshots(self, pool: str, volume: str) -> list[str]: ...

    @abc.abstractmethod
    def create_snapshot(self, pool: str, volume: str, name: str) -> None: ...

    @abc.abstractmethod
    def rename_snapshot(self, pool: str, volume: str, name: str, new_name: str) -> None: ...

    @abc.abstractmethod
    def rollback_snapshot(self, pool: str, volume: str, name: str) -> None: ...

    @abc.abstractmethod
    def remove_snapshot(self, pool: str, volume: str, name: str) -> None: ...

    @contextmanager
    def prepared_snapshots(self, volumes: Sequence[tuple[str, str]]) -> Iterator[SnapshotTaker]:
        """Volumes (pool, volume) readied for snapshots taken together: `take(name)` snapshots all of
        them at once and answers {(pool, volume): None, or the StorageError}. Readying (opening the
        images, where the backend can) happens before, releasing after, so the instant a VM snapshot
        pauses its guest for is only the snapshot creations. This default readies nothing."""
        with ThreadPoolExecutor(max_workers=max(1, len(volumes)), thread_name_prefix="rbdsnap") as pool:
            def take(name: str) -> dict[tuple[str, str], StorageError | None]:
                futures = {ref: pool.submit(self.create_snapshot, ref[0], ref[1], name) for ref in volumes}
                return {ref: failure_of(future) for ref, future in futures.items()}

            yield take

    # -- block I/O (snapshot send and receive) ---------------------------------------------------
    @abc.abstractmethod
    def open_block(self, pool: str, volume: str, snapshot: str | None = None,
                   write: bool = False) -> AbstractContextManager[BlockHandle]:
        """The volume (at `snapshot`, read-only, when given) opened once for many block reads or
        writes; StorageNotFound if the volume or snapshot does not exist."""

    def ensure_volume(self, pool: str, name: str, size: int) -> bool:
        """Create the volume with `size` bytes if it does not exist; True if it was created."""
        if name in self.list_volumes(pool):
            return False
        try:
            self.create_volume(pool, name, size)
        except StorageExists:
            return False
        return True

    def ensure_snapshot(self, pool: str, volume: str, name: str) -> bool:
        """Create the snapshot if it does not exist; True if it was created."""
        if name in self.list_snapshots(pool, volume):
            return False
        try:
            self.create_snapshot(pool, volume, name)
        except StorageExists:
            return False
        return True

    # -- clients -------------------------------------------------------------------------------
    @abc.abstractmethod
    def blocklist(self, address: str, seconds: int = 3600) -> None:
        """Forbid a client address (ip or ip:port/nonce) any further I/O (HA fencing)."""

    def refresh_maps(self) -> None:  # noqa: B027 - optional: only a real client keeps maps
        """Fetch the newest OSD map now: after a node failure, ops go straight to the surviving
        OSDs instead of waiting for the old ones to time out."""

    @abc.abstractmethod
    def unblocklist(self, address: str) -> None:
        """Lift a blocklist entry (a fenced node returns to service); absent is fine."""

    @abc.abstractmethod
    def mark_osds_down(self, osd_ids: list[int]) -> None:
        """Mark OSDs down at once (their node is fenced) instead of after the heartbeat grace."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlockHandle(abc.ABC):
    """One open volume (or snapshot) for block-level send and receive.

    `extents(since)` lists the changed byte ranges from snapshot `since` (None: from nothing, i.e.
    the allocated ranges) to what the handle shows, whole objects at a time, each with `exists`
    False when the range now reads as zeroes (discarded). Writes may be asynchronous until flush().
    """

    size: int

    @abc.abstractmethod
    def extents(self, since: str | None = None) -> list[tuple[int, int, bool]]: ...

    @abc.abstractmethod
    def read(self, offset: int, length: int) -> bytes: ...

    @abc.abstractmethod
    def write(self, offset: int, data: bytes) -> None: ...

    @abc.abstractmethod
    def discard(self, offset: int, length: int) -> None:
        """Make the range read as zeroes, deallocating it where the backend can."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Wait for every write issued so far; raise the first failure."""


SnapshotTaker = Callable[[str], dict[tuple[str, str], StorageError | None]]


def failure_of(future: Any) -> StorageError | None:
    """The StorageError a snapshot creation ended with, or None (other errors are raised)."""
    try:
        future.result()
    except StorageError as exc:
        return exc
    return None


def secret_uuid(fsid: str, configured: str | None = None) -> str:
    """The libvirt secret UUID for the cluster's key: configured, else derived from the fsid.

    Derived, every node computes the same UUID without coordination, so a VM's XML (which names
    the secret) is valid on every node and live migration carries it unchanged.
    """
    if configured:
        return str(uuidlib.UUID(configured))
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"pvc-ceph-{fsid}"))


def keyring_key(keyring: str, entity: str = "client.admin") -> str:
    """The base64 key of `entity` in a keyring file (for the libvirt ceph secret)."""
    section = None
    with open(keyring) as handle:
        for raw in handle:
            line = raw.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
            elif section == entity and line.startswith("key") and "=" in line:
                return line.split("=", 1)[1].strip()
    raise StorageUnavailable(f"no key for {entity} in {keyring}")
