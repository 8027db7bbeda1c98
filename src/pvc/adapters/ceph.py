"""Ceph access (DESIGN D6, D13): the storage adapter interface and its librados/librbd implementation.

`Storage` is the narrow interface everything else uses (API, workers, node daemon); `CephStorage`
implements it with Debian's rados/rbd bindings, and with `ceph`/`rbd`/`qemu-img` (arguments as
lists, keyring from a file, never a secret on a command line) only where the bindings lack an
operation. `pvc.adapters.fakes.FakeStorage` implements it in memory for pure unit tests.

Every failure is a StorageError whose message names the object and what went wrong; "not found"
and "already exists" have their own subclasses so callers can map them to 404/400 without parsing
text. Sizes are bytes. Volume `info()` has the shape of `rbd info --format json` (PVC stores it).
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from typing import Any, BinaryIO

# The OSD flags `ceph osd set/unset` accepts (pvc storage osd set/unset).
OSD_FLAGS = ("noout", "noin", "noup", "nodown", "pause", "nobackfill", "norebalance", "norecover",
             "noscrub", "nodeep-scrub", "notieragent", "nosnaptrim", "full")
IMAGE_FORMATS = ("raw", "vmdk", "qcow2", "qed", "vdi", "vpc")


class StorageError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StorageUnavailable(StorageError):
    """Ceph is not configured here or cannot be reached."""


class StorageNotFound(StorageError):
    pass


class StorageExists(StorageError):
    pass


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
        """Remove the image and all its snapshots."""

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

    # -- clients -------------------------------------------------------------------------------
    @abc.abstractmethod
    def blocklist(self, address: str, seconds: int = 3600) -> None:
        """Forbid a client address (ip or ip:port/nonce) any further I/O (HA fencing)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def probe(conffile: str, keyring: str, timeout: float = 5.0) -> dict[str, Any]:
    """Connect to the cluster and read its fsid; raise StorageUnavailable with the reason."""
    if not os.path.exists(conffile):
        raise StorageUnavailable(f"Ceph is not configured on this node ({conffile} does not exist)")
    try:
        import rados
    except ImportError as exc:
        raise StorageUnavailable("python3-rados is not installed") from exc
    conf: dict[str, str] = {"keyring": keyring} if os.path.exists(keyring) else {}
    cluster = rados.Rados(conffile=conffile, conf=conf)
    try:
        cluster.connect(timeout=int(max(1, timeout)))
        return {"fsid": cluster.get_fsid(), "pools": len(cluster.list_pools())}
    except rados.Error as exc:
        raise StorageUnavailable(f"cannot reach the Ceph cluster: {exc}") from None
    finally:
        cluster.shutdown()
