"""Live migration over libvirt: peer-to-peer, watched for progress and aborted after a timeout."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from pvc.adapters.hypervisor.base import (
    ACTIVE_STATES,
    DomainExists,
    DomainNotFound,
    HypervisorError,
    HypervisorUnavailable,
    MigrationResult,
    state_name,
)
from pvc.adapters.hypervisor.domxml import disks_need_unsafe, normalize_uuid
from pvc.adapters.hypervisor.stats import LibvirtStats


class LibvirtMigration(LibvirtStats):
    """The migration side of LibvirtHypervisor (a migrated domain's cached NIC map is dropped)."""

    migration_poll_s = 0.5        # how often a running migration is watched (progress, timeout)

    def migrate(self, uuid: str, dest_uri: str, dest_migration_uri: str | None = None,
                max_downtime_ms: int = 300, live: bool = True, timeout: float = 120.0,
                progress: Callable[[dict[str, int]], None] | None = None,
                encrypted: bool = False) -> MigrationResult:
        """Peer-to-peer migration: our libvirtd dials `dest_uri` itself and drives both sides.

        Flags: PEER2PEER (only the two libvirtds talk; we just watch), LIVE unless `live=False`
        (then the guest pauses for the whole copy), UNSAFE only when disks_need_unsafe(), TLS
        when `encrypted`. No
        PERSIST_DEST/UNDEFINE_SOURCE: domains are transient on both ends. The max downtime is set
        on the domain first (QEMU's downtime-limit); the downtime reported is what libvirt measured,
        read from the destination's completed-job statistics, so this process must be able to
        reach `dest_uri` too (it also confirms the domain runs there). One attempt: the caller
        decides about retries (upstream: up to 3 live attempts, then maybe a shutdown move).
        """
        lv = self._lv
        uuid = normalize_uuid(uuid)
        what = f"migrate {uuid} to {dest_uri}"
        if max_downtime_ms < 1:
            raise HypervisorError(f"{what}: max downtime must be at least 1 ms")

        def prepare(conn: Any) -> tuple[Any, str]:
            dom = self._lookup(conn, uuid)
            if state_name(dom.state()[0]) not in ACTIVE_STATES:
                raise DomainNotFound(f"{what}: the domain is not running on {self.uri}")
            return dom, dom.XMLDesc(0)

        dom, xml = self._act(what, prepare)
        flags = lv.VIR_MIGRATE_PEER2PEER
        if live:
            flags |= lv.VIR_MIGRATE_LIVE
        if disks_need_unsafe(xml):
            flags |= lv.VIR_MIGRATE_UNSAFE
        if encrypted:
            # QEMU's stream over TLS; libvirt fails the migration rather than send it in clear.
            flags |= lv.VIR_MIGRATE_TLS
        params = {lv.VIR_MIGRATE_PARAM_URI: dest_migration_uri} if dest_migration_uri else {}
        with self._remote(dest_uri, what) as dest:
            try:
                if self._lookup(dest, uuid).isActive() == 1:
                    raise DomainExists(f"{what}: the domain already runs on the destination")
            except lv.libvirtError as exc:
                if exc.get_error_code() != lv.VIR_ERR_NO_DOMAIN:
                    raise self._error(exc, f"{what} (checking the destination)") from None
            self._act(f"{what}: set max downtime {max_downtime_ms} ms",
                      lambda _conn: dom.migrateSetMaxDowntime(max_downtime_ms, 0))
            started = time.monotonic()
            self._run_migration(dom, dest_uri, params, flags, timeout, progress, what)
            duration = time.monotonic() - started
            try:
                moved = self._lookup(dest, uuid)
                if moved.isActive() != 1:
                    raise HypervisorError(f"{what}: libvirt reported success but the domain is not "
                                          "running on the destination")
                job = {k: v for k, v in moved.jobStats(lv.VIR_DOMAIN_JOB_STATS_COMPLETED).items()
                       if isinstance(v, int | float)}
            except lv.libvirtError as exc:
                if exc.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
                    raise HypervisorError(f"{what}: libvirt reported success but the destination "
                                          "has no such domain") from None
                job = {}        # stats unavailable (older destination): the move itself worked
        self._nic_bridges.pop(uuid, None)
        downtime = job.get("downtime")
        return MigrationResult(duration_s=duration, downtime_ms=int(downtime) if downtime is not None
                               else None, details=job)

    @contextlib.contextmanager
    def _remote(self, uri: str, what: str) -> Iterator[Any]:
        try:
            conn = self._lv.open(uri)
        except self._lv.libvirtError as exc:
            raise HypervisorUnavailable(f"{what}: cannot connect to the destination: "
                                        f"{exc.get_error_message()}", exc.get_error_code()) from None
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def _run_migration(self, dom: Any, dest_uri: str, params: dict[str, Any], flags: int,
                       timeout: float, progress: Callable[[dict[str, int]], None] | None,
                       what: str) -> None:
        """migrateToURI3 in this thread; a watcher reports progress and aborts after `timeout`."""
        lv = self._lv
        done = threading.Event()
        timed_out = threading.Event()

        def watch() -> None:
            deadline = time.monotonic() + timeout
            while not done.wait(self.migration_poll_s):
                if progress is not None:
                    with contextlib.suppress(Exception):
                        job = dom.jobStats(0)
                        progress({k: int(job[k]) for k in ("time_elapsed", "data_total",
                                  "data_processed", "data_remaining", "memory_iteration")
                                  if k in job})
                if time.monotonic() >= deadline:
                    timed_out.set()
                    with contextlib.suppress(Exception):
                        dom.abortJob()
                    return

        watcher = threading.Thread(target=watch, name="pvc-migration-watch", daemon=True)
        watcher.start()
        try:
            dom.migrateToURI3(dest_uri, params, flags)
        except lv.libvirtError as exc:
            if timed_out.is_set():
                raise HypervisorError(f"{what}: not finished after {timeout:g}s, aborted; the domain "
                                      "keeps running here", exc.get_error_code()) from None
            conn = self._connection()
            if self._broken(conn, exc):
                self._drop(conn)
                raise HypervisorUnavailable(f"{what}: connection to {self.uri} lost during the "
                                            "migration; check where the domain runs") from None
            raise self._error(exc, what) from None
        finally:
            done.set()
            watcher.join()
