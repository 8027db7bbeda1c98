"""The node daemon's storage work: direct-mode OSDs at start, and per keepalive the libvirt
ceph secret (every node), this node's Ceph client addresses (what fencing blocklists) and, on
the primary, the Ceph stats pass (`StorageMonitor`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kazoo.exceptions import KazooException

from pvc.adapters.ceph import StorageError
from pvc.adapters.hypervisor import HypervisorError
from pvc.core.config import Settings
from pvc.core.errors import ClusterUnavailable
from pvc.node.storage import NodeCeph, StorageMonitor

log = logging.getLogger("pvcnoded")


class StorageService:
    def __init__(self, settings: Settings, ceph: NodeCeph | None, monitor: StorageMonitor | None,
                 is_primary: Callable[[], bool], stopping: threading.Event) -> None:
        self.settings, self.ceph, self.monitor = settings, ceph, monitor
        self.is_primary, self.stopping = is_primary, stopping
        self.interval = settings.timer.keepalive_interval
        self.worker: threading.Thread | None = None
        self.client_addresses: list[str] | None = None   # published in the node document once known
        self._started = 0.0
        self._errors: dict[str, str] = {}

    def start_direct_osds(self) -> None:
        """Without systemd nothing else brings this node's OSDs back after a reboot: start the
        direct-mode OSDs that have a data dir here and are not running (a no-op for running ones)."""
        if not self.settings.subsystem.enable_storage or self.settings.storage.osd_service != "direct":
            return
        from pvc.adapters.osd import OsdError, service_for

        service = service_for(self.settings)
        for osd_id in service.known_osds():  # type: ignore[attr-defined]
            if service.running(osd_id):
                continue
            try:
                service.start(osd_id)
                log.info("started OSD %d (direct mode)", osd_id)
            except OsdError as exc:
                log.error("could not start OSD %d: %s", osd_id, exc)

    def keepalive(self) -> None:
        """Storage work of this keepalive, in its own thread: the ceph secret until it is defined
        (every node), the Ceph stats pass (primary). The keepalive never waits for it, so a hung
        Ceph cannot delay the node's keepalive; a pass still running is not started again."""
        ceph = self.ceph
        if ceph is None or self.stopping.is_set():
            return
        worker = self.worker
        if worker is not None and worker.is_alive():
            running = time.monotonic() - self._started
            if running > 3 * self.interval:
                log.warning("storage keepalive still running after %.0fs (Ceph not answering?)", running)
            return
        need_secret = ceph.hypervisor is not None and not ceph.secret_ready
        monitor = self.monitor if self.is_primary() else None
        if not need_secret and monitor is None and self.client_addresses is not None:
            return

        def run() -> None:
            if self.client_addresses is None:
                try:
                    self.client_addresses = ceph.client_addresses()
                except (StorageError, OSError) as exc:
                    log.debug("Ceph client addresses not known yet: %s", exc)
            if need_secret:
                try:
                    ceph.ensure_secret()
                    self._problem("secret", "")
                except (StorageError, HypervisorError, OSError) as exc:
                    self._problem("secret", f"cannot define the libvirt ceph secret: {exc}")
            if monitor is not None:
                try:
                    monitor.run_once()
                    self._problem("stats", "")
                except (StorageError, ClusterUnavailable, KazooException) as exc:
                    self._problem("stats", f"storage stats pass failed: {exc}")
                except Exception:
                    log.exception("storage stats pass failed")

        self._started = time.monotonic()
        self.worker = threading.Thread(target=run, name="storage-keepalive", daemon=True)
        self.worker.start()

    def _problem(self, kind: str, message: str) -> None:
        """Log a storage failure when it starts or changes (not every keepalive while it lasts),
        and its end; `message` "" means that kind of work succeeded."""
        before = self._errors.get(kind, "")
        if message and message != before:
            log.warning("%s (retrying every keepalive)", message)
        elif before and not message:
            log.info("storage %s: working again", kind)
        self._errors[kind] = message

    def close(self) -> None:
        if self.ceph is not None:
            try:
                self.ceph.close()
            except Exception:
                log.exception("could not close the Ceph connection")
