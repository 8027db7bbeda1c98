"""The metrics cache: a scrape costs a copy of bytes, not a walk of the cluster.

Upstream rebuilt every node, VM, OSD and pool listing on every scrape. Here one build (collect +
render) serves every scrape for `interval` seconds; after that the next scrape still gets the
last build at once while one background thread makes the next (so no scrape waits for a build
unless the last one is older than `max_stale`, e.g. the first after a start). A build is skipped
when the API's watch caches (nodes, VMs, VM stats) have not moved and the last build is younger
than `idle_refresh` (faults, OSDs and pools are not watched: they are re-read at least that
often). Unchanged VMs keep their rendered lines between builds (resource.render_vms).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pvc.cluster.metrics.collect import CollectMemo, collect
from pvc.cluster.metrics.health import render_health
from pvc.cluster.metrics.resource import VMMemo, render_resource
from pvc.core import schema
from pvc.core.zk import ZK

log = logging.getLogger(__name__)

INTERVAL = 2.0  # seconds a build is served before a newer one is made
MAX_STALE = 30.0  # older than this, a scrape waits for a fresh build
IDLE_REFRESH = 10.0  # rebuild at least this often even when the watch caches stand still
WATCHED = (schema.NODES, schema.VMS, schema.VM_STATS)

T = TypeVar("T")


@dataclass(frozen=True)
class Build:
    health: bytes
    resource: bytes
    built: float  # time.monotonic() when it was made
    generations: tuple[int, ...] | None
    seconds: float  # how long the build took


class Refreshing(Generic[T]):
    """A value made by `make`, served for `ttl` seconds, then remade in the background while the
    old one is still served (up to `max_stale`); one maker at a time."""

    def __init__(self, make: Callable[[], T], ttl: float, max_stale: float, background: bool = True) -> None:
        self.make, self.ttl, self.max_stale, self.background = make, ttl, max_stale, background
        self._value: tuple[float, T] | None = None
        self._lock = threading.Lock()
        self._running = False

    def _remake(self) -> T:
        value = self.make()
        self._value = (time.monotonic(), value)
        return value

    def _background(self) -> None:
        try:
            with self._lock:
                self._remake()
        except Exception:
            log.exception("metrics: background refresh failed; serving the previous value")
        finally:
            self._running = False

    def get(self) -> T:
        held = self._value
        now = time.monotonic()
        if held is not None and now - held[0] < self.ttl:
            return held[1]
        if held is not None and self.background and now - held[0] < self.max_stale:
            if not self._running:
                self._running = True
                threading.Thread(target=self._background, daemon=True, name="metrics-refresh").start()
            return held[1]
        with self._lock:
            held = self._value
            if held is not None and time.monotonic() - held[0] < self.ttl:
                return held[1]
            return self._remake()


class MetricsCache:
    """Health and resource text of one ZooKeeper session's cluster."""

    def __init__(
        self,
        zk: ZK,
        interval: float = INTERVAL,
        max_stale: float = MAX_STALE,
        idle_refresh: float = IDLE_REFRESH,
        background: bool = True,
    ) -> None:
        self.zk = zk
        self.idle_refresh = idle_refresh
        self._collect_memo = CollectMemo()
        self._vm_memo: VMMemo = {}
        self._last: Build | None = None
        self._value = Refreshing(self._build, interval, max_stale, background)

    def _generations(self) -> tuple[int, ...] | None:
        out = []
        for path in WATCHED:
            mirror = self.zk.live_cache(path)
            if mirror is None:
                return None
            out.append(mirror.generation)
        return tuple(out)

    def _build(self) -> Build:
        generations = self._generations()
        last = self._last
        if (
            last is not None
            and generations is not None
            and generations == last.generations
            and time.monotonic() - last.built < self.idle_refresh
        ):
            return last  # nothing watched moved: the last build still holds
        began = time.monotonic()
        data = collect(self.zk, self._collect_memo)
        health = render_health(data).encode()
        resource = render_resource(data, self._vm_memo).encode()
        build = Build(health, resource, time.monotonic(), generations, time.monotonic() - began)
        self._last = build
        return build

    def get(self) -> Build:
        return self._value.get()
