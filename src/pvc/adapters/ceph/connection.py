"""The librados client behind CephStorage: connected lazily, shared by threads, replaced when its
session breaks, and librados/librbd errors mapped to StorageErrors naming the object."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pvc.adapters.ceph.base import (
    StorageError,
    StorageExists,
    StorageInUse,
    StorageNotFound,
    StorageUnavailable,
)

log = logging.getLogger(__name__)

# errnos meaning "our session is gone" (108: EBLOCKLISTED = ESHUTDOWN on Linux): reconnect
_BROKEN = {errno.ESHUTDOWN, errno.ENOTCONN, 108}
# errnos meaning "the cluster did not answer", not "the request is bad"
_UNAVAILABLE = {errno.ETIMEDOUT, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.EINTR, errno.ECANCELED}


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    return abs(code) if isinstance(code, int) else None


class CephConnection:
    """The connection core of CephStorage: one shared, lazily connected librados client.

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
        # The address Ceph shows for this client's watches and locks (`rbd status`, blocklist):
        # with it in the log, an image held open can be traced to the process that holds it.
        try:
            log.info("Ceph client %s (pid %d) connected from %s", cluster.get_instance_id(), os.getpid(),
                     cluster.get_addrs())
        except Exception:   # informational only: never fail a connection over it
            pass
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
                raise StorageInUse(busy) from None
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
