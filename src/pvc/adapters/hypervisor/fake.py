"""FakeHypervisor: the Hypervisor contract in memory, for the pure unit tests and the HA simulator.

It honours the same contract as LibvirtHypervisor (tests/unit/test_hypervisor_fake.py runs one
suite against both), keeps to an injectable clock so the simulator can run minutes of virtual time
in milliseconds, and offers failure-injection hooks for the cases that are hard to provoke for real.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pvc.adapters.hypervisor.base import (
    ACTIVE_STATES,
    DomainExists,
    DomainInfo,
    DomainNotFound,
    Hypervisor,
    HypervisorError,
    HypervisorUnavailable,
    MigrationResult,
)
from pvc.adapters.hypervisor.domxml import domain_facts, normalize_uuid, rbd_target, secret_args


class FakeHypervisorNetwork:
    """The hosts fake hypervisors can migrate to, by URI; one lock for all (no lock ordering)."""

    def __init__(self) -> None:
        self.hosts: dict[str, FakeHypervisor] = {}
        self.lock = threading.RLock()


@dataclass
class FakeDomain:
    uuid: str
    name: str
    xml: str
    vcpus: int
    max_vcpus: int
    memory_kib: int
    max_memory_kib: int
    started_at: float
    state: str = "running"
    reason: str = "booted"
    shutdown_requested_at: float | None = None
    ignores_acpi: bool = False
    guest_agent: bool = False          # a guest agent answers (fs_freeze works)
    frozen: bool = False


@dataclass
class _Fault:
    op: str
    uuid: str | None
    remaining: int
    error: Callable[[str], HypervisorError]


@dataclass(eq=False)
class FakeHypervisor(Hypervisor):
    """A hypervisor in memory.

    Behaviour worth knowing: ACPI shutdown takes `shutdown_delay_s` of the clock (0: at once), a
    migration "takes" `migration_duration_s` and reports `migration_downtime_ms` (capped by the
    requested max downtime when live), cputime grows at `cpu_share` of a core per vCPU while
    running. Every call is appended to `calls` as (operation, uuid-or-None).

    Failure injection: fail_next()/fail_start()/fail_migrations() make the next N matching calls
    raise; crash() kills a domain as QEMU dying would; ignore_acpi() makes a guest ignore the power
    button; `available = False` makes every call raise HypervisorUnavailable (libvirtd down).
    """

    uri: str = "fake:///hv1"
    network: FakeHypervisorNetwork = field(default_factory=FakeHypervisorNetwork)
    kvm: bool = False
    cpus: int = 8
    memory_mib: int = 16384
    clock: Callable[[], float] = time.monotonic
    shutdown_delay_s: float = 0.0
    migration_duration_s: float = 0.5
    migration_downtime_ms: int = 30
    cpu_share: float = 0.02
    available: bool = True
    calls: list[tuple[str, str | None]] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    secrets: dict[str, tuple[str, bytes]] = field(default_factory=dict)   # uuid -> (usage, value)
    disk_sizes: dict[tuple[str, str], int] = field(default_factory=dict)  # (uuid, target) -> bytes

    def __post_init__(self) -> None:
        self._domains: dict[str, FakeDomain] = {}
        self._faults: list[_Fault] = []
        with self.network.lock:
            self.network.hosts[self.uri] = self

    def __repr__(self) -> str:
        return f"FakeHypervisor({self.uri!r})"

    # ---- failure injection -------------------------------------------------------------------

    def fail_next(self, op: str, times: int = 1, uuid: str | None = None,
                  error: Callable[[str], HypervisorError] = HypervisorError) -> None:
        """The next `times` calls of `op` (a method name), for `uuid` or any, raise `error(msg)`."""
        with self.network.lock:
            self._faults.append(_Fault(op, normalize_uuid(uuid) if uuid else None, times, error))

    def fail_start(self, times: int = 1, uuid: str | None = None) -> None:
        self.fail_next("start", times, uuid)

    def fail_migrations(self, times: int, uuid: str | None = None) -> None:
        self.fail_next("migrate", times, uuid)

    def crash(self, uuid: str, preserve: bool = False) -> None:
        """QEMU dies. Transient domains with on_crash=destroy vanish; `preserve` leaves `crashed`."""
        uuid = normalize_uuid(uuid)
        with self.network.lock:
            dom = self._get(uuid)
            self.crashed.append(uuid)
            if preserve:
                dom.state, dom.reason = "crashed", "panicked"
            else:
                del self._domains[uuid]

    def ignore_acpi(self, uuid: str, ignore: bool = True) -> None:
        with self.network.lock:
            self._get(normalize_uuid(uuid)).ignores_acpi = ignore

    def domain(self, uuid: str) -> FakeDomain:
        """The fake's own record of a domain (for assertions)."""
        with self.network.lock:
            return self._get(normalize_uuid(uuid))

    # ---- internals ---------------------------------------------------------------------------

    def _enter(self, op: str, uuid: str | None = None) -> None:
        """Record the call, advance pending shutdowns, then raise an injected fault if one is due."""
        self.calls.append((op, uuid))
        if not self.available:
            raise HypervisorUnavailable(f"{op}: cannot connect to libvirt at {self.uri} (fake: down)")
        self._tick()
        for fault in self._faults:
            if fault.op == op and fault.remaining > 0 and fault.uuid in (None, uuid):
                fault.remaining -= 1
                raise fault.error(f"{op}{' ' + uuid if uuid else ''}: injected failure")

    def _tick(self) -> None:
        now = self.clock()
        for uuid, dom in list(self._domains.items()):
            if (dom.shutdown_requested_at is not None and not dom.ignores_acpi
                    and now - dom.shutdown_requested_at >= self.shutdown_delay_s):
                del self._domains[uuid]

    def _get(self, uuid: str) -> FakeDomain:
        dom = self._domains.get(uuid)
        if dom is None:
            raise DomainNotFound(f"no such domain {uuid} on {self.uri}")
        return dom

    def _running(self, uuid: str, what: str) -> FakeDomain:
        dom = self._get(uuid)
        if dom.state not in ACTIVE_STATES:
            raise HypervisorError(f"{what}: domain {uuid} is not running")
        return dom

    def _cputime(self, dom: FakeDomain) -> int:
        if dom.state not in ACTIVE_STATES:
            return 0
        return int(max(0.0, self.clock() - dom.started_at) * self.cpu_share * dom.vcpus * 1e9)

    # ---- the interface -----------------------------------------------------------------------

    def kvm_available(self) -> bool:
        return self.kvm

    def list_domains(self) -> dict[str, DomainInfo]:
        with self.network.lock:
            self._enter("list_domains")
            return {u: DomainInfo(uuid=u, name=d.name, state=d.state, reason=d.reason, vcpus=d.vcpus,
                                  memory_mib=d.memory_kib // 1024, max_memory_mib=d.max_memory_kib // 1024)
                    for u, d in self._domains.items()}

    def start(self, xml: str) -> None:
        facts = domain_facts(xml)
        with self.network.lock:
            self._enter("start", facts.uuid)
            if facts.uuid in self._domains:
                raise DomainExists(f"start {facts.name} ({facts.uuid}): the domain is already running "
                                   f"on {self.uri}")
            if any(d.name == facts.name for d in self._domains.values()):
                raise HypervisorError(f"start {facts.name} ({facts.uuid}): another domain is named "
                                      f"{facts.name!r} on {self.uri}")
            self._domains[facts.uuid] = FakeDomain(
                uuid=facts.uuid, name=facts.name, xml=xml, vcpus=facts.vcpus, max_vcpus=facts.max_vcpus,
                memory_kib=facts.memory_kib, max_memory_kib=facts.max_memory_kib, started_at=self.clock())

    def shutdown(self, uuid: str) -> None:
        uuid = normalize_uuid(uuid)
        with self.network.lock:
            self._enter("shutdown", uuid)
            dom = self._running(uuid, "shutdown")
            if dom.shutdown_requested_at is None:
                dom.shutdown_requested_at = self.clock()
            self._tick()

    def destroy(self, uuid: str) -> None:
        uuid = normalize_uuid(uuid)
        with self.network.lock:
            self._enter("destroy", uuid)
            self._get(uuid)
            del self._domains[uuid]

    def is_running(self, uuid: str) -> bool:
        with self.network.lock:
            try:
                uuid = normalize_uuid(uuid)
            except DomainNotFound:
                return False
            self._enter("is_running", uuid)
            dom = self._domains.get(uuid)
            return dom is not None and dom.state in ACTIVE_STATES

    def live_xml(self, uuid: str) -> str:
        uuid = normalize_uuid(uuid)
        with self.network.lock:
            self._enter("live_xml", uuid)
            return self._get(uuid).xml

    def migrate(self, uuid: str, dest_uri: str, dest_migration_uri: str | None = None,
                max_downtime_ms: int = 300, live: bool = True, timeout: float = 120.0,
                progress: Callable[[dict[str, int]], None] | None = None,
                encrypted: bool = False) -> MigrationResult:
        uuid = normalize_uuid(uuid)
        what = f"migrate {uuid} to {dest_uri}"
        with self.network.lock:
            if max_downtime_ms < 1:
                raise HypervisorError(f"{what}: max downtime must be at least 1 ms")
            dom = self._domains.get(uuid)
            if dom is None or dom.state not in ACTIVE_STATES:
                self.calls.append(("migrate", uuid))
                raise DomainNotFound(f"{what}: the domain is not running on {self.uri}")
            dest = self.network.hosts.get(dest_uri)
            if dest is None or not dest.available:
                self.calls.append(("migrate", uuid))
                raise HypervisorUnavailable(f"{what}: cannot connect to the destination")
            if dest is self:
                self.calls.append(("migrate", uuid))
                raise HypervisorError(f"{what}: attempt to migrate guest to the same host")
            dest._tick()
            if uuid in dest._domains:
                self.calls.append(("migrate", uuid))
                raise DomainExists(f"{what}: the domain already runs on the destination")
            self._enter("migrate", uuid)
            if self.migration_duration_s > timeout:
                raise HypervisorError(f"{what}: not finished after {timeout:g}s, aborted; the domain "
                                      "keeps running here")
            if progress is not None:
                total = dom.memory_kib * 1024
                progress({"time_elapsed": int(self.migration_duration_s * 1000), "data_total": total,
                          "data_processed": total, "data_remaining": 0, "memory_iteration": 1})
            del self._domains[uuid]
            dom.started_at, dom.reason, dom.shutdown_requested_at = dest.clock(), "migrated", None
            dest._domains[uuid] = dom
            downtime = (min(self.migration_downtime_ms, max_downtime_ms) if live
                        else int(self.migration_duration_s * 1000))
            return MigrationResult(duration_s=self.migration_duration_s, downtime_ms=downtime,
                                   details={"downtime": downtime,
                                            "time_elapsed": int(self.migration_duration_s * 1000)})

    def attach_device(self, uuid: str, xml: str) -> None:
        uuid = normalize_uuid(uuid)
        with self.network.lock:
            self._enter("attach_device", uuid)
            dom = self._running(uuid, "attach a device")
            device = _parse_device(xml)
            root = ET.fromstring(dom.xml)
            devices = root.find("devices")
            if devices is None:
                devices = ET.SubElement(root, "devices")
            if any(_same_device(d, device) for d in devices):
                raise HypervisorError(f"attach a device to {uuid}: the device is already attached")
            devices.append(device)
            dom.xml = ET.tostring(root, encoding="unicode")

    def detach_device(self, uuid: str, xml: str) -> None:
        uuid = normalize_uuid(uuid)
        with self.network.lock:
            self._enter("detach_device", uuid)
            dom = self._running(uuid, "detach a device")
            device = _parse_device(xml)
            root = ET.fromstring(dom.xml)
            devices = root.find("devices")
            match = next((d for d in (devices if devices is not None else []) if _same_device(d, device)),
                         None)
            if devices is None or match is None:
                raise HypervisorError(f"detach a device from {uuid}: no matching device found")
            devices.remove(match)
            dom.xml = ET.tostring(root, encoding="unicode")

    def set_vcpus(self, uuid: str, count: int) -> None:
        uuid = normalize_uuid(uuid)
        with self.network.lock:
            self._enter("set_vcpus", uuid)
            dom = self._running(uuid, "set vCPUs")
            if not 1 <= count <= dom.max_vcpus:
                raise HypervisorError(f"set vCPUs of {uuid} to {count}: requested vCPUs exceed the "
                                      f"maximum ({count} > {dom.max_vcpus})" if count > 0 else
                                      f"set vCPUs of {uuid}: {count} is not a positive count")
            dom.vcpus = count

    def set_memory(self, uuid: str, mib: int) -> None:
        uuid = normalize_uuid(uuid)
        with self.network.lock:
            self._enter("set_memory", uuid)
            dom = self._running(uuid, "set memory")
            if not 1 <= mib * 1024 <= dom.max_memory_kib:
                raise HypervisorError(f"set memory of {uuid} to {mib} MiB: outside 1 MiB .. "
                                      f"{dom.max_memory_kib // 1024} MiB")
            dom.memory_kib = mib * 1024

    def _stats(self, dom: FakeDomain) -> dict[str, Any]:
        cputime = self._cputime(dom)
        root = ET.fromstring(dom.xml)
        disks = []
        for disk in root.findall("devices/disk"):
            source, target = disk.find("source"), disk.find("target")
            name = None
            if source is not None:
                name = source.get("name") or source.get("file") or source.get("dev")
            dev = target.get("dev") if target is not None else None
            disks.append({"name": name or dev, "dev": dev, "rd_req": 0, "rd_bytes": 0, "wr_req": 0,
                          "wr_bytes": 0, "err": -1})
        nics = []
        for i, iface in enumerate(root.findall("devices/interface")):
            source = iface.find("source")
            nics.append({"name": f"vnet{i}", "bridge": source.get("bridge") if source is not None else None,
                         **{k: 0 for k in ("rd_bytes", "rd_packets", "rd_errors", "rd_drops", "wr_bytes",
                                           "wr_packets", "wr_errors", "wr_drops")}})
        return {"state": dom.state.upper(), "maxmem": dom.max_memory_kib, "livemem": dom.memory_kib,
                "cpus": dom.vcpus, "cputime": cputime, "mem_stats": {"actual": dom.memory_kib},
                "cpu_stats": {"cpu_time": cputime, "user_time": cputime * 4 // 5,
                              "system_time": cputime // 5},
                "disk_stats": disks, "net_stats": nics}

    def stats(self, uuid: str) -> dict[str, Any]:
        uuid = normalize_uuid(uuid)
        with self.network.lock:
            self._enter("stats", uuid)
            return self._stats(self._get(uuid))

    def all_stats(self) -> dict[str, dict[str, Any]]:
        with self.network.lock:
            self._enter("all_stats")
            return {u: self._stats(d) for u, d in self._domains.items() if d.state in ACTIVE_STATES}

    def ensure_secret(self, uuid: str, usage: str, value_b64: str) -> None:
        uuid, value, _xml = secret_args(uuid, usage, value_b64)
        with self.network.lock:
            self._enter("ensure_secret", uuid)
            other = next((u for u, (use, _v) in self.secrets.items() if use == usage and u != uuid), None)
            if other is not None:
                raise HypervisorError(f"ceph secret {uuid}: libvirt secret {other} already uses '{usage}'")
            self.secrets[uuid] = (usage, value)

    def block_resize(self, uuid: str, disk: str, size: int) -> None:
        uuid = normalize_uuid(uuid)
        with self.network.lock:
            self._enter("block_resize", uuid)
            dom = self._running(uuid, f"resize disk {disk}")
            target = rbd_target(dom.xml, disk)
            if target is None:
                raise HypervisorError(f"resize disk {disk} of {uuid}: the domain has no such disk")
            if size < 1:
                raise HypervisorError(f"resize disk {disk} of {uuid}: size {size} is not positive")
            self.disk_sizes[(uuid, target)] = size

    def suspend(self, uuid: str) -> None:
        uuid = normalize_uuid(uuid)
        with self.network.lock:
            self._enter("suspend", uuid)
            dom = self._running(uuid, "suspend")
            dom.state, dom.reason = "paused", "user"

    def resume(self, uuid: str) -> None:
        uuid = normalize_uuid(uuid)
        with self.network.lock:
            self._enter("resume", uuid)
            dom = self._get(uuid)
            if dom.state != "paused":
                raise HypervisorError(f"resume {uuid}: domain is not paused")
            dom.state, dom.reason = "running", "unpaused"

    def guest_agent_ready(self, uuid: str, timeout: int = 2) -> bool:
        uuid = normalize_uuid(uuid)
        with self.network.lock:
            self._enter("guest_agent_ready", uuid)
            dom = self._domains.get(uuid)
            return dom is not None and dom.state == "running" and dom.guest_agent

    def fs_freeze(self, uuid: str, timeout: int = 5) -> int:
        uuid = normalize_uuid(uuid)
        with self.network.lock:
            self._enter("fs_freeze", uuid)
            dom = self._running(uuid, "freeze filesystems")
            if not dom.guest_agent:
                raise HypervisorError(f"freeze filesystems of {uuid}: QEMU guest agent is not connected")
            dom.frozen = True
            return 1

    def fs_thaw(self, uuid: str, timeout: int = 5) -> int:
        uuid = normalize_uuid(uuid)
        with self.network.lock:
            self._enter("fs_thaw", uuid)
            dom = self._get(uuid)
            was, dom.frozen = dom.frozen, False
            return 1 if was else 0

    def host_resources(self) -> dict[str, Any]:
        with self.network.lock:
            self._enter("host_resources")
            used = sum(d.memory_kib for d in self._domains.values() if d.state in ACTIVE_STATES) // 1024
            return {"cpus": self.cpus, "memory_mib": self.memory_mib,
                    "memory_free_mib": max(0, self.memory_mib - used), "arch": "x86_64", "cpu_mhz": 2000,
                    "sockets": 1, "cores": self.cpus, "threads": 1}


def _parse_device(xml: str) -> ET.Element:
    try:
        return ET.fromstring(xml)
    except ET.ParseError as exc:
        raise HypervisorError(f"malformed device XML: {exc}") from None


def _same_device(a: ET.Element, b: ET.Element) -> bool:
    """libvirt's matching, roughly: same kind and same target dev, MAC, or alias."""
    if a.tag != b.tag:
        return False
    for path, attr in (("target", "dev"), ("mac", "address"), ("alias", "name")):
        ea, eb = a.find(path), b.find(path)
        if eb is not None and eb.get(attr):
            return ea is not None and (ea.get(attr) or "").lower() == (eb.get(attr) or "").lower()
    return False
