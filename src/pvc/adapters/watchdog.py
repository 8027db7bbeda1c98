"""The Linux hardware watchdog (`/dev/watchdog`): resets the machine unless it is petted in time.

The node daemon pets it only while its ZooKeeper session is healthy (pvc.node.selffence), so a node
whose daemon hangs or dies, and so can no longer destroy its own VMs, is reset by the hardware
before the cluster restarts those VMs elsewhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading

log = logging.getLogger("pvcnoded.watchdog")

WDIOC_SETTIMEOUT = 0xC0045706      # _IOWR('W', 6, int)
MAGIC_CLOSE = b"V"                 # written before close: a clean stop disarms the watchdog


class Watchdog:
    """One open watchdog device. Every method may be called again (idempotent) and from any thread."""

    def __init__(self, device: str, timeout: int) -> None:
        self.device = device
        self.timeout = timeout
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pet_failing = False

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def open(self) -> None:
        """Open (which arms it) and set the timeout; OSError when the device cannot be opened."""
        with self._lock:
            if self._fd is not None:
                return
            self._fd = os.open(self.device, os.O_WRONLY | os.O_CLOEXEC)
            self._pet_failing = False
            try:
                # The driver may round the timeout; it writes back the one it set.
                arg = bytearray(struct.pack("i", self.timeout))
                fcntl.ioctl(self._fd, WDIOC_SETTIMEOUT, arg, True)
                log.info("watchdog %s armed, timeout %ds", self.device, struct.unpack("i", arg)[0])
            except OSError as exc:
                log.warning("watchdog %s: cannot set the timeout to %ds (%s); the device's own "
                            "timeout applies", self.device, self.timeout, exc)

    def pet(self) -> None:
        """Postpone the reset by one timeout. A failure is logged (once until it works again), not
        raised: the caller's loop must go on, and the hardware acts if petting keeps failing."""
        with self._lock:
            if self._fd is None:
                return
            try:
                os.write(self._fd, b"\0")
            except OSError as exc:
                if not self._pet_failing:
                    log.error("watchdog %s: cannot pet it: %s", self.device, exc)
                self._pet_failing = True
            else:
                if self._pet_failing:
                    log.info("watchdog %s: petting works again", self.device)
                self._pet_failing = False

    def close(self) -> None:
        """Disarm (the magic close) and close: a clean daemon stop must not reset the node."""
        with self._lock:
            if self._fd is None:
                return
            fd, self._fd = self._fd, None
            try:
                os.write(fd, MAGIC_CLOSE)
            except OSError as exc:
                log.error("watchdog %s: cannot disarm it: %s", self.device, exc)
            with contextlib.suppress(OSError):
                os.close(fd)
            log.info("watchdog %s closed", self.device)
