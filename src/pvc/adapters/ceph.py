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
import calendar
import datetime
import errno
import json
import os
import subprocess
import threading
import time
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import contextmanager
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


# ============================================================================== the real adapter

# Bit -> name, in bit order, as `rbd info` prints them.
_FEATURES = ((1, "layering"), (2, "striping"), (4, "exclusive-lock"), (8, "object-map"), (16, "fast-diff"),
             (32, "deep-flatten"), (64, "journaling"), (128, "data-pool"), (256, "operations"),
             (512, "migrating"), (1024, "non-primary"))
_OP_FEATURES = ((1, "clone-parent"), (2, "clone-child"), (4, "group"), (8, "snap-trash"))
_IMAGE_FLAGS = ((1, "object map invalid"), (2, "fast diff invalid"))
# errnos meaning "our session is gone" (108: EBLOCKLISTED = ESHUTDOWN on Linux): reconnect
_BROKEN = {errno.ESHUTDOWN, errno.ENOTCONN, 108}
# errnos meaning "the cluster did not answer", not "the request is bad"
_UNAVAILABLE = {errno.ETIMEDOUT, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.EINTR, errno.ECANCELED}


def _names(bits: int, table: tuple[tuple[int, str], ...]) -> list[str]:
    return [name for bit, name in table if bits & bit]


def _ctime(stamp: datetime.datetime | None) -> str:
    """librbd hands out naive UTC datetimes; `rbd info` prints ctime() in local time."""
    if stamp is None:
        return ""
    return time.ctime(calendar.timegm(stamp.timetuple()))


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    return abs(code) if isinstance(code, int) else None


def _qemu_rbd_escape(value: str) -> str:
    """qemu's legacy rbd: filename syntax separates options with ':'; escape them in values."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


class CephStorage(Storage):
    """Storage on a real Ceph cluster through one shared, lazily connected librados client.

    Thread-safe: librados and librbd are; only (re)connecting is serialised. A connection that
    breaks (cluster restarted, our client blocklisted, session shut down) is dropped and the next
    call connects afresh, so a long-lived daemon recovers without a restart. Mon commands and OSD
    operations are bounded by `op_timeout` so an API thread never hangs on a sick cluster.

    Network namespaces: librados opens its sockets from threads started at connect(), so the
    client lives in the network namespace of the thread that made the first call.
    """

    def __init__(self, conffile: str, keyring: str, timeout: float = 5.0, client_user: str = "admin",
                 op_timeout: float = 60.0) -> None:
        self.conffile = conffile
        self.keyring = keyring
        self.timeout = timeout
        self.client_user = client_user
        self.op_timeout = op_timeout
        self._lock = threading.Lock()
        self._cluster: Any = None        # the client new calls use
        self._users: dict[int, int] = {}  # id(client) -> calls in flight (clients retired included)

    def __repr__(self) -> str:
        return f"CephStorage({self.conffile!r}, client.{self.client_user})"

    # ---- connection --------------------------------------------------------------------------

    def _client(self) -> Any:
        """A new, connected librados client (called with the lock held)."""
        if not os.path.exists(self.conffile):
            raise StorageUnavailable(f"Ceph is not configured on this node ({self.conffile} does not exist)")
        try:
            import rados
        except ImportError as exc:
            raise StorageUnavailable("python3-rados is not installed") from exc
        conf = {"client_mount_timeout": str(max(1, int(self.timeout))),
                "rados_mon_op_timeout": str(max(1, int(self.op_timeout))),
                "rados_osd_op_timeout": str(max(1, int(self.op_timeout)))}
        if os.path.exists(self.keyring):
            conf["keyring"] = self.keyring
        try:
            cluster = rados.Rados(conffile=self.conffile, conf=conf, rados_id=self.client_user)
        except rados.Error as exc:
            raise StorageUnavailable(f"cannot set up a Ceph client from {self.conffile}: {exc}") from None
        try:
            cluster.connect(timeout=max(1, int(self.timeout)))
        except rados.Error as exc:
            cluster.shutdown()
            raise StorageUnavailable(f"cannot reach the Ceph cluster: {exc}") from None
        return cluster

    def _acquire(self) -> Any:
        """The current client (connecting if needed), counted as in use until _release()."""
        with self._lock:
            if self._cluster is None:
                self._cluster = self._client()
            cluster = self._cluster
            self._users[id(cluster)] = self._users.get(id(cluster), 0) + 1
            return cluster

    def _release(self, cluster: Any) -> None:
        with self._lock:
            left = self._users[id(cluster)] - 1
            if left:
                self._users[id(cluster)] = left
                return
            del self._users[id(cluster)]
            if cluster is self._cluster:
                return
        cluster.shutdown()   # retired, and this was its last call in flight

    def _retire(self, cluster: Any) -> None:
        """Stop handing out this client; shut it down once no call uses it any more.

        Shutting a client down under another thread's open ioctx or image would crash librados
        (use after free), hence the count of calls in flight.
        """
        with self._lock:
            if self._cluster is not cluster:
                return
            self._cluster = None
            if id(cluster) in self._users:
                return
        cluster.shutdown()

    def close(self) -> None:
        with self._lock:
            cluster = self._cluster
        if cluster is not None:
            self._retire(cluster)

    @contextmanager
    def _call(self, what: str, exists: str | None = None, missing: str | None = None,
              busy: str | None = None) -> Iterator[Any]:
        """Yield the cluster; translate librados/librbd errors into StorageErrors naming `what`.

        `missing`/`exists`/`busy` override the message for ENOENT/EEXIST/EBUSY (e.g. naming the
        target of a rename rather than its source).
        """
        cluster = self._acquire()
        try:
            yield cluster
        except StorageError:
            raise
        except Exception as exc:
            import rados
            import rbd

            if not isinstance(exc, rados.Error | rbd.Error):
                raise
            code = _errno_of(exc)
            detail = str(exc)
            if isinstance(exc, rados.ConnectionShutdown | rbd.ConnectionShutdown) or code in _BROKEN:
                # our session is gone (e.g. we were blocklisted): the next call connects afresh
                self._retire(cluster)
                raise StorageUnavailable(
                    f"{what}: lost the connection to the Ceph cluster ({detail})") from None
            if code in _UNAVAILABLE:
                raise StorageUnavailable(
                    f"{what}: the Ceph cluster did not answer in time ({detail})") from None
            if code == errno.ENOENT:
                raise StorageNotFound(missing or f"{what}: not found") from None
            if code == errno.EEXIST:
                raise StorageExists(exists or f"{what}: already exists") from None
            if code == errno.EBUSY and busy:
                raise StorageError(busy) from None
            raise StorageError(f"{what}: {detail}") from None
        finally:
            self._release(cluster)

    @contextmanager
    def _ioctx(self, pool: str, what: str | None = None) -> Iterator[Any]:
        import rados

        with self._call(what or f"pool {pool}", missing=f"pool {pool}: not found") as cluster:
            try:
                ioctx = cluster.open_ioctx(pool)
            except rados.ObjectNotFound:
                raise StorageNotFound(f"pool {pool}: not found") from None
            try:
                yield ioctx
            finally:
                ioctx.close()

    @contextmanager
    def _image(self, pool: str, name: str, read_only: bool = False,
               with_ioctx: bool = False) -> Iterator[Any]:
        """The open image (read-only opens register no watch); (ioctx, image) if `with_ioctx`."""
        import rbd

        with self._ioctx(pool) as ioctx, self._call(f"volume {pool}/{name}"), \
                rbd.Image(ioctx, name, read_only=read_only) as image:
            yield (ioctx, image) if with_ioctx else image

    # ---- cluster -----------------------------------------------------------------------------

    def fsid(self) -> str:
        with self._call("ceph fsid") as cluster:
            return str(cluster.get_fsid())

    def _mon(self, prefix: str, args: dict[str, Any], fmt: str | None, what: str | None = None) -> str:
        """Run one mon command; raise by errno with the mon's own explanation."""
        cmd = {"prefix": prefix, **args}
        if fmt:
            cmd["format"] = fmt
        label = what or f"ceph {prefix}"
        with self._call(label) as cluster:
            ret, out, outs = cluster.mon_command(json.dumps(cmd), b"", timeout=int(self.op_timeout))
        if ret == 0:
            return out.decode(errors="replace")
        code = abs(ret)
        detail = outs.strip() or os.strerror(code)
        if code == errno.ENOENT:
            raise StorageNotFound(f"{label}: not found ({detail})")
        if code == errno.EEXIST:
            raise StorageExists(f"{label}: already exists ({detail})")
        if code in _UNAVAILABLE or code in _BROKEN:
            raise StorageUnavailable(f"{label}: the Ceph cluster did not answer ({detail})")
        raise StorageError(f"{label}: {detail} ({errno.errorcode.get(code, code)})")

    def mon_command(self, prefix: str, **args: Any) -> Any:
        out = self._mon(prefix, args, "json")
        try:
            return json.loads(out) if out.strip() else None
        except json.JSONDecodeError as exc:
            raise StorageError(f"ceph {prefix}: unreadable answer ({exc})") from None

    def mon_command_text(self, prefix: str, **args: Any) -> str:
        return self._mon(prefix, args, None)

    def mon_addresses(self) -> list[tuple[str, int]]:
        result = []
        for mon in self.mon_command("mon dump").get("mons", []):
            vec = mon.get("public_addrs", {}).get("addrvec", [])
            addr = next((a["addr"] for a in vec if a.get("type") == "v1"), None)
            addr = addr or mon.get("addr", "").split("/")[0]
            host, _, port = addr.rpartition(":")
            if host:
                result.append((host.strip("[]"), int(port)))
        return result

    # ---- OSDs --------------------------------------------------------------------------------

    def set_flag(self, flag: str, enabled: bool) -> None:
        if flag not in OSD_FLAGS:
            raise StorageError(f"osd flag {flag}: unknown (one of {', '.join(OSD_FLAGS)})")
        self._mon("osd set" if enabled else "osd unset", {"key": flag}, "json", f"osd flag {flag}")

    def set_osd_in(self, osd_id: int, is_in: bool) -> None:
        # `osd in/out` of an unknown id answers 0 ("osd.7 does not exist"), so look first
        if osd_id not in (self.mon_command("osd ls") or []):
            raise StorageNotFound(f"osd.{osd_id}: not found")
        self._mon("osd in" if is_in else "osd out", {"ids": [str(osd_id)]}, "json", f"osd.{osd_id}")

    def blocklist(self, address: str, seconds: int = 3600) -> None:
        self._mon("osd blocklist", {"blocklistop": "add", "addr": address, "expire": float(seconds)}, "json",
                  f"blocklist {address}")

    def unblocklist(self, address: str) -> None:
        self._mon("osd blocklist", {"blocklistop": "rm", "addr": address}, "json", f"blocklist {address}")

    def mark_osds_down(self, osd_ids: list[int]) -> None:
        if osd_ids:
            self._mon("osd down", {"ids": [str(i) for i in osd_ids]}, "json",
                      f"osd down {' '.join(map(str, osd_ids))}")

    # ---- pools -------------------------------------------------------------------------------

    def list_pools(self) -> list[str]:
        with self._call("list pools") as cluster:
            return [str(p) for p in cluster.list_pools()]

    def refresh_maps(self) -> None:
        self._latest_osdmap("refresh the OSD map")

    def _latest_osdmap(self, what: str) -> None:
        """After a pool change: our client's osdmap must show it before the next call looks."""
        with self._call(what) as cluster:
            cluster.wait_for_latest_osdmap()

    def _pool_exists(self, name: str) -> bool:
        with self._call(f"pool {name}") as cluster:
            return bool(cluster.pool_exists(name))

    def create_pool(self, name: str, pgs: int, size: int, min_size: int,
                    rule: str = "replicated_rule") -> None:
        what = f"pool {name}"
        if pgs < 1 or size < 1 or not 1 <= min_size <= size:
            raise StorageError(f"{what}: invalid pgs/size/min_size {pgs}/{size}/{min_size}")
        if self._pool_exists(name):
            raise StorageExists(f"{what}: already exists")
        if rule not in (self.mon_command("osd crush rule ls") or []):
            raise StorageNotFound(f"{what}: crush rule {rule}: not found")
        self._mon("osd pool create", {"pool": name, "pg_num": pgs, "pgp_num": pgs, "pool_type": "replicated",
                                      "rule": rule}, "json", what)
        try:
            self._latest_osdmap(what)
            for var, val in (("size", size), ("min_size", min_size)):
                self._mon("osd pool set", {"pool": name, "var": var, "val": str(val)}, "json", what)
            self._mon("osd pool application enable", {"pool": name, "app": "rbd"}, "json", what)
            import rbd

            if hasattr(rbd.RBD, "pool_init"):   # `rbd pool init` (since Luminous)
                with self._ioctx(name) as ioctx, self._call(what):
                    rbd.RBD().pool_init(ioctx, True)
        except StorageError:
            # changes nothing: a half-made pool would block a retry with "already exists"
            try:
                self.remove_pool(name)
            except StorageError:
                pass
            raise

    def ensure_tier_rule(self, tier: str) -> str:
        if tier == "default":
            return "replicated_rule"
        name = f"{tier}_tier"
        if name in (self.mon_command("osd crush rule ls") or []):
            return name
        if tier not in (self.mon_command("osd crush class ls") or []):
            raise StorageNotFound(f"crush rule {name}: device class {tier}: not found")
        self._mon("osd crush rule create-replicated",
                  {"name": name, "root": "default", "type": "host", "class": tier}, "json",
                  f"crush rule {name}")
        return name

    def set_pool_pgs(self, name: str, pgs: int) -> None:
        what = f"pool {name}"
        if pgs < 1:
            raise StorageError(f"{what}: invalid pg count {pgs}")
        if not self._pool_exists(name):
            raise StorageNotFound(f"{what}: not found")
        for var in ("pg_num", "pgp_num"):
            self._mon("osd pool set", {"pool": name, "var": var, "val": str(pgs)}, "json", what)

    def remove_pool(self, name: str) -> None:
        what = f"pool {name}"
        # `osd pool rm` of a missing pool answers 0 ("does not exist"), so look first
        if not self._pool_exists(name):
            raise StorageNotFound(f"{what}: not found")
        self._mon("osd pool rm", {"pool": name, "pool2": name, "yes_i_really_really_mean_it": True}, "json",
                  what)
        self._latest_osdmap(what)

    # ---- volumes -----------------------------------------------------------------------------

    def list_volumes(self, pool: str) -> list[str]:
        import rbd

        with self._ioctx(pool) as ioctx, self._call(f"pool {pool}"):
            return [str(n) for n in rbd.RBD().list(ioctx)]

    def volume_info(self, pool: str, name: str) -> dict[str, Any]:
        what = f"volume {pool}/{name}"
        with self._image(pool, name, read_only=True) as image, self._call(what):
            stat = image.stat()
            return {
                "name": name, "id": str(image.id()), "size": int(stat["size"]),
                "objects": int(stat["num_objs"]),
                "order": int(stat["order"]), "object_size": int(stat["obj_size"]),
                "snapshot_count": sum(1 for _ in image.list_snaps()),
                "block_name_prefix": str(stat["block_name_prefix"]), "format": 1 if image.old_format() else 2,
                "features": _names(image.features(), _FEATURES),
                "op_features": _names(image.op_features(), _OP_FEATURES),
                "flags": _names(image.flags(), _IMAGE_FLAGS),
                "create_timestamp": _ctime(image.create_timestamp()),
                "access_timestamp": _ctime(image.access_timestamp()),
                "modify_timestamp": _ctime(image.modify_timestamp()),
            }

    @staticmethod
    def _check_size(what: str, size: int) -> None:
        if size < 1:
            raise StorageError(f"{what}: invalid size {size} (must be at least 1 byte)")

    def create_volume(self, pool: str, name: str, size: int) -> None:
        import rbd

        what = f"volume {pool}/{name}"
        self._check_size(what, size)
        with self._ioctx(pool) as ioctx, self._call(what):
            rbd.RBD().create(ioctx, name, size, old_format=False)

    def resize_volume(self, pool: str, name: str, size: int) -> None:
        what = f"volume {pool}/{name}"
        self._check_size(what, size)
        with self._image(pool, name) as image, self._call(what):
            image.resize(size)

    def rename_volume(self, pool: str, name: str, new_name: str) -> None:
        import rbd

        what = f"volume {pool}/{name}"
        with self._ioctx(pool) as ioctx, self._call(what, exists=f"volume {pool}/{new_name}: already exists"):
            rbd.RBD().rename(ioctx, name, new_name)

    def copy_volume(self, pool: str, name: str, new_name: str) -> None:
        what = f"volume {pool}/{name}"
        with self._image(pool, name, read_only=True, with_ioctx=True) as (ioctx, image), \
                self._call(what, exists=f"volume {pool}/{new_name}: already exists"):
            image.copy(ioctx, new_name)

    def remove_volume(self, pool: str, name: str) -> None:
        import rbd

        what = f"volume {pool}/{name}"
        # refuse before purging anything: a watcher (a running VM) makes the final remove fail.
        # One read-only open answers both questions (each open is a few round trips).
        with self._image(pool, name, read_only=True) as image, self._call(what):
            watchers = [str(w["addr"]) for w in image.watchers_list()]
            has_snaps = any(True for _ in image.list_snaps())
        if watchers:
            raise StorageError(f"{what}: in use (watched by {', '.join(watchers)})")
        if has_snaps:
            with self._image(pool, name, with_ioctx=True) as (ioctx, image), self._call(what):
                for snap in list(image.list_snaps()):
                    if image.is_protected_snap(snap["name"]):
                        image.unprotect_snap(snap["name"])
                    image.remove_snap(snap["name"])
        # Into the RBD trash (a third of the time of a remove, which trims the image's objects
        # and metadata one by one); the primary's stats pass empties the trash every keepalive,
        # and the trash survives any crash in between, as Ceph's rbd_move_to_trash_on_remove.
        with self._ioctx(pool) as ioctx, self._call(what, busy=f"{what}: in use (it has watchers)"):
            rbd.RBD().trash_move(ioctx, name, 0)

    def purge_trash(self, pool: str) -> int:
        import rbd

        removed = 0
        with self._ioctx(pool) as ioctx, self._call(f"trash of pool {pool}"):
            for entry in list(rbd.RBD().trash_list(ioctx)):
                if entry.get("source") not in ("USER", "REMOVING"):
                    continue          # migration/mirroring entries belong to their own workflows
                try:
                    rbd.RBD().trash_remove(ioctx, entry["id"], force=True)
                    removed += 1
                except (rbd.ImageNotFound, rbd.ImageBusy):
                    continue
        return removed

    def write_volume(self, pool: str, name: str, source: BinaryIO, chunk: int = 4 << 20) -> int:
        what = f"volume {pool}/{name}"
        with self._image(pool, name) as image, self._call(what):
            size = image.size()
            offset = 0
            while block := source.read(chunk):
                if offset + len(block) > size:
                    raise StorageError(f"{what}: the data is larger than the volume ({size} bytes)")
                image.write(block, offset)
                offset += len(block)
            image.flush()
            return offset

    def convert_into_volume(self, pool: str, name: str, path: str, image_format: str) -> None:
        what = f"volume {pool}/{name}"
        if image_format not in IMAGE_FORMATS:
            raise StorageError(f"{what}: unknown image format {image_format!r} "
                               f"(one of {', '.join(IMAGE_FORMATS)})")
        if not os.path.isfile(path):
            raise StorageError(f"{what}: cannot convert {path}: no such file")
        size = self.volume_info(pool, name)["size"]
        virtual = _qemu_img_virtual_size(what, path, image_format)
        if virtual > size:
            raise StorageError(f"{what}: the image {path} is larger than the volume "
                               f"({virtual} > {size} bytes)")
        # the keyring is a file path: no secret ever appears on a command line
        parts = ["rbd", f"{_qemu_rbd_escape(pool)}/{_qemu_rbd_escape(name)}",
                 f"id={_qemu_rbd_escape(self.client_user)}", f"conf={_qemu_rbd_escape(self.conffile)}"]
        if os.path.exists(self.keyring):
            parts.append(f"keyring={_qemu_rbd_escape(self.keyring)}")
        target = ":".join(parts)
        cmd = ["qemu-img", "convert", "-f", image_format, "-O", "raw", "-n", path, target]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=None, check=False)
        except OSError as exc:
            raise StorageError(f"{what}: cannot run qemu-img: {exc}") from None
        if done.returncode != 0:
            raise StorageError(f"{what}: qemu-img convert of {path} failed: "
                               f"{(done.stderr or done.stdout).strip() or f'exit code {done.returncode}'}")

    def watchers(self, pool: str, name: str) -> list[str]:
        with self._image(pool, name, read_only=True) as image, self._call(f"volume {pool}/{name}"):
            return [str(w["addr"]) for w in image.watchers_list()]

    def lockers(self, pool: str, name: str) -> list[Locker]:
        with self._image(pool, name, read_only=True) as image, self._call(f"volume {pool}/{name}"):
            found = image.list_lockers()
            if not found:
                return []
            return [Locker(str(client), str(cookie), str(address))
                    for client, cookie, address in found["lockers"]]

    def break_lock(self, pool: str, name: str, locker: Locker) -> None:
        """Remove a lock; librbd also blocklists its holder (rbd_blocklist_on_break_lock)."""
        what = f"volume {pool}/{name}"
        with self._image(pool, name) as image, self._call(
                what, missing=f"{what}: lock {locker.client} {locker.cookie!r}: not found"):
            image.break_lock(locker.client, locker.cookie)

    # ---- snapshots ---------------------------------------------------------------------------

    def list_snapshots(self, pool: str, volume: str) -> list[str]:
        with self._image(pool, volume, read_only=True) as image, self._call(f"volume {pool}/{volume}"):
            return [str(s["name"]) for s in sorted(image.list_snaps(), key=lambda s: s["id"])]

    def create_snapshot(self, pool: str, volume: str, name: str) -> None:
        what = f"snapshot {pool}/{volume}@{name}"
        with self._image(pool, volume) as image, self._call(what):
            image.create_snap(name)

    def rename_snapshot(self, pool: str, volume: str, name: str, new_name: str) -> None:
        what = f"snapshot {pool}/{volume}@{name}"
        with self._image(pool, volume) as image, self._call(
                what, exists=f"snapshot {pool}/{volume}@{new_name}: already exists"):
            image.rename_snap(name, new_name)

    def rollback_snapshot(self, pool: str, volume: str, name: str) -> None:
        what = f"snapshot {pool}/{volume}@{name}"
        with self._image(pool, volume) as image, self._call(what):
            image.rollback_to_snap(name)

    def remove_snapshot(self, pool: str, volume: str, name: str) -> None:
        what = f"snapshot {pool}/{volume}@{name}"
        with self._image(pool, volume) as image, self._call(what):
            if image.is_protected_snap(name):
                image.unprotect_snap(name)
            image.remove_snap(name)


def _qemu_img_virtual_size(what: str, path: str, image_format: str) -> int:
    cmd = ["qemu-img", "info", "-f", image_format, "--output", "json", path]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StorageError(f"{what}: cannot run qemu-img info: {exc}") from None
    if done.returncode != 0:
        raise StorageError(f"{what}: qemu-img cannot read {path} as {image_format}: {done.stderr.strip()}")
    try:
        return int(json.loads(done.stdout)["virtual-size"])
    except (ValueError, KeyError) as exc:
        raise StorageError(f"{what}: qemu-img info of {path}: unreadable answer ({exc})") from None


_SHARED: dict[tuple[str, str, float, str], CephStorage] = {}
_SHARED_LOCK = threading.Lock()


def storage_from_settings(settings: Any, shared: bool = True) -> CephStorage:
    """The one constructor of the Ceph adapter from a node's settings (`settings.storage`).

    shared: one client per configuration and process (librados connects lazily and is
    thread-safe), so the API, the worker and the node's services do not each open their own;
    shared=False gives a private client (the HA monitor's fence path must not queue behind a
    client stuck on an unreachable cluster).
    """
    cfg = settings.storage
    key = (cfg.ceph_config_file, cfg.ceph_keyring_file, float(cfg.timeout), cfg.client_user)
    if not shared:
        return CephStorage(*key)
    with _SHARED_LOCK:
        storage = _SHARED.get(key)
        if storage is None:
            storage = _SHARED[key] = CephStorage(*key)
        return storage


def close_shared() -> None:
    """Close and forget every shared client (tests that tear their Ceph cluster down)."""
    with _SHARED_LOCK:
        for storage in _SHARED.values():
            storage.close()
        _SHARED.clear()
