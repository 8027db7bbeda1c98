"""pvcnoded: the node daemon. Registers the node, keeps it alive, elects the primary, and runs the
node's subsystems (VMs, networks, storage, HA).

`NodeDaemon` is the composition root: it builds the services of `pvc.node.services` and the
subsystems' reconcilers, wires them together (flush/unflush and primary hooks, the VM start veto,
the self-fence), starts them in order and stops them cleanly. The node's own document is written
only through `NodeDocument` (a compare-and-set on the version this daemon last wrote), so
requests the API records in the same document (flush, ready) are never overwritten.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys
import threading
import time
from typing import Any

from pvc import __version__
from pvc.adapters.ceph import storage_from_settings
from pvc.adapters.hypervisor import LibvirtHypervisor
from pvc.core import schema, secrets
from pvc.core.config import Settings, load_config
from pvc.core.errors import ClusterUnavailable, ConfigError
from pvc.core.logs import configure_logging
from pvc.core.zk import ZK
from pvc.node.apiservice import ApiService
from pvc.node.health.runner import HealthService
from pvc.node.networks import NetworkReconciler
from pvc.node.services.clusterhealth import ClusterHealthService
from pvc.node.services.domainstate import DomainStateService
from pvc.node.services.ha import HAService
from pvc.node.services.keepalive import KeepaliveService
from pvc.node.services.netstats import NetStatsService
from pvc.node.services.networking import network_keys, network_reconciler
from pvc.node.services.nodedoc import NodeDocument
from pvc.node.services.primary import PrimaryRole
from pvc.node.services.registration import Registration
from pvc.node.services.schedules import ScheduleService
from pvc.node.services.sriov import SriovService
from pvc.node.services.storage import StorageService
from pvc.node.storage import NodeCeph, StorageMonitor
from pvc.node.vms import ReconcilerSettings, VMReconciler, ZKStore
from pvc.node.zklog import ZooKeeperLogHandler

log = logging.getLogger("pvcnoded")


class NodeDaemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.node_name
        self.coordinator = settings.is_coordinator
        self.interval = settings.timer.keepalive_interval
        self.zk = ZK.from_settings(settings)
        self.stopping = threading.Event()
        self.doc = NodeDocument(self.zk, self.name)
        self.domain_state = DomainStateService(self.doc, self.stopping)
        self.primary = PrimaryRole(settings, self.zk, self.doc, self.stopping,
                                   lambda: self.keepalive.last_ok)
        self.networks = self._networks()
        if settings.subsystem.enable_api and self.coordinator:
            self.api = ApiService(settings)
            self.primary.primary_hooks.append(self.api.start)
            self.primary.secondary_hooks.append(self.api.stop)
        if self.networks is not None:
            networks = self.networks
            self.primary.secondary_hooks.append(lambda: networks.set_primary(False))
        self.hypervisor = (LibvirtHypervisor(settings.hypervisor.libvirt_uri)
                           if settings.subsystem.enable_hypervisor else None)
        self.ceph, self.storage_monitor = self._ceph()
        self.vms = self._vms()
        self.storage = StorageService(settings, self.ceph, self.storage_monitor,
                                      lambda: self.primary.is_primary, self.stopping)
        self.ha = HAService(settings, self.zk, self.vms, self.hypervisor, self.ceph,
                            lambda: self.domain_state.daemon_state_seen, lambda: self.primary.is_primary,
                            self.stopping)
        # the primary's cluster checks (upstream's cluster faults), every monitoring interval
        self.cluster_health = ClusterHealthService(settings, self.zk, lambda: self.primary.is_primary,
                                                   self.stopping)
        # node health checks (plugins) and NIC traffic, written into this node's document
        self.health = HealthService(settings, self.zk, self.doc, self.stopping)
        self.netstats = NetStatsService(settings, self.doc, self.interval, self.stopping)
        self.registration = Registration(settings, self.zk, self.doc, self.stopping,
                                         lambda: network_keys(self.networks))
        self.log_handler = ZooKeeperLogHandler(self.name, settings.logging.node_log_lines)
        if settings.logging.zookeeper:
            logging.getLogger().addHandler(self.log_handler)
        self.keepalive = KeepaliveService(self.zk, self.interval, self.doc, self.registration, self.vms,
                                          self.storage, self.ha.selffence, self.primary, self.log_handler,
                                          self.stopping)

    # -- wiring ------------------------------------------------------------------------------------

    def _networks(self) -> NetworkReconciler | None:
        if not self.settings.subsystem.enable_networking:
            return None
        networks = network_reconciler(self.settings, self.zk)
        # The guests' gateway gap is what they notice of a hand-over: the gateways are the very
        # first thing a new primary takes and the last thing the old one gives up.
        self.primary.takeover_hooks.append(lambda: networks.set_primary(True))
        return networks

    def _ceph(self) -> tuple[NodeCeph | None, StorageMonitor | None]:
        settings = self.settings
        if not settings.subsystem.enable_storage:
            return None, None
        st = settings.storage
        ceph = NodeCeph(lambda: storage_from_settings(settings, shared=False), self.hypervisor,
                        client_user=st.client_user, keyring=st.ceph_keyring_file,
                        configured_secret=st.secret_uuid,
                        extra_addresses=[settings.hypervisor.migration_address or ""])
        return ceph, StorageMonitor(self.zk, lambda: ceph.storage, self.name)

    def _vms(self) -> VMReconciler | None:
        if self.hypervisor is None:
            return None
        vms = VMReconciler(ZKStore(self.zk), self.hypervisor, self.name,
                           ReconcilerSettings.from_settings(self.settings), zk=self.zk, ceph=self.ceph)
        still = self.domain_state.still_requested
        self.domain_state.flush_hooks.append(lambda: vms.flush(lambda: still("flush")))
        self.domain_state.unflush_hooks.append(lambda: vms.unflush(lambda: still("unflush")))
        return vms

    # -- lifecycle -------------------------------------------------------------------------------

    def run(self) -> int:
        log.info("pvcnoded %s starting on node %s (%s)", __version__, self.name,
                 "coordinator" if self.coordinator else "hypervisor")
        if self.settings.zookeeper.session_timeout >= 2 * self.interval:
            log.warning("zookeeper.session_timeout (%.1fs) is not below 2 keepalive intervals; "
                        "primary failover will take longer", self.settings.zookeeper.session_timeout)
        if not self._connect():
            return 1
        schema.migrate(self.zk)
        self.zk.add_listener(self.registration.on_session)
        self.registration.register()
        self.zk.watch_data(schema.node(self.name), self.domain_state.on_doc)
        self.storage.start_direct_osds()
        self.storage.keepalive()         # the ceph secret, early (VM starts also ensure it)
        if self.networks is not None:
            # Bridges before VMs: a VM's NICs attach to vmbr<vni> when it starts.
            try:
                self.networks.reconcile()
            except Exception:
                log.exception("first network pass failed")
            self.networks.start(self.interval)
        self.sriov = SriovService.start_from(self.settings, self.zk, self.stopping, self.vms)
        # autobackup/automirror schedules and backup faults: evaluated while this node is primary
        self.schedules = ScheduleService.start_from(self.settings, self.zk, lambda: self.primary.is_primary,
                                                    self.stopping) if self.coordinator else None
        if self.vms is not None:
            # Adopts whatever libvirtd still runs: a daemon restart never restarts or stops a VM.
            self.vms.start()
        if self.coordinator:
            self.primary.start()
            self.cluster_health.start()
        self.ha.start()
        self.health.start()
        self.netstats.start()
        keepalive = threading.Thread(target=self.keepalive.loop, name="keepalive", daemon=True)
        keepalive.start()
        self.stopping.wait()
        self.shutdown()
        keepalive.join(self.interval + 5)
        return 0

    def _connect(self) -> bool:
        while not self.stopping.is_set():
            try:
                self.zk.start(timeout=10)
                return True
            except ClusterUnavailable as exc:
                log.warning("%s; retrying", exc.message)
                self.stopping.wait(2)
        return False

    def request_stop(self, *_args: Any) -> None:
        log.info("stop requested")
        self.stopping.set()

    def shutdown(self) -> None:
        """Clean stop: hand the primary role away first, then report `stop` and leave."""
        log.info("shutting down")
        if self.vms is not None:
            self.vms.stop()          # VMs keep running in libvirtd; the next daemon adopts them
        if self.networks is not None:
            self.networks.stop()     # bridges stay for the running VMs; primary pieces go on hand-over
        self.health.stop()           # health None (N/A) while the daemon is stopped
        try:
            self.doc.write(lambda d: {**d, "daemon_state": "shutdown"})
        except Exception:
            log.exception("could not record shutdown state")
        self.primary.stop()
        try:
            final = "secondary" if self.coordinator else "client"
            self.doc.write(lambda d: {**d, "daemon_state": "stop", "coordinator_state": final,
                                      "keepalive": time.time()})
            self.log_handler.flush_to(self.zk)
            self.zk.delete(schema.node_alive(self.name))
        except Exception:
            log.exception("could not record stop state")
        self.zk.stop()
        self.ha.close()
        self.storage.close()


def main() -> None:
    try:
        settings = secrets.for_daemon(load_config())   # masks secrets in logs; checks the cluster key
    except ConfigError as exc:
        print(f"pvcnoded: {exc}", file=sys.stderr)
        sys.exit(1)
    configure_logging(settings, "pvcnoded")
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a hung daemon is waiting for.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    daemon = NodeDaemon(settings)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, daemon.request_stop)
    sys.exit(daemon.run())


if __name__ == "__main__":
    main()
