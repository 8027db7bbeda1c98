"""What every part of the VM reconciler shares: this node, its hypervisor, the store, the timers,
what it knows of the domains running here, and the daemon's hooks (start veto, VM faults)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pvc.adapters.hypervisor import Hypervisor
from pvc.cluster.vms.transitions import settle
from pvc.core.domainxml import DEFAULT_POLICY, DomainPolicy, LiveFacts
from pvc.core.records import VMRecord
from pvc.node.storage import NodeCeph
from pvc.node.vms.store import VMStore, merge_status


@dataclass(frozen=True)
class ReconcilerSettings:
    """Timers and paths; defaults are PVC's, tests shrink them."""

    interval: float = 5.0                 # keepalive: the full pass period
    shutdown_timeout: float = 180.0       # timer.vm_shutdown_timeout
    poll_s: float = 1.0                   # shutdown / flush polling
    console_dir: str = "/var/log/libvirt"
    console_lines: int = 1000
    console_max_bytes: int = 1024 * 1024   # rotate a console log past this (logging.console_log_max_bytes)
    console_backups: int = 2
    migration_attempts: int = 3
    migration_timeout: float = 120.0
    migration_tls: bool = True            # hypervisor.migration_tls: the stream over TLS too
    flush_wait_s: float = 120.0           # per VM, as upstream (600 x 0.2 s)
    start_lock_timeout: float = 10.0
    # This node's domain XML policy (D14): a definition written straight into ZooKeeper,
    # bypassing the API, still does not start here if it opens host resources.
    domain_policy: DomainPolicy = DEFAULT_POLICY

    @classmethod
    def from_settings(cls, settings: Any) -> ReconcilerSettings:
        return cls(interval=settings.timer.keepalive_interval,
                   shutdown_timeout=float(settings.timer.vm_shutdown_timeout),
                   console_dir=settings.path.console_log_directory,
                   console_lines=settings.logging.console_log_lines,
                   console_max_bytes=settings.logging.console_log_max_bytes,
                   console_backups=settings.logging.console_log_backups,
                   migration_tls=settings.hypervisor.migration_tls,
                   domain_policy=DomainPolicy.from_settings(settings))


class VMContext:
    """One per reconciler; its parts (actions, migration, flush, status report) share it."""

    def __init__(self, store: VMStore, hypervisor: Hypervisor, node: str, settings: ReconcilerSettings,
                 ceph: NodeCeph | None) -> None:
        self.store, self.hv, self.name, self.settings = store, hypervisor, node, settings
        self.ceph = ceph                        # rbd disks: monitors, auth, locks; None: no storage
        self.stopping = threading.Event()
        self.live: dict[str, LiveFacts] = {}    # uuid -> what its live XML says (vnc, console log)
        self.starts = 0                         # domains this reconciler created (tests, logs)
        self.orphans_destroyed = 0              # domains of VMs that were gone (pvc.node.vms.orphans)
        # UUIDs of the domains seen running here (last keepalive, plus starts since): what the
        # self-fence kills when libvirtd cannot be asked.
        self.known_running: set[str] = set()
        # The daemon's veto on starts (self-fenced, or declared dead): see pvc.node.daemon.
        self.may_start: Callable[[], bool] = lambda: True
        # Raises (message) or clears (None) the cluster fault of a VM that failed to start.
        self.vm_fault: Callable[[str, str | None], None] = lambda name, message: None

    def patch(self, uuid: str, **fields: Any) -> None:
        """Merge fields into the VM's status (stamped with the time of this write)."""
        self.store.update_status(uuid, merge_status({**fields, "updated": time.time()}))

    def settle(self, uuid: str, new: str, only_from: Iterable[str]) -> bool:
        """Record that a transitional state is done, only while the VM is still in `only_from`."""
        return self.store.update_vm(uuid, settle(new, only_from))

    def alive_fn(self) -> Callable[[str], bool]:
        """Whether a node has a live session; asks the store at most once, and only if needed."""
        cache: dict[str, bool] = {}
        nodes: set[str] | None = None

        def alive(name: str) -> bool:
            nonlocal nodes
            if name not in cache:
                if nodes is None:
                    nodes = self.store.alive_nodes()
                cache[name] = name in nodes
            return cache[name]
        return alive

    def console_path(self, record: VMRecord) -> str:
        return os.path.join(self.settings.console_dir, f"{record.name}.log")
