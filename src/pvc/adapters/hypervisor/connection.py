"""One node's libvirt connection: opened lazily, shared by threads, errors mapped to HypervisorErrors.

Connection handling: one connection, opened on first use and shared by all threads (libvirt
connections are thread-safe; the lock only guards opening and replacing it). Reads that fail
because the connection broke are retried once on a fresh connection. Actions are not retried
(a start that may have happened must not happen twice): they check the connection with a
cheap call first, and if it breaks mid-action they raise HypervisorUnavailable so the
reconciler looks again.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pvc.adapters.hypervisor.base import DomainNotFound, HypervisorError, HypervisorUnavailable, Unsupported

T = TypeVar("T")


def _import_libvirt() -> Any:
    try:
        import libvirt
    except ImportError as exc:
        raise HypervisorUnavailable("python3-libvirt is not installed") from exc
    return libvirt


_quiet_lock = threading.Lock()
_quieted = False


def _quiet_libvirt(lv: Any) -> None:
    """Stop libvirt printing every error to stderr: we raise them as exceptions instead."""
    global _quieted
    with _quiet_lock:
        if not _quieted:
            lv.registerErrorHandler(lambda _ctx, _err: None, None)
            _quieted = True


class LibvirtConnection:
    """The connection core of LibvirtHypervisor: `_read` for calls without side effects, `_act`
    for calls with them; both raise HypervisorErrors naming the operation."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._lv = _import_libvirt()
        _quiet_libvirt(self._lv)
        self._lock = threading.RLock()
        self._conn: Any = None

    def _connection(self, check: bool = False) -> Any:
        with self._lock:
            if self._conn is not None and check:
                try:
                    alive = self._conn.isAlive() == 1 and self._conn.getLibVersion() > 0
                except self._lv.libvirtError:
                    alive = False
                if not alive:
                    self._drop(self._conn)
            if self._conn is None:
                try:
                    self._conn = self._lv.open(self.uri)
                except self._lv.libvirtError as exc:
                    raise HypervisorUnavailable(f"cannot connect to libvirt at {self.uri}: "
                                                f"{exc.get_error_message()}", exc.get_error_code()) from None
            return self._conn

    def _drop(self, conn: Any) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
        with contextlib.suppress(Exception):
            conn.close()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._drop(self._conn)

    def _broken(self, conn: Any, exc: Any) -> bool:
        lv = self._lv
        if exc.get_error_code() in (lv.VIR_ERR_NO_CONNECT, lv.VIR_ERR_INVALID_CONN):
            return True
        try:
            return conn.isAlive() != 1
        except Exception:
            return True

    def _error(self, exc: Any, what: str) -> HypervisorError:
        lv = self._lv
        code, message = exc.get_error_code(), exc.get_error_message() or str(exc)
        if code == lv.VIR_ERR_NO_DOMAIN:
            return DomainNotFound(f"{what}: no such domain on {self.uri}", code)
        if code in (lv.VIR_ERR_NO_SUPPORT, lv.VIR_ERR_ARGUMENT_UNSUPPORTED):
            return Unsupported(f"{what}: not supported by {self.uri}: {message}", code)
        return HypervisorError(f"{what}: {message}", code)

    def _read(self, what: str, fn: Callable[[Any], T]) -> T:
        """A call without side effects: retried once on a fresh connection if the old one broke."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                return fn(conn)
            except self._lv.libvirtError as exc:
                if self._broken(conn, exc):
                    self._drop(conn)
                    if attempt == 1:
                        continue
                    raise HypervisorUnavailable(f"{what}: connection to {self.uri} lost: "
                                                f"{exc.get_error_message()}") from None
                raise self._error(exc, what) from None
        raise AssertionError("unreachable")

    def _act(self, what: str, fn: Callable[[Any], T]) -> T:
        """A call with side effects: never retried; a broken connection means "outcome unknown"."""
        conn = self._connection(check=True)
        try:
            return fn(conn)
        except self._lv.libvirtError as exc:
            if self._broken(conn, exc):
                self._drop(conn)
                raise HypervisorUnavailable(f"{what}: connection to {self.uri} lost during the call "
                                            f"({exc.get_error_message()}); check the domain again") from None
            raise self._error(exc, what) from None

    def _lookup(self, conn: Any, uuid: str) -> Any:
        return conn.lookupByUUIDString(uuid)
