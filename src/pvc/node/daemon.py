"""pvcnoded: the node daemon. Registers the node, keeps it alive, elects the primary.

Later subsystems (VMs, networks, storage) plug in as reconcilers; this module owns the node's
own document in ZooKeeper. Every write to it goes through `_write_doc`, a compare-and-set on
the version this daemon last wrote, so requests the API records in the same document (flush,
ready) are never overwritten.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError
from kazoo.protocol.states import KazooState

from pvc import __version__
from pvc.adapters.ceph import StorageError, storage_from_settings
from pvc.adapters.hypervisor import HypervisorError, LibvirtHypervisor, kill_local_qemu
from pvc.cluster.state import ensure_cluster
from pvc.core import schema
from pvc.core.config import Settings, load_config
from pvc.core.errors import ClusterUnavailable, ConfigError
from pvc.core.logs import configure_logging
from pvc.core.records import NodeRecord
from pvc.core.zk import ZK, encode
from pvc.node import sysinfo
from pvc.node.apiservice import ApiService
from pvc.node.election import PrimaryElection
from pvc.node.fencing import FencePolicy, HAMonitor
from pvc.node.hastore import CephFence, ZKHAStore
from pvc.node.metadata import MetadataService
from pvc.node.networks import NetworkReconciler
from pvc.node.selffence import SelfFence
from pvc.node.storage import NodeCeph, StorageMonitor
from pvc.node.vms import ReconcilerSettings, VMReconciler, ZKStore
from pvc.node.zklog import ZooKeeperLogHandler

log = logging.getLogger("pvcnoded")

Hook = Callable[[], None]


class NodeDaemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.node_name
        self.coordinator = settings.is_coordinator
        self.interval = settings.timer.keepalive_interval
        self.zk = ZK.from_settings(settings)
        self.stopping = threading.Event()
        self._doc_lock = threading.Lock()
        self._version: int | None = None
        self._session: int | None = None
        self._domain_busy = threading.Lock()
        self.election: PrimaryElection | None = None
        self.keepalives = 0
        # Subsystems register what must happen on flush/unflush and on primary changes.
        self.flush_hooks: list[Hook] = []
        self.unflush_hooks: list[Hook] = []
        self.primary_hooks: list[Hook] = []
        self.takeover_hooks: list[Hook] = []     # before anything else on becoming primary
        self.secondary_hooks: list[Hook] = []
        self.networks: NetworkReconciler | None = None
        if settings.subsystem.enable_networking:
            self.networks = self._network_reconciler(settings)
            networks = self.networks
            # The guests' gateway gap is what they notice of a hand-over: the gateways are the
            # very first thing a new primary takes and the last thing the old one gives up.
            self.takeover_hooks.append(lambda: networks.set_primary(True))
        if settings.subsystem.enable_api and self.coordinator:
            self.api = ApiService(settings)
            self.primary_hooks.append(self.api.start)
            self.secondary_hooks.append(self.api.stop)
        if self.networks is not None:
            networks = self.networks
            self.secondary_hooks.append(lambda: networks.set_primary(False))
        self._requested_domain_state = ""
        self.vm_figures: dict[str, Any] = {}
        self.vms: VMReconciler | None = None
        self._vm_worker: threading.Thread | None = None
        self.ceph: NodeCeph | None = None
        self.storage_monitor: StorageMonitor | None = None
        self._storage_worker: threading.Thread | None = None
        self._storage_started = 0.0
        self._storage_errors: dict[str, str] = {}
        hypervisor = None
        if settings.subsystem.enable_hypervisor:
            hypervisor = self.hypervisor = LibvirtHypervisor(settings.hypervisor.libvirt_uri)
        if settings.subsystem.enable_storage:
            st = settings.storage
            self.ceph = NodeCeph(lambda: storage_from_settings(settings, shared=False),
                                 hypervisor, client_user=st.client_user, keyring=st.ceph_keyring_file,
                                 configured_secret=st.secret_uuid,
                                 extra_addresses=[settings.hypervisor.migration_address or ""])
            ceph = self.ceph
            self.storage_monitor = StorageMonitor(self.zk, lambda: ceph.storage, self.name)
        if hypervisor is not None:
            self.vms = VMReconciler(ZKStore(self.zk), hypervisor, self.name,
                                    ReconcilerSettings.from_settings(settings), zk=self.zk, ceph=self.ceph)
            reconciler = self.vms
            self.flush_hooks.append(lambda: reconciler.flush(lambda: self._still_requested("flush")))
            self.unflush_hooks.append(lambda: reconciler.unflush(lambda: self._still_requested("unflush")))
        if self.vms is not None:
            self.vms.may_start = self._may_start_vms
            self.vms.vm_fault = self._vm_fault
        self._daemon_state_seen = ""
        self._keepalive_ok = time.monotonic()
        self._ceph_addresses: list[str] | None = None
        fencing = settings.fencing
        self.selffence = SelfFence(bound=lambda: settings.zookeeper.session_timeout, clock=time.monotonic,
                                   connected=lambda: self.zk.connected, destroy_all=self._destroy_all_vms,
                                   enabled=fencing.self_fence and self.vms is not None)
        self.watchdog = None
        if fencing.watchdog_device:
            from pvc.adapters.watchdog import Watchdog

            self.watchdog = Watchdog(fencing.watchdog_device, fencing.watchdog_timeout)
        self.ha: HAMonitor | None = None
        if self.coordinator and fencing.enabled:
            self.ha = self._ha_monitor(settings)
        self.log_handler = ZooKeeperLogHandler(self.name, settings.logging.node_log_lines)
        if settings.logging.zookeeper:
            logging.getLogger().addHandler(self.log_handler)

    def _network_reconciler(self, settings: Settings) -> NetworkReconciler:
        from pathlib import Path

        from pvc.adapters.network import LinuxNetworkHost, LinuxNftables, ProcessServices

        net = settings.networking
        run_dir = Path(settings.path.dynamic_directory) / "network"
        host = LinuxNetworkHost(vlan_backend=net.vlan_backend, lab_switch_netns=net.lab_switch_netns)
        reconciler = NetworkReconciler(self.zk, host, LinuxNftables(), ProcessServices(run_dir / "services"),
                                       settings, self.name, run_dir)
        reconciler.metadata = MetadataService(self.zk, net.metadata_address, net.metadata_port)
        return reconciler

    def _ha_monitor(self, settings: Settings) -> HAMonitor:
        from pvc.adapters.fence import DispatchAgent

        ceph = self.ceph

        def storage() -> Any:
            if ceph is not None:
                return ceph.storage
            return storage_from_settings(settings, shared=False)

        return HAMonitor(self.name, ZKHAStore(self.zk), DispatchAgent(),
                         CephFence(storage, self.zk, settings.fencing.blocklist_expire),
                         FencePolicy.from_settings(settings), time.time)

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
        self.zk.add_listener(self._on_session)
        self.register()
        self.zk.client.DataWatch(schema.node(self.name), self._on_doc)
        self._start_direct_osds()
        self._storage_keepalive()        # the ceph secret, early (VM starts also ensure it)
        if self.networks is not None:
            # Bridges before VMs: a VM's NICs attach to vmbr<vni> when it starts.
            try:
                self.networks.reconcile()
            except Exception:
                log.exception("first network pass failed")
            self.networks.start(self.interval)
        if self.vms is not None:
            # Adopts whatever libvirtd still runs: a daemon restart never restarts or stops a VM.
            self.vms.start()
        if self.coordinator:
            self.election = PrimaryElection(self.zk, self.name, self._may_contend,
                                            self._become_primary, self._become_secondary)
            self.election.start()
        if self.watchdog is not None:
            try:
                self.watchdog.open()
            except OSError as exc:
                log.error("hardware watchdog %s: %s; running without it",
                          self.settings.fencing.watchdog_device, exc)
                self.watchdog = None
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        if self.ha is not None:
            threading.Thread(target=self._ha_loop, name="ha-monitor", daemon=True).start()
        keepalive = threading.Thread(target=self._keepalive_loop, name="keepalive", daemon=True)
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
        try:
            self._write_doc(lambda d: {**d, "daemon_state": "shutdown"})
        except Exception:
            log.exception("could not record shutdown state")
        if self.election:
            self.election.stop(handover=True, timeout=30)
        try:
            final = "secondary" if self.coordinator else "client"
            self._write_doc(lambda d: {**d, "daemon_state": "stop", "coordinator_state": final,
                                       "keepalive": time.time()})
            self.log_handler.flush_to(self.zk)
            self.zk.delete(schema.node_alive(self.name))
        except Exception:
            log.exception("could not record stop state")
        self.zk.stop()
        if self.watchdog is not None:
            self.watchdog.close()        # a clean stop disarms it
        if self.ceph is not None:
            try:
                self.ceph.close()
            except Exception:
                log.exception("could not close the Ceph connection")

    # -- registration ------------------------------------------------------------------------------

    def register(self) -> None:
        """Create or refresh this node's document and its session marker."""
        static = sysinfo.static_data()
        mode = "coordinator" if self.coordinator else "hypervisor"

        def change(doc: dict[str, Any] | None) -> dict[str, Any]:
            record = NodeRecord.model_validate(doc) if doc else NodeRecord(name=self.name)
            # A dead or fenced node stays so until an administrator readies it (pvc.node.fencing).
            fenced = record.daemon_state in ("dead", "fenced")
            return record.model_copy(update={
                "mode": mode,
                "daemon_state": record.daemon_state if fenced else "init",
                "coordinator_state": "secondary" if self.coordinator else "client",
                "pvc_version": __version__,
                "daemon_pid": os.getpid(),
                "session_id": f"{self.zk.session_id or 0:x}",
                **static,
            }).doc() | self._migration_keys() | self._network_keys()

        self.zk.update(schema.node(self.name), change, create=True)
        self._publish_fence_info()
        self._version = None
        self._session = self.zk.session_id
        self._mark_alive()
        log.info("registered node %s", self.name)

    def _publish_fence_info(self) -> None:
        """How the primary fences this node (agent, BMC); outside the node document, which the
        API serves, because it holds the BMC password."""
        from pvc.adapters.fence import fence_info

        try:
            info = fence_info(self.settings)
        except ConfigError as exc:
            log.error("fencing: %s; this node cannot be fenced by its agent", exc)
            info = {"agent": "none", "node": self.name, "error": str(exc)}
        self.zk.update(schema.node_fence_info(self.name), lambda _old: info, create=True)

    def _migration_keys(self) -> dict[str, str]:
        """Where other nodes send live migrations to us. Kept as extra keys of the node document
        (NodeRecord does not model them; readers take them from the raw document)."""
        address = self.settings.hypervisor.migration_address
        if not address or not self.settings.subsystem.enable_hypervisor:
            return {"libvirt_migration_uri": "", "migration_address": ""}
        uri = self.settings.hypervisor.migration_uri_template.replace("{address}", address)
        return {"libvirt_migration_uri": uri, "migration_address": address}

    def _network_keys(self) -> dict[str, str]:
        """This node's VTEP address, which the other nodes put in their VXLAN flood lists."""
        if self.networks is None:
            return {}
        try:
            return {"cluster_address": self.networks.local_address() or ""}
        except Exception as exc:
            log.warning("cannot tell this node's cluster address: %s", exc)
            return {"cluster_address": ""}

    def _mark_alive(self) -> None:
        try:
            self.zk.create(schema.node_alive(self.name), {"pid": os.getpid()}, ephemeral=True)
        except NodeExistsError:
            raw = self.zk.get_raw(schema.node_alive(self.name))
            # A marker from our own previous session may linger until that session expires.
            if raw is not None and raw[1].ephemeralOwner != self.zk.session_id:
                self.zk.delete(schema.node_alive(self.name))
                self.zk.create(schema.node_alive(self.name), {"pid": os.getpid()}, ephemeral=True)

    def _on_session(self, state: KazooState) -> None:
        if state == KazooState.CONNECTED:
            threading.Thread(target=self._after_reconnect, daemon=True).start()

    def _after_reconnect(self) -> None:
        if self.stopping.is_set() or self.zk.session_id == self._session:
            return
        log.warning("new ZooKeeper session; re-registering")
        try:
            self._session = self.zk.session_id
            self._mark_alive()
            self._write_doc(lambda d: {**d, "session_id": f"{self.zk.session_id or 0:x}"})
        except Exception:
            log.exception("re-registration failed; will retry at the next keepalive")
            self._session = None

    # -- the node document ---------------------------------------------------------------------------

    def _write_doc(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """CAS on the last version we saw; re-read only when someone else wrote in between."""
        path = schema.node(self.name)
        with self._doc_lock:
            for _ in range(20):
                if self._version is None:
                    raw = self.zk.get_raw(path)
                    if raw is None:
                        raise NoNodeError(path)
                    # Keep keys NodeRecord does not model (migration URI, API extras).
                    extra = json.loads(raw[0]) if raw[0] else {}
                    self._current = {**(extra if isinstance(extra, dict) else {}),
                                     **NodeRecord.model_validate_json(raw[0]).doc()}
                    self._version = raw[1].version
                new = change(dict(self._current))
                try:
                    stat = self.zk.retry(self.zk.client.set, path, encode(new), version=self._version)
                except BadVersionError:
                    self._version = None
                    continue
                self._current, self._version = new, stat.version
                return new
        raise ClusterUnavailable(f"{path}: could not write after repeated conflicts")

    def _on_doc(self, data: bytes | None, stat: Any) -> None:
        """React to flush/ready requests the API recorded in our document."""
        if not data or self.stopping.is_set():
            return
        try:
            record = NodeRecord.model_validate_json(data)
        except ValueError:
            return
        state = record.domain_state
        self._daemon_state_seen = record.daemon_state
        self._requested_domain_state = state
        if state in ("flush", "unflush") and self._domain_busy.acquire(blocking=False):
            threading.Thread(target=self._change_domain_state, args=(state,), daemon=True).start()

    def _still_requested(self, state: str) -> bool:
        """A flush/unflush stops early when a newer request replaced it (pvc-facts §3.7)."""
        return self._requested_domain_state == state and not self.stopping.is_set()

    def _wait_back_in_service(self) -> bool:
        """A dead/fenced node being readied: the primary lifts its Ceph blocklist and sets it to
        run first (pvc.node.fencing); only then may its VMs come back."""
        deadline = time.monotonic() + 120
        while self._daemon_state_seen in ("dead", "fenced") and self._still_requested("unflush"):
            if time.monotonic() > deadline:
                log.warning("still %s after 120s; the unflush waits for the next ready request",
                            self._daemon_state_seen)
                return False
            self.stopping.wait(0.5)
        return self._still_requested("unflush")

    def _change_domain_state(self, state: str) -> None:
        try:
            hooks, final = (self.flush_hooks, "flushed") if state == "flush" else \
                (self.unflush_hooks, "ready")
            log.info("%s started", "flush" if state == "flush" else "unflush")
            if state == "unflush" and not self._wait_back_in_service():
                return
            for hook in hooks:
                hook()
            self._write_doc(lambda d: {**d, "domain_state": final} if d.get("domain_state") == state else d)
            log.info("domain state is now %s", final)
        except Exception:
            log.exception("domain state change to %s failed", state)
        finally:
            self._domain_busy.release()
        # A request that arrived while this one ran was ignored by _on_doc: pick it up now.
        pending = self._requested_domain_state
        if pending in ("flush", "unflush") and pending != state and not self.stopping.is_set() \
                and self._domain_busy.acquire(blocking=False):
            threading.Thread(target=self._change_domain_state, args=(pending,), daemon=True).start()

    # -- keepalive ---------------------------------------------------------------------------------------

    def _keepalive_loop(self) -> None:
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
        if self._session is None and self.zk.connected:
            self._after_reconnect()
        figures = sysinfo.resource_figures()
        vm = self._vm_keepalive()

        def change(doc: dict[str, Any]) -> dict[str, Any]:
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
            if self._ceph_addresses is not None:
                doc = {**doc, "ceph_client_addresses": self._ceph_addresses}
            if self.selffence.events:
                doc = {**doc, "self_fence_events": [{"time": time.time() - (time.monotonic() - at),
                                                     "message": text} for at, text in self.selffence.events]}
            return {**doc, "daemon_state": state, "keepalive": time.time(), "load": figures["load"],
                    "cpu_percent": figures["cpu_percent"], "memory": memory, "vcpu": vcpu,
                    "rss_bytes": figures["rss_bytes"]}

        self._write_doc(change)
        self._keepalive_ok = time.monotonic()
        self.log_handler.flush_to(self.zk)
        self.keepalives += 1
        if self.election and self.election.is_primary:
            self._primary_keepalive()
        self._storage_keepalive()

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

    def _start_direct_osds(self) -> None:
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

    def _storage_keepalive(self) -> None:
        """Storage work of this keepalive, in its own thread: the ceph secret until it is defined
        (every node), the Ceph stats pass (primary). The keepalive never waits for it, so a hung
        Ceph cannot delay the node's keepalive; a pass still running is not started again."""
        ceph = self.ceph
        if ceph is None or self.stopping.is_set():
            return
        worker = self._storage_worker
        if worker is not None and worker.is_alive():
            running = time.monotonic() - self._storage_started
            if running > 3 * self.interval:
                log.warning("storage keepalive still running after %.0fs (Ceph not answering?)", running)
            return
        primary = self.election is not None and self.election.is_primary
        need_secret = ceph.hypervisor is not None and not ceph.secret_ready
        monitor = self.storage_monitor if primary else None
        if not need_secret and monitor is None and self._ceph_addresses is not None:
            return

        def run() -> None:
            if self._ceph_addresses is None:
                try:
                    self._ceph_addresses = ceph.client_addresses()
                except (StorageError, OSError) as exc:
                    log.debug("Ceph client addresses not known yet: %s", exc)
            if need_secret:
                try:
                    ceph.ensure_secret()
                    self._storage_problem("secret", "")
                except (StorageError, HypervisorError, OSError) as exc:
                    self._storage_problem("secret", f"cannot define the libvirt ceph secret: {exc}")
            if monitor is not None:
                try:
                    monitor.run_once()
                    self._storage_problem("stats", "")
                except (StorageError, ClusterUnavailable, KazooException) as exc:
                    self._storage_problem("stats", f"storage stats pass failed: {exc}")
                except Exception:
                    log.exception("storage stats pass failed")

        self._storage_started = time.monotonic()
        self._storage_worker = threading.Thread(target=run, name="storage-keepalive", daemon=True)
        self._storage_worker.start()

    def _storage_problem(self, kind: str, message: str) -> None:
        """Log a storage failure when it starts or changes (not every keepalive while it lasts),
        and its end; `message` "" means that kind of work succeeded."""
        before = self._storage_errors.get(kind, "")
        if message and message != before:
            log.warning("%s (retrying every keepalive)", message)
        elif before and not message:
            log.info("storage %s: working again", kind)
        self._storage_errors[kind] = message

    def _primary_keepalive(self) -> None:
        if self.zk.get(schema.PRIMARY_NODE, None) != self.name:
            self.zk.put(schema.PRIMARY_NODE, self.name)

    # -- high availability (DESIGN D10) ------------------------------------------------------------------

    def _vm_fault(self, name: str, message: str | None) -> None:
        from pvc.cluster import faults

        key = f"VM_FAILED_{name}"
        try:
            if message is None:
                faults.clear_fault(self.zk, key)
            else:
                faults.raise_fault(self.zk, key, 10, message)
        except (ClusterUnavailable, KazooException, NoNodeError) as exc:
            log.warning("could not update the fault of VM %s: %s", name, exc)

    def _may_start_vms(self) -> bool:
        """No VM starts here while our session may be gone or while we are dead/fenced."""
        return self.selffence.may_start() and self._daemon_state_seen not in ("dead", "fenced")

    def _destroy_all_vms(self) -> list[str]:
        """Self-fence: every VM here, at once. QEMU processes are killed directly: a libvirt call
        may hang behind a stats query that waits for unreachable storage (seen on the lab), and
        this must not wait. libvirt is told afterwards, in the background, to tidy up."""
        killed = kill_local_qemu(set(self.vms.known_running)) if self.vms is not None else []

        def tidy() -> None:
            try:
                for uuid in self.hypervisor.list_domains():
                    try:
                        self.hypervisor.destroy(uuid)
                    except HypervisorError:
                        pass
            except HypervisorError as exc:
                log.warning("self-fence: libvirt could not list domains: %s", exc)

        threading.Thread(target=tidy, name="self-fence-tidy", daemon=True).start()
        return killed

    def _heartbeat_loop(self) -> None:
        """About once a second, one ZooKeeper request whose answer feeds the self-fence clock and
        the hardware watchdog. At most one is outstanding: kazoo counts every request it sends as
        a ping, so requests sent without pause would hide a dead connection from it for good."""
        alive_path = schema.node_alive(self.name)
        pending: Any = None
        sent = 0.0
        while not self.stopping.is_set():
            began = time.monotonic()
            if pending is not None and pending.ready():
                if pending.successful():
                    self.selffence.answered(sent)
                    if self.watchdog is not None:
                        self.watchdog.pet()
                pending = None
            if pending is None and self.zk.connected:
                sent = time.monotonic()
                try:
                    pending = self.zk.client.exists_async(alive_path)
                except Exception as exc:
                    log.debug("heartbeat: %s", exc)
            self.selffence.check()
            self.stopping.wait(max(0.1, 1.0 - (time.monotonic() - began)))

    def _ha_loop(self) -> None:
        """Every coordinator observes; the primary acts (pvc.node.fencing)."""
        assert self.ha is not None
        failing, moved = "", False
        while not self.stopping.wait(0 if moved else 0.5):
            primary = bool(self.election and self.election.is_primary and self.zk.connected)
            moved = False
            try:
                if self.zk.connected:
                    moved = self.ha.tick(primary)
                failing = ""
            except (ClusterUnavailable, KazooException) as exc:
                if str(exc) != failing:
                    log.warning("HA monitor: %s", exc)
                failing = str(exc)
            except Exception:
                log.exception("HA monitor pass failed")

    # -- primary role ------------------------------------------------------------------------------------

    def _may_contend(self) -> bool:
        """Only a healthy daemon is (or stays) primary: one whose keepalive thread is stuck steps
        down, so a healthy coordinator takes over and fences this node if it stays stuck."""
        limit = max(3 * self.interval, self.interval * self.settings.fencing.fence_intervals / 2)
        stuck = time.monotonic() - self._keepalive_ok > limit
        return not self.stopping.is_set() and not stuck and \
            getattr(self, "_current", {}).get("daemon_state") == "run"

    def _become_primary(self) -> None:
        log.info("taking over as primary coordinator")
        for hook in self.takeover_hooks:
            hook()
        self._write_doc(lambda d: {**d, "coordinator_state": "takeover"})
        self.zk.put(schema.PRIMARY_NODE, self.name)
        ensure_cluster(self.zk, self.settings.cluster.name)
        self._clear_stale_primaries()
        for hook in self.primary_hooks:
            hook()
        self._write_doc(lambda d: {**d, "coordinator_state": "primary"})
        log.info("now primary coordinator")

    def _become_secondary(self) -> None:
        log.info("relinquishing primary coordinator role")
        try:
            self._write_doc(lambda d: {**d, "coordinator_state": "relinquish"})
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
            self._write_doc(lambda d: {**d, "coordinator_state": "secondary"})
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


def main() -> None:
    try:
        settings = load_config()
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
