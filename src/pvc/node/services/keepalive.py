"""The keepalive: every interval, this node's figures, VM summary and self-fence events go into
its document (which is how the other nodes know it lives and what it can take), its log lines
into ZooKeeper; the primary re-asserts `/primary_node`; storage work is started.

The VM reconciler's share runs in a thread bounded by the interval, so a hung libvirtd cannot
stop this node's keepalive (the node would be declared dead).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kazoo.exceptions import KazooException

from pvc.core.errors import ClusterUnavailable
from pvc.core.zk import ZK
from pvc.node import sysinfo
from pvc.node.selffence import SelfFence
from pvc.node.services.nodedoc import DocChange, NodeDocument
from pvc.node.services.primary import PrimaryRole
from pvc.node.services.registration import Registration
from pvc.node.services.storage import StorageService
from pvc.node.vms import VMReconciler
from pvc.node.zklog import ZooKeeperLogHandler

log = logging.getLogger("pvcnoded")


class KeepaliveService:
    def __init__(self, zk: ZK, interval: float, doc: NodeDocument, registration: Registration,
                 vms: VMReconciler | None, storage: StorageService, selffence: SelfFence,
                 primary: PrimaryRole, log_handler: ZooKeeperLogHandler, stopping: threading.Event) -> None:
        self.zk, self.interval, self.doc, self.registration = zk, interval, doc, registration
        self.vms, self.storage, self.selffence, self.primary = vms, storage, selffence, primary
        self.log_handler, self.stopping = log_handler, stopping
        self.count = 0
        self.last_ok = time.monotonic()         # monotonic time of the last successful keepalive
        self.vm_figures: dict[str, Any] = {}
        self._vm_worker: threading.Thread | None = None

    def loop(self) -> None:
        next_run = time.monotonic()
        while not self.stopping.is_set():
            try:
                self.keepalive()
            except (ClusterUnavailable, KazooException) as exc:
                log.warning("keepalive failed: %s", exc)
            except Exception:
                log.exception("keepalive failed")
            next_run += self.interval
            delay = next_run - time.monotonic()
            if delay < 0:  # fell behind (e.g. ZooKeeper outage): realign, don't burst
                next_run, delay = time.monotonic(), 0
            self.stopping.wait(delay)

    def keepalive(self) -> None:
        if self.registration.session is None and self.zk.connected:
            self.registration.after_reconnect()
        self.doc.write(self._change(sysinfo.resource_figures(), self._vm_keepalive()))
        self.last_ok = time.monotonic()
        self.log_handler.flush_to(self.zk)
        self.count += 1
        self.primary.keepalive()
        self.storage.keepalive()

    def _change(self, figures: dict[str, Any], vm: dict[str, Any]) -> DocChange:
        """What this keepalive writes into the node document."""
        def change(doc: dict[str, Any]) -> dict[str, Any]:
            addresses, events = self.storage.client_addresses, self.selffence.events
            state = doc.get("daemon_state")
            if state in ("init", "stop"):
                state = "run"         # dead/fenced stay until an administrator readies the node
            memory = {**doc.get("memory", {}), "total": figures["memory_total"],
                      "used": figures["memory_used"], "free": figures["memory_free"]}
            vcpu = {**doc.get("vcpu", {}), "total": doc.get("cpu_count", 0)}
            if vm:
                memory.update(allocated=vm["memory_allocated"], provisioned=vm["memory_provisioned"])
                vcpu["allocated"] = vm["vcpu_allocated"]
                doc = {**doc, "running_domains": vm["running_domains"],
                       "domains_count": vm["domains_count"]}
            if addresses is not None:
                doc = {**doc, "ceph_client_addresses": addresses}
            if events:
                doc = {**doc, "self_fence_events": [{"time": time.time() - (time.monotonic() - at),
                                                     "message": text} for at, text in events]}
            return {**doc, "daemon_state": state, "keepalive": time.time(), "load": figures["load"],
                    "cpu_percent": figures["cpu_percent"], "memory": memory, "vcpu": vcpu,
                    "rss_bytes": figures["rss_bytes"]}

        return change

    def _vm_keepalive(self) -> dict[str, Any]:
        """The VM reconciler's keepalive share, bounded by the interval so a hung libvirtd
        cannot stop this node's keepalive (the node would be declared dead)."""
        if self.vms is None:
            return {}
        if self._vm_worker is not None and self._vm_worker.is_alive():
            return self.vm_figures           # the previous one still hangs: do not pile up
        result: dict[str, Any] = {}
        reconciler = self.vms

        def run() -> None:
            try:
                result.update(reconciler.keepalive())
            except Exception as exc:
                log.warning("VM keepalive failed: %s", exc)

        worker = self._vm_worker = threading.Thread(target=run, name="vm-keepalive", daemon=True)
        worker.start()
        worker.join(max(1.0, self.interval - 1))
        if worker.is_alive():
            log.warning("VM keepalive did not finish within the keepalive interval")
            return self.vm_figures
        if result:
            self.vm_figures = result
        return result
