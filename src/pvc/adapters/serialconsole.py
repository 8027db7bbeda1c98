"""A VM's serial console, interactive: libvirt's console stream on the libvirtd of the node that
runs the VM (the web UI's serial console; DESIGN D17).

pvcapid opens the node's libvirt URI as the node published it for migrations
(`libvirt_migration_uri` in the node document: qemu+tls with the cluster's client certificate), so
no new port or credential exists for consoles. The stream is opened with FORCE: a second browser
takes the console over from the first (as `virsh console --force`), the node's console log (the
serial port's <log> file, pvc.node.console) is unaffected.

The calls block: callers run `recv` in one thread and `send` from another (libvirt's remote
streams allow that), and `close` from any.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any


class ConsoleUnavailable(Exception):
    """The console cannot be opened or broke; the message names the VM, the node's URI and why."""


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError as exc:
        raise ConsoleUnavailable("python3-libvirt is not installed on this pvcapid's host") from exc
    with contextlib.suppress(Exception):
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


class SerialConsole:
    """One open console stream of one domain (by UUID) on one libvirtd."""

    def __init__(self, uri: str, uuid: str) -> None:
        self.uri, self.uuid = uri, uuid
        self._lv = _libvirt()
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._conn = self._lv.open(uri)
        except self._lv.libvirtError as exc:
            raise ConsoleUnavailable(f"cannot reach libvirt at {uri}: {exc.get_error_message()}") from None
        try:
            domain = self._conn.lookupByUUIDString(uuid)
            self._stream = self._conn.newStream(0)
            domain.openConsole(None, self._stream, self._lv.VIR_DOMAIN_CONSOLE_FORCE)
        except self._lv.libvirtError as exc:
            with contextlib.suppress(Exception):
                self._conn.close()
            raise ConsoleUnavailable(f"no console of VM {uuid} at {uri}: {exc.get_error_message()}") from None

    def recv(self, size: int = 4096) -> bytes:
        """Up to `size` bytes of the guest's output (blocks); b"" when the console ended."""
        try:
            data = self._stream.recv(size)
        except self._lv.libvirtError as exc:
            if self._closed:
                return b""
            raise self._broken(exc) from None
        if isinstance(data, int):          # -2: would block (not for a blocking stream); treat as end
            return b""
        return bytes(data)

    def send(self, data: bytes) -> None:
        """Type `data` into the guest's serial port."""
        try:
            while data:
                sent = self._stream.send(data)
                if sent < 0:
                    raise ConsoleUnavailable(f"console of VM {self.uuid} at {self.uri}: not writable")
                data = data[sent:]
        except self._lv.libvirtError as exc:
            raise self._broken(exc) from None

    def _broken(self, exc: Any) -> ConsoleUnavailable:
        return ConsoleUnavailable(f"console of VM {self.uuid} at {self.uri}: {exc.get_error_message()}")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(Exception):
            self._stream.abort()
        with contextlib.suppress(Exception):
            self._conn.close()
