"""The primary coordinator role: the election (`pvc.node.election`) and what taking over and
handing over mean on this node (hooks of the subsystems, the node document, `/primary_node`).

Only a healthy daemon is (or stays) primary: one whose keepalive is stuck steps down, so a
healthy coordinator takes over and fences this node if it stays stuck.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import KazooException, NoNodeError

from pvc.cluster.clusterinfo import ensure_cluster
from pvc.core import schema
from pvc.core.config import Settings
from pvc.core.errors import ClusterUnavailable
from pvc.core.zk import ZK
from pvc.node.election import PRIMARY_LEASE, PrimaryElection, deposed_for_hang
from pvc.node.services.nodedoc import NodeDocument

log = logging.getLogger("pvcnoded")

Hook = Callable[[], None]


class PrimaryRole:
    def __init__(self, settings: Settings, zk: ZK, doc: NodeDocument, stopping: threading.Event,
                 last_keepalive: Callable[[], float]) -> None:
        self.settings, self.zk, self.doc, self.stopping = settings, zk, doc, stopping
        self.name = settings.node_name
        self.interval = settings.timer.keepalive_interval
        self.last_keepalive = last_keepalive     # monotonic time of the last successful keepalive
        self.election: PrimaryElection | None = None
        # Subsystems register what must happen on primary changes.
        self.takeover_hooks: list[Hook] = []     # before anything else on becoming primary
        self.primary_hooks: list[Hook] = []
        self.secondary_hooks: list[Hook] = []

    @property
    def is_primary(self) -> bool:
        return self.election is not None and self.election.is_primary

    def start(self) -> None:
        self.election = PrimaryElection(self.zk, self.name, self._may_contend, self._become_primary,
                                        self._become_secondary)
        self.election.start()

    def stop(self) -> None:
        """Hand the role over (a clean stop)."""
        if self.election:
            self.election.stop(handover=True, timeout=30)

    def keepalive(self) -> None:
        if self.is_primary and self.zk.get(schema.PRIMARY_NODE, None) != self.name:
            self.zk.put(schema.PRIMARY_NODE, self.name)

    def _may_contend(self) -> bool:
        """Only a healthy daemon is (or stays) primary: one whose keepalive thread is stuck steps
        down, so a healthy coordinator takes over and fences this node if it stays stuck; one the
        primary lease marks as deposed for a hang waits until its HA loop clears the mark."""
        limit = max(3 * self.interval, self.interval * self.settings.fencing.fence_intervals / 2)
        stuck = time.monotonic() - self.last_keepalive() > limit
        if self.stopping.is_set() or stuck or self.doc.current.get("daemon_state") != "run":
            return False
        try:
            return not deposed_for_hang(self.zk.get(PRIMARY_LEASE, None), self.name)
        except (ClusterUnavailable, KazooException):
            return True          # unknown now; a blip must not make the primary hand over

    def _become_primary(self) -> None:
        log.info("taking over as primary coordinator")
        for hook in self.takeover_hooks:
            hook()
        self.doc.write(lambda d: {**d, "coordinator_state": "takeover"})
        self.zk.put(schema.PRIMARY_NODE, self.name)
        ensure_cluster(self.zk, self.settings.cluster.name)
        self._clear_stale_primaries()
        for hook in self.primary_hooks:
            hook()
        self.doc.write(lambda d: {**d, "coordinator_state": "primary"})
        log.info("now primary coordinator")

    def _become_secondary(self) -> None:
        log.info("relinquishing primary coordinator role")
        try:
            self.doc.write(lambda d: {**d, "coordinator_state": "relinquish"})
        except (ClusterUnavailable, KazooException):
            pass
        for hook in self.secondary_hooks:
            try:
                hook()
            except Exception:
                log.exception("secondary hook failed")
        try:
            if self.zk.get(schema.PRIMARY_NODE, None) == self.name:
                self.zk.put(schema.PRIMARY_NODE, "none")
            self.doc.write(lambda d: {**d, "coordinator_state": "secondary"})
        except (ClusterUnavailable, KazooException):
            log.warning("could not record secondary state (ZooKeeper unavailable)")
        log.info("now secondary coordinator")

    def _clear_stale_primaries(self) -> None:
        """A primary that died without stepping down still says so in its document: correct it."""
        for name in self.zk.children(schema.NODES):
            if name == self.name or self.zk.exists(schema.node_alive(name)):
                continue

            def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
                if doc and doc.get("coordinator_state") in ("primary", "takeover", "relinquish"):
                    return {**doc, "coordinator_state": "secondary"}
                return doc

            try:
                self.zk.update(schema.node(name), change)
            except NoNodeError:
                continue
