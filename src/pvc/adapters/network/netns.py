"""Acting inside a named network namespace: a setns()ed thread for Python code, `ip netns exec`
for programs, and sysctl writes (which /proc/sys answers for the caller's namespace)."""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from pvc.adapters.network.base import NetworkError

_NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000

T = TypeVar("T")


def netns_path(netns: str) -> Path:
    """The bind mount of a named namespace (`ip netns add`); NetworkError if there is none."""
    path = _NETNS_DIR / netns
    if "/" in netns or not path.exists():
        raise NetworkError(f"network namespace '{netns}' does not exist")
    return path


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Run fn inside a named namespace: in a short-lived thread that setns()es first (a network
    namespace switch affects only the calling thread), so sockets it opens and /proc/sys files it
    writes belong to that namespace while the rest of the process stays where it is."""
    if netns is None:
        return fn()
    path = netns_path(netns)
    result: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if _libc().setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise NetworkError(f"setns {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as e:   # re-raised in the caller's thread
            errors.append(e)

    thread = threading.Thread(target=run, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def netns_argv(netns: str | None, argv: Sequence[str]) -> list[str]:
    """`ip netns exec` execs the program after setns, so the pid stays the program's."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def write_sysctl(key: str, value: str) -> None:
    """Write one sysctl (dotted key) of the calling thread's namespace."""
    if not key or any(part in ("", ".", "..") for part in key.split(".")) or "/" in key:
        raise NetworkError(f"sysctl {key}: not a sysctl key")
    try:
        Path("/proc/sys", *key.split(".")).write_text(value)
    except OSError as e:
        raise NetworkError(f"sysctl {key}={value}: {e.strerror or e}") from None
