"""Runs pvcapid on the primary coordinator only, as upstream PVC does.

The API is stateless, so it simply follows the primary role: started on takeover, stopped on
relinquish and shutdown, restarted (with back-off) if it dies while this node is primary.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from pvc.adapters.process import ChildProcess
from pvc.core.config import Settings

log = logging.getLogger(__name__)

# A pvcapid that ran this long before it died was not crash-looping: its restart starts over at 1 s.
STABLE_AFTER = 60.0


def restart_delay(delay: float, ran_for: float) -> float:
    """How long to wait before restarting a pvcapid that ran `ran_for` seconds; `delay` grows while
    it crash-loops (doubled after each restart, capped at 30 s)."""
    return 1.0 if ran_for >= STABLE_AFTER else delay


class ApiService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: ChildProcess | None = None
        self.wanted = False
        self._started = 0.0
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            self.wanted = True
            self._spawn()
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._watch, name="apiservice", daemon=True)
            self._monitor.start()

    def _spawn(self) -> None:
        if self.proc and self.proc.running():
            return
        self.proc = ChildProcess("pvc.api.daemon", {"PVC_CONFIG_FILE": self.settings.source},
                                 Path(self.settings.path.system_log_directory) / "pvcapid.log")
        self.proc.start()
        self._started = time.monotonic()
        log.info("started pvcapid (pid %d)", self.proc.pid)

    def _watch(self) -> None:
        delay = 1.0
        while True:
            proc = self.proc
            if proc is not None:
                code = proc.wait()
                delay = restart_delay(delay, time.monotonic() - self._started)
                with self._lock:
                    if not self.wanted or proc is not self.proc:
                        delay = 1.0
                        threading.Event().wait(0.5)
                        continue
                    log.warning("pvcapid exited with %s; restarting in %.0fs", code, delay)
                threading.Event().wait(delay)
                delay = min(delay * 2, 30.0)            # the next one, if this one crashes again soon
                with self._lock:
                    if self.wanted:
                        self._spawn()
            else:
                threading.Event().wait(0.5)

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self.wanted = False
            proc = self.proc
        if proc and proc.running():
            proc.stop(timeout)
            log.info("stopped pvcapid")
