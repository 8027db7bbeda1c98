"""The node's health checks: every `timer.monitoring_interval` seconds, each plugin of
`path.plugin_directory` runs once, in a process of its own, all in parallel (`pvchealthd.host`).

The results go into this node's document (`health`, `health_plugins`, `health_details`),
written by the node itself every pass; a plugin with a deduction raises the fault
`NODE_PLUGIN_<PLUGIN>_<NODE>` (half its delta, as upstream), cleared when it is healthy again.
Health is None before the first pass and after shutdown (shown as N/A). Plugins whose setup()
refuses do not apply here: they are logged, not listed, and asked again when their file changes
or every `REFUSAL_RECHECK` seconds. A file dropped into the directory runs on the next pass; a
file that disappears leaves the results.

A plugin file that anyone but root could change (loader: owner or mode of the file or its
directory) is never run: it is listed in `health_details` with the reason as its error, costs
`FAILURE_DELTA` and raises its NODE_PLUGIN fault naming the file, logged once per change of the
file, and runs again once its owner and mode are fixed.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kazoo.exceptions import KazooException

from pvc.cluster import faults
from pvc.core import schema
from pvc.core.config import Settings
from pvc.core.errors import ClusterUnavailable, ConfigError
from pvc.core.zk import ZK
from pvc.node.health import loader
from pvc.node.health.results import (
    FAILURE_DELTA,
    PluginState,
    fault_delta,
    fault_message,
    fault_name,
    from_host,
    node_health,
)
from pvc.node.services.nodedoc import NodeDocument
from pvchealthd.host import HostFailed, PluginHost

log = logging.getLogger("pvcnoded")

REFUSAL_RECHECK = 600.0
HOST_MARGIN = 5.0              # the host answers within the longest timeout plus this


def local_zookeeper(hosts: list[str]) -> str:
    """The configured ZooKeeper member on this node (host:port), or "" when none is: an address
    is this node's when a socket can be bound to it."""
    for entry in hosts:
        host, _, port = entry.rpartition(":")
        host = host.strip("[]") or entry
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            continue
        for family, _, _, _, address in infos:
            try:
                with socket.socket(family, socket.SOCK_STREAM) as sock:
                    sock.bind((address[0], 0))
                return f"{address[0]}:{port or 2181}"
            except OSError:
                continue
    return ""


def plugin_config(settings: Settings) -> dict[str, Any]:
    """Upstream's `self.config` keys our plugins and upstream's read, from our settings; then
    `health.plugin_config`. The IPMI password is here: it reaches the plugin host on its stdin."""
    net, st, hv = settings.networking, settings.storage, settings.hypervisor
    config: dict[str, Any] = {
        "node": settings.node_name, "node_hostname": socket.gethostname(),
        "coordinators": list(settings.cluster.coordinator_nodes),
        "debug": settings.logging.level == "debug",
        "bridge_dev": net.bridge_device, "upstream_dev": net.upstream_device or net.cluster_device,
        "cluster_dev": net.cluster_device, "storage_dev": net.cluster_device,
        "enable_hypervisor": settings.subsystem.enable_hypervisor,
        "enable_networking": settings.subsystem.enable_networking,
        "enable_storage": settings.subsystem.enable_storage,
        "libvirt_uri": hv.libvirt_uri, "dynamic_directory": settings.path.dynamic_directory,
        "ceph_config_file": st.ceph_config_file, "ceph_keyring_file": st.ceph_keyring_file,
        "ceph_client_user": "admin",
        "zookeeper_hosts": list(settings.zookeeper.hosts),
        "zookeeper_local": local_zookeeper(settings.zookeeper.hosts),
        "bgp_enabled": net.bgp is not None, "bgp_peers": list(net.bgp.peers) if net.bgp else [],
        "ipmi_hostname": "", "ipmi_username": "", "ipmi_password": "",
    }
    if settings.fencing.agent == "ipmi":
        from pvc.adapters.fence import fence_info
        try:
            info = fence_info(settings)
            config.update(ipmi_hostname=info.get("hostname", ""), ipmi_username=info.get("username", ""),
                          ipmi_password=info.get("password") or "", ipmi_interface=info.get("interface", ""))
        except ConfigError as exc:
            log.warning("health: the ipmi plugins get no BMC credentials: %s", exc)
    return {**config, **settings.health.plugin_config}


@dataclass
class PassReport:
    """What one pass did (for tests and the benchmark)."""
    ran: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    health: int | None = None
    wall: float = 0.0


class HealthService:
    """Runs the passes in a thread of pvcnoded; `run_pass` is also callable directly."""

    def __init__(self, settings: Settings, zk: ZK, doc: NodeDocument, stopping: threading.Event,
                 coordinator_state: Callable[[], str] | None = None,
                 host: PluginHost | None = None) -> None:
        self.settings, self.zk, self.doc, self.stopping = settings, zk, doc, stopping
        self.name = settings.node_name
        self.interval = float(settings.timer.monitoring_interval)
        self.directory = settings.path.plugin_directory
        self.coordinator_state = coordinator_state or (lambda: str(doc.current.get("coordinator_state",
                                                                                   "client")))
        self.host = host or PluginHost()
        self.config = plugin_config(settings)
        self.states: dict[str, PluginState] = {}
        self.files: dict[str, loader.PluginFile] = {}
        self.refused: dict[str, tuple[int, float]] = {}      # name -> (mtime_ns, recheck at)
        self.unsafe: dict[str, loader.PluginFile] = {}      # refused for owner/mode, as last logged
        self.next_due: dict[str, float] = {}
        self.faulted: set[str] = set()
        self.passes = 0
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Health None until the first pass, then a pass every interval in a thread."""
        self._write_health(None)
        self._thread = threading.Thread(target=self.loop, name="health", daemon=True)
        self._thread.start()

    def loop(self) -> None:
        while not self.stopping.is_set() and self.doc.current.get("daemon_state") not in ("run", None):
            self.stopping.wait(1)        # as upstream: checks start once the node runs
        next_run = time.monotonic()
        while not self.stopping.is_set():
            try:
                self.run_pass()
            except (ClusterUnavailable, KazooException) as exc:
                log.warning("health: pass failed: %s", exc)
            except Exception:
                log.exception("health: pass failed")
            next_run += self.interval
            delay = next_run - time.monotonic()
            if delay < 0:
                next_run, delay = time.monotonic(), 0
            self.stopping.wait(delay)

    def stop(self) -> None:
        """Shutdown: stop the plugins, then health None (N/A) in the node document."""
        self.host.close()
        if self._thread is not None:
            self._thread.join(HOST_MARGIN)
        self._write_health(None)

    # -- one pass ---------------------------------------------------------------------------------

    def timeout(self, name: str) -> float:
        return float(self.settings.health.plugin_timeouts.get(name, self.settings.health.plugin_timeout))

    def run_pass(self, force: bool = False) -> PassReport:
        """Run every plugin that is due (all of them with force) and write the results."""
        report = PassReport()
        started_mono, started = time.monotonic(), time.time()
        files = loader.scan(self.directory)
        for name in [n for n in self.states if n not in files]:
            log.info("health: plugin %s is gone from %s", name, self.directory)
            self._forget(name)
        for name, (mtime, recheck) in list(self.refused.items()):
            if name not in files or files[name].mtime_ns != mtime or recheck <= started_mono:
                del self.refused[name]
        self._unsafe(files, started, report)
        due = [f for n, f in files.items() if n not in self.refused and not f.unsafe and (
            force or self.next_due.get(n, 0.0) <= started_mono or self.files.get(n) != f)]
        self.files = files
        if due:
            self._run(due, started, started_mono, report)
        if self.stopping.is_set():
            return report            # the daemon stops: a pass it cut short records nothing
        health = node_health([self.states[n] for n in sorted(self.states)])
        self._write_results(health)
        self._update_faults()
        self.passes += 1
        report.health, report.wall = health, time.monotonic() - started_mono
        return report

    def _unsafe(self, files: dict[str, loader.PluginFile], started: float, report: PassReport) -> None:
        """Files anyone but root could change are not run: each is a failed result naming the
        file and the reason (so a fault tells the operator), logged once per change of it."""
        for name in [n for n in self.unsafe if n not in files or not files[n].unsafe]:
            if name in files:
                log.info("health: plugin %s: %s is safe again; running it", name, files[name].path)
            del self.unsafe[name]
        for name, f in files.items():
            if not f.unsafe:
                continue
            reason = (f"not run: {f.unsafe}; health plugins run as root, so the file and its directory "
                      f"must be owned by root and writable by no one else")
            if self.unsafe.get(name) != f:
                log.warning("health: plugin %s %s", name, reason)
                self.unsafe[name] = f
            self.refused.pop(name, None)
            self.next_due.pop(name, None)
            self.states[name] = PluginState(name, started, FAILURE_DELTA, reason, {}, 0.0, reason)
            report.refused[name] = reason

    def _run(self, due: list[loader.PluginFile], started: float, started_mono: float,
             report: PassReport) -> None:
        request = {"node": self.name, "coordinator_state": self.coordinator_state(),
                   "debug": self.config.get("debug", False), "config": self.config,
                   "plugins": [{"name": f.name, "path": f.path, "timeout": self.timeout(f.name)}
                               for f in due]}
        deadline = max(self.timeout(f.name) for f in due) + HOST_MARGIN
        try:
            answers = self.host.run(request, deadline)
        except HostFailed as exc:
            if self.stopping.is_set():
                return
            log.warning("health: %s", exc)
            answers = [{"name": f.name, "error": str(exc)} for f in due]
        by_name = {f.name: f for f in due}
        for raw in answers:
            name = str(raw.get("name", ""))
            if name not in by_name:
                continue
            for level, line in raw.get("log") or []:
                log.log(logging.getLevelName(str(level).upper()) if isinstance(level, str) else logging.INFO,
                        "health: %s", line)
            if raw.get("refused") is not None:
                if name not in self.refused:
                    log.info("health: plugin %s not loaded: %s", name, raw["refused"])
                self.refused[name] = (by_name[name].mtime_ns, started_mono + REFUSAL_RECHECK)
                report.refused[name] = str(raw["refused"])
                self._forget(name, keep_file=True)
                continue
            state = from_host(raw, started)
            self._log_change(self.states.get(name), state)
            self.states[name] = state
            interval = raw.get("interval")
            self.next_due[name] = started_mono + float(interval) - 1.0 if interval else 0.0
            report.ran.append(name)

    def _log_change(self, old: PluginState | None, new: PluginState) -> None:
        if new.error and (old is None or old.error != new.error):
            log.warning("health: plugin %s failed: %s", new.name, new.error)
        elif old is None or old.health_delta != new.health_delta:
            level = logging.INFO if new.health_delta == 0 else logging.WARNING
            log.log(level, "health: plugin %s: delta %d: %s", new.name, new.health_delta, new.message)

    def _forget(self, name: str, keep_file: bool = False) -> None:
        self.states.pop(name, None)
        self.next_due.pop(name, None)
        if not keep_file:
            self.refused.pop(name, None)
            self.unsafe.pop(name, None)
        if name in self.faulted or self.passes == 0:
            self._clear_fault(name)

    # -- writing -----------------------------------------------------------------------------------

    def _write_health(self, health: int | None) -> None:
        try:
            self.doc.write(lambda d: {**d, "health": health})
        except Exception as exc:
            log.warning("health: could not record node health: %s", exc)

    def _write_results(self, health: int) -> None:
        names = sorted(self.states)
        details = [self.states[n].detail() for n in names]
        self.doc.write(lambda d: {**d, "health": health, "health_plugins": names, "health_details": details})

    def _update_faults(self) -> None:
        if self.passes == 0:
            self._clear_leftovers()
        for name, state in sorted(self.states.items()):
            fault = fault_name(name, self.name)
            try:
                if state.health_delta > 0:
                    faults.raise_fault(self.zk, fault, fault_delta(state), fault_message(state, self.name))
                    self.faulted.add(name)
                elif name in self.faulted or self.passes == 0:
                    self._clear_fault(name)
            except (ClusterUnavailable, KazooException, ValueError) as exc:
                log.warning("health: fault %s: %s", fault, exc)

    def _clear_leftovers(self) -> None:
        """At start: this node's plugin faults of plugins that are gone or no longer fault
        (the daemon was down while they were fixed or removed)."""
        prefix, suffix = "NODE_PLUGIN_", f"_{self.name.upper()}"
        current = {fault_name(n, self.name) for n, s in self.states.items() if s.health_delta > 0}
        try:
            ids = self.zk.children(schema.FAULTS)
        except (ClusterUnavailable, KazooException) as exc:
            log.warning("health: cannot list faults: %s", exc)
            return
        for fid in ids:
            if fid.startswith(prefix) and fid.endswith(suffix) and fid not in current:
                try:
                    faults.clear_fault(self.zk, fid)
                except (ClusterUnavailable, KazooException, ValueError) as exc:
                    log.warning("health: fault %s: %s", fid, exc)

    def _clear_fault(self, name: str) -> None:
        try:
            faults.clear_fault(self.zk, fault_name(name, self.name))
            self.faulted.discard(name)
        except (ClusterUnavailable, KazooException, ValueError) as exc:
            log.warning("health: fault %s: %s", fault_name(name, self.name), exc)
