"""In-memory stand-ins for the adapters, for the pure unit tests and the HA simulator (DESIGN D11).

They honour the same contracts as the real adapters (tests/unit/test_hypervisor_fake.py runs one
suite against both), keep to an injectable clock so the simulator can run minutes of virtual time
in milliseconds, and offer failure-injection hooks for the cases that are hard to provoke for real.
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from pvc.adapters.ceph import (
    IMAGE_FORMATS,
    OSD_FLAGS,
    Locker,
    Storage,
    StorageError,
    StorageExists,
    StorageNotFound,
    StorageUnavailable,
)
from pvc.adapters.hypervisor import (
    ACTIVE_STATES,
    DomainExists,
    DomainInfo,
    DomainNotFound,
    Hypervisor,
    HypervisorError,
    HypervisorUnavailable,
    MigrationResult,
    domain_facts,
    normalize_uuid,
    rbd_target,
    secret_args,
)
from pvc.adapters.network import Link, NetworkError, NetworkHost, Nftables, Services


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
                progress: Callable[[dict[str, int]], None] | None = None) -> MigrationResult:
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


# ============================================================================================ storage

_OBJECT = 4 << 20    # RBD's default object size (order 22)
_FAKE_FEATURES = ["layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"]


@dataclass
class FakeSnapshot:
    name: str
    id: int
    size: int
    data: bytes
    protected: bool = False


@dataclass
class FakeVolume:
    """One RBD image; `data` holds the written prefix only (the rest reads as zeroes)."""

    name: str
    id: str
    size: int
    created: float
    data: bytearray = field(default_factory=bytearray)
    snapshots: dict[str, FakeSnapshot] = field(default_factory=dict)
    lockers: list[Locker] = field(default_factory=list)
    watchers: list[str] = field(default_factory=list)
    modified: float = 0.0

    def objects_used(self) -> int:
        return -(-len(self.data.rstrip(b"\0")) // _OBJECT)


@dataclass
class FakePool:
    name: str
    id: int
    pgs: int
    size: int
    min_size: int
    rule: str
    created: float
    volumes: dict[str, FakeVolume] = field(default_factory=dict)


@dataclass
class FakeOsd:
    id: int
    host: str
    device_class: str = "hdd"
    up: bool = True
    is_in: bool = True
    bytes: int = 100 << 30


@dataclass
class _StorageFault:
    op: str
    remaining: int
    error: Callable[[str], StorageError]
    target: str | None


@dataclass(eq=False)
class FakeStorage(Storage):
    """A Ceph cluster in memory, honouring the Storage contract (tests/unit/test_storage_fake.py).

    Starts with `osds` OSDs (osd.N on host hvN+1, device class hdd), the CRUSH rule
    `replicated_rule` and no pools. Volume contents are kept (only what was written), so
    snapshots, rollback, copy and write_volume can be checked with `read_volume()`.
    convert_into_volume copies raw files byte for byte; other formats are only recorded in
    `conversions` (no qemu-img in a pure test).

    Failure injection: fail_next(op) makes the next call(s) of a method raise; `available = False`
    makes every call raise StorageUnavailable. Test set-up: set_watchers(), add_locker(),
    add_osd(). Every call is appended to `calls` as (operation, target-or-None).
    """

    cluster_fsid: str = "6bd1c4c4-1cf7-4b7e-9b33-6f2d6d1b7a10"
    osds: int = 3
    clock: Callable[[], float] = time.time
    available: bool = True
    mons: tuple[str, ...] = ("10.200.0.1", "10.200.0.2", "10.200.0.3")
    calls: list[tuple[str, str | None]] = field(default_factory=list)
    conversions: list[tuple[str, str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._pools: dict[str, FakePool] = {}
        self._rules: dict[str, str | None] = {"replicated_rule": None}   # name -> device class
        self._osds: dict[int, FakeOsd] = {i: FakeOsd(i, f"hv{i + 1}") for i in range(self.osds)}
        self._flags: set[str] = set()
        self._blocklist: dict[str, float] = {}
        self._faults: list[_StorageFault] = []
        self._next_pool_id = 1
        self._next_snap_id = 1
        self._epoch = 1

    def __repr__(self) -> str:
        return f"FakeStorage({len(self._pools)} pools, {len(self._osds)} osds)"

    # ---- failure injection and test set-up ----------------------------------------------------

    def fail_next(self, op: str, error: Callable[[str], StorageError] = StorageError, times: int = 1,
                  target: str | None = None) -> None:
        """The next `times` calls of method `op` (for `target`, e.g. "vms/disk0", or any) raise."""
        with self._lock:
            self._faults.append(_StorageFault(op, times, error, target))

    def set_watchers(self, pool: str, volume: str, addresses: list[str]) -> None:
        """Pretend these client addresses have the volume open (as a running QEMU does)."""
        with self._lock:
            self._volume(pool, volume).watchers = list(addresses)

    def add_locker(self, pool: str, volume: str, locker: Locker | None = None) -> Locker:
        """Pretend a client holds a lock on the volume (default: an exclusive-lock style locker)."""
        with self._lock:
            vol = self._volume(pool, volume)
            if locker is None:
                n = 4100 + len(vol.lockers)
                locker = Locker(f"client.{n}", f"auto {140000000000 + n}", f"10.200.0.1:0/{n}")
            vol.lockers.append(locker)
            return locker

    def add_osd(self, host: str, device_class: str = "hdd", size: int = 100 << 30) -> int:
        with self._lock:
            osd_id = max(self._osds, default=-1) + 1
            self._osds[osd_id] = FakeOsd(osd_id, host, device_class, bytes=size)
            return osd_id

    def set_osd_up(self, osd_id: int, up: bool) -> None:
        """An OSD daemon dies or comes back (the cluster marks it down/up)."""
        with self._lock:
            self._osd(osd_id).up = up

    def read_volume(self, pool: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """A volume's bytes (zeroes where nothing was written), for assertions."""
        with self._lock:
            vol = self._volume(pool, name)
            end = vol.size if length is None else min(vol.size, offset + length)
            chunk = bytes(vol.data[offset:end])
            return chunk + b"\0" * (max(0, end - offset) - len(chunk))

    def flags(self) -> set[str]:
        with self._lock:
            return set(self._flags)

    def blocklisted(self) -> dict[str, float]:
        """Blocklisted address -> expiry (clock time)."""
        with self._lock:
            now = self.clock()
            return {a: t for a, t in self._blocklist.items() if t > now}

    def osd_in(self, osd_id: int) -> bool:
        with self._lock:
            return self._osd(osd_id).is_in

    # ---- internals ---------------------------------------------------------------------------

    def _enter(self, op: str, target: str | None = None) -> None:
        self.calls.append((op, target))
        if not self.available:
            raise StorageUnavailable(f"{op}: cannot reach the Ceph cluster (fake: down)")
        for fault in self._faults:
            if fault.op == op and fault.remaining > 0 and fault.target in (None, target):
                fault.remaining -= 1
                raise fault.error(f"{op}{' ' + target if target else ''}: injected failure")

    def _pool(self, name: str) -> FakePool:
        pool = self._pools.get(name)
        if pool is None:
            raise StorageNotFound(f"pool {name}: not found")
        return pool

    def _volume(self, pool: str, name: str) -> FakeVolume:
        vol = self._pool(pool).volumes.get(name)
        if vol is None:
            raise StorageNotFound(f"volume {pool}/{name}: not found")
        return vol

    def _snapshot(self, pool: str, volume: str, name: str) -> FakeSnapshot:
        snap = self._volume(pool, volume).snapshots.get(name)
        if snap is None:
            raise StorageNotFound(f"snapshot {pool}/{volume}@{name}: not found")
        return snap

    def _osd(self, osd_id: int) -> FakeOsd:
        osd = self._osds.get(osd_id)
        if osd is None:
            raise StorageNotFound(f"osd.{osd_id}: not found")
        return osd

    @staticmethod
    def _check_name(kind: str, ref: str, name: str) -> None:
        if not name or "/" in name or "@" in name or name.strip() != name:
            raise StorageError(f"{kind} {ref}: invalid name {name!r}")

    @staticmethod
    def _check_size(ref: str, size: int) -> None:
        if size < 1:
            raise StorageError(f"volume {ref}: invalid size {size} (must be at least 1 byte)")

    def _changed(self) -> None:
        self._epoch += 1

    # ---- cluster -----------------------------------------------------------------------------

    def fsid(self) -> str:
        with self._lock:
            self._enter("fsid")
            return self.cluster_fsid

    def mon_addresses(self) -> list[tuple[str, int]]:
        with self._lock:
            self._enter("mon_addresses")
            return [(host, 6789) for host in self.mons]

    def set_flag(self, flag: str, enabled: bool) -> None:
        with self._lock:
            self._enter("set_flag", flag)
            if flag not in OSD_FLAGS:
                raise StorageError(f"osd flag {flag}: unknown (one of {', '.join(OSD_FLAGS)})")
            (self._flags.add if enabled else self._flags.discard)(flag)
            self._changed()

    def set_osd_in(self, osd_id: int, is_in: bool) -> None:
        with self._lock:
            self._enter("set_osd_in", f"osd.{osd_id}")
            self._osd(osd_id).is_in = is_in
            self._changed()

    def blocklist(self, address: str, seconds: int = 3600) -> None:
        with self._lock:
            self._enter("blocklist", address)
            if not address or " " in address:
                raise StorageError(f"blocklist {address!r}: invalid address")
            self._blocklist[address if "/" in address else (
                address if ":" in address else f"{address}:0/0")] = self.clock() + seconds
            self._changed()

    def unblocklist(self, address: str) -> None:
        with self._lock:
            self._enter("unblocklist", address)
            key = address if "/" in address else (address if ":" in address else f"{address}:0/0")
            self._blocklist.pop(key, None)
            self._changed()

    def mark_osds_down(self, osd_ids: list[int]) -> None:
        with self._lock:
            self._enter("osd down", ",".join(map(str, osd_ids)))
            for osd_id in osd_ids:
                self._osd(osd_id).up = False
            self._changed()

    # ---- pools -------------------------------------------------------------------------------

    def list_pools(self) -> list[str]:
        with self._lock:
            self._enter("list_pools")
            return list(self._pools)

    def create_pool(self, name: str, pgs: int, size: int, min_size: int,
                    rule: str = "replicated_rule") -> None:
        with self._lock:
            self._enter("create_pool", name)
            self._check_name("pool", name, name)
            if name in self._pools:
                raise StorageExists(f"pool {name}: already exists")
            if pgs < 1 or size < 1 or not 1 <= min_size <= size:
                raise StorageError(f"pool {name}: invalid pgs/size/min_size {pgs}/{size}/{min_size}")
            if rule not in self._rules:
                raise StorageNotFound(f"pool {name}: crush rule {rule}: not found")
            self._pools[name] = FakePool(name, self._next_pool_id, pgs, size, min_size, rule, self.clock())
            self._next_pool_id += 1
            self._changed()

    def ensure_tier_rule(self, tier: str) -> str:
        with self._lock:
            self._enter("ensure_tier_rule", tier)
            if tier == "default":
                return "replicated_rule"
            name = f"{tier}_tier"
            if name not in self._rules:
                if not any(o.device_class == tier for o in self._osds.values()):
                    raise StorageNotFound(f"crush rule {name}: device class {tier}: not found")
                self._rules[name] = tier
                self._changed()
            return name

    def set_pool_pgs(self, name: str, pgs: int) -> None:
        with self._lock:
            self._enter("set_pool_pgs", name)
            pool = self._pool(name)
            if pgs < 1:
                raise StorageError(f"pool {name}: invalid pg count {pgs}")
            pool.pgs = pgs
            self._changed()

    def remove_pool(self, name: str) -> None:
        with self._lock:
            self._enter("remove_pool", name)
            self._pool(name)
            del self._pools[name]
            self._changed()

    # ---- volumes -----------------------------------------------------------------------------

    def list_volumes(self, pool: str) -> list[str]:
        with self._lock:
            self._enter("list_volumes", pool)
            return list(self._pool(pool).volumes)

    def volume_info(self, pool: str, name: str) -> dict[str, Any]:
        with self._lock:
            self._enter("volume_info", f"{pool}/{name}")
            vol = self._volume(pool, name)
            return {"name": vol.name, "id": vol.id, "size": vol.size, "objects": -(-vol.size // _OBJECT),
                    "order": 22, "object_size": _OBJECT, "snapshot_count": len(vol.snapshots),
                    "block_name_prefix": f"rbd_data.{vol.id}", "format": 2, "features": list(_FAKE_FEATURES),
                    "op_features": [], "flags": [], "create_timestamp": time.ctime(vol.created),
                    "access_timestamp": time.ctime(vol.modified),
                    "modify_timestamp": time.ctime(vol.modified)}

    def create_volume(self, pool: str, name: str, size: int) -> None:
        ref = f"{pool}/{name}"
        with self._lock:
            self._enter("create_volume", ref)
            vols = self._pool(pool).volumes
            self._check_name("volume", ref, name)
            self._check_size(ref, size)
            if name in vols:
                raise StorageExists(f"volume {ref}: already exists")
            now = self.clock()
            vols[name] = FakeVolume(name, uuidlib.uuid4().hex[:12], size, now, modified=now)

    def resize_volume(self, pool: str, name: str, size: int) -> None:
        ref = f"{pool}/{name}"
        with self._lock:
            self._enter("resize_volume", ref)
            vol = self._volume(pool, name)
            self._check_size(ref, size)
            vol.size = size
            del vol.data[size:]
            vol.modified = self.clock()

    def rename_volume(self, pool: str, name: str, new_name: str) -> None:
        ref = f"{pool}/{name}"
        with self._lock:
            self._enter("rename_volume", ref)
            vols = self._pool(pool).volumes
            vol = self._volume(pool, name)
            self._check_name("volume", f"{pool}/{new_name}", new_name)
            if new_name in vols:
                raise StorageExists(f"volume {pool}/{new_name}: already exists")
            vol.name = new_name
            vols[new_name] = vols.pop(name)

    def copy_volume(self, pool: str, name: str, new_name: str) -> None:
        ref = f"{pool}/{name}"
        with self._lock:
            self._enter("copy_volume", ref)
            vols = self._pool(pool).volumes
            vol = self._volume(pool, name)
            self._check_name("volume", f"{pool}/{new_name}", new_name)
            if new_name in vols:
                raise StorageExists(f"volume {pool}/{new_name}: already exists")
            now = self.clock()
            vols[new_name] = FakeVolume(new_name, uuidlib.uuid4().hex[:12], vol.size, now,
                                        data=bytearray(vol.data), modified=now)

    def remove_volume(self, pool: str, name: str) -> None:
        ref = f"{pool}/{name}"
        with self._lock:
            self._enter("remove_volume", ref)
            vol = self._volume(pool, name)
            if vol.watchers:
                raise StorageError(f"volume {ref}: in use (watched by {', '.join(vol.watchers)})")
            del self._pools[pool].volumes[name]

    def write_volume(self, pool: str, name: str, source: BinaryIO, chunk: int = 4 << 20) -> int:
        ref = f"{pool}/{name}"
        with self._lock:
            self._enter("write_volume", ref)
            vol = self._volume(pool, name)
            written = 0
            while block := source.read(chunk):
                if written + len(block) > vol.size:
                    raise StorageError(f"volume {ref}: the data is larger than the volume "
                                       f"({vol.size} bytes)")
                if len(vol.data) < written:
                    vol.data.extend(b"\0" * (written - len(vol.data)))
                vol.data[written:written + len(block)] = block
                written += len(block)
            vol.modified = self.clock()
            return written

    def convert_into_volume(self, pool: str, name: str, path: str, image_format: str) -> None:
        ref = f"{pool}/{name}"
        with self._lock:
            self._enter("convert_into_volume", ref)
            vol = self._volume(pool, name)
            if image_format not in IMAGE_FORMATS:
                raise StorageError(f"volume {ref}: unknown image format {image_format!r} "
                                   f"(one of {', '.join(IMAGE_FORMATS)})")
            if not os.path.isfile(path):
                raise StorageError(f"volume {ref}: cannot convert {path}: no such file")
            self.conversions.append((pool, name, path, image_format))
            if image_format == "raw":
                size = os.path.getsize(path)
                if size > vol.size:
                    raise StorageError(f"volume {ref}: the image {path} is larger than the volume "
                                       f"({size} > {vol.size} bytes)")
                with open(path, "rb") as handle:
                    self.write_volume(pool, name, handle)

    def watchers(self, pool: str, name: str) -> list[str]:
        with self._lock:
            self._enter("watchers", f"{pool}/{name}")
            return list(self._volume(pool, name).watchers)

    def lockers(self, pool: str, name: str) -> list[Locker]:
        with self._lock:
            self._enter("lockers", f"{pool}/{name}")
            return list(self._volume(pool, name).lockers)

    def break_lock(self, pool: str, name: str, locker: Locker) -> None:
        """As librbd (rbd_blocklist_on_break_lock): the lock goes and its holder is blocklisted."""
        ref = f"{pool}/{name}"
        with self._lock:
            self._enter("break_lock", ref)
            vol = self._volume(pool, name)
            key = (locker.client, locker.cookie)
            match = next((lk for lk in vol.lockers if (lk.client, lk.cookie) == key), None)
            if match is None:
                raise StorageNotFound(f"volume {ref}: lock {locker.client} {locker.cookie!r}: not found")
            vol.lockers.remove(match)
            self._blocklist[match.address] = self.clock() + 3600

    # ---- snapshots ---------------------------------------------------------------------------

    def list_snapshots(self, pool: str, volume: str) -> list[str]:
        with self._lock:
            self._enter("list_snapshots", f"{pool}/{volume}")
            return list(self._volume(pool, volume).snapshots)

    def create_snapshot(self, pool: str, volume: str, name: str) -> None:
        ref = f"{pool}/{volume}@{name}"
        with self._lock:
            self._enter("create_snapshot", ref)
            vol = self._volume(pool, volume)
            self._check_name("snapshot", ref, name)
            if name in vol.snapshots:
                raise StorageExists(f"snapshot {ref}: already exists")
            vol.snapshots[name] = FakeSnapshot(name, self._next_snap_id, vol.size, bytes(vol.data))
            self._next_snap_id += 1

    def rename_snapshot(self, pool: str, volume: str, name: str, new_name: str) -> None:
        ref = f"{pool}/{volume}@{name}"
        with self._lock:
            self._enter("rename_snapshot", ref)
            vol = self._volume(pool, volume)
            snap = self._snapshot(pool, volume, name)
            self._check_name("snapshot", f"{pool}/{volume}@{new_name}", new_name)
            if new_name in vol.snapshots:
                raise StorageExists(f"snapshot {pool}/{volume}@{new_name}: already exists")
            snap.name = new_name
            vol.snapshots = {(new_name if k == name else k): v for k, v in vol.snapshots.items()}

    def rollback_snapshot(self, pool: str, volume: str, name: str) -> None:
        ref = f"{pool}/{volume}@{name}"
        with self._lock:
            self._enter("rollback_snapshot", ref)
            vol = self._volume(pool, volume)
            snap = self._snapshot(pool, volume, name)
            vol.size, vol.data, vol.modified = snap.size, bytearray(snap.data), self.clock()

    def remove_snapshot(self, pool: str, volume: str, name: str) -> None:
        ref = f"{pool}/{volume}@{name}"
        with self._lock:
            self._enter("remove_snapshot", ref)
            self._snapshot(pool, volume, name)
            del self._volume(pool, volume).snapshots[name]

    # ---- mon commands ------------------------------------------------------------------------

    def mon_command(self, prefix: str, **args: Any) -> Any:
        """The answers PVC reads, in Ceph 16's JSON shapes; other prefixes raise StorageError."""
        with self._lock:
            self._enter("mon_command", prefix)
            handler = _FAKE_MON_COMMANDS.get(prefix)
            if handler is None:
                raise StorageError(f"ceph {prefix}: unknown command (fake)")
            return handler(self, args)

    def mon_command_text(self, prefix: str, **args: Any) -> str:
        with self._lock:
            self._enter("mon_command_text", prefix)
            if prefix == "status":
                return self._status_text()
            if prefix == "df":
                return self._df_text()
            if prefix == "health":
                return self._health()["status"]
            raise StorageError(f"ceph {prefix}: unknown command (fake)")

    def _osd_used(self) -> int:
        """Raw bytes used per OSD: data spread evenly, plus bluestore's ~290 MB of metadata."""
        total = sum(p.size * sum(len(v.data) for v in p.volumes.values()) for p in self._pools.values())
        return (290 << 20) + total // max(1, len(self._osds))

    def _totals(self) -> tuple[int, int]:
        size = sum(o.bytes for o in self._osds.values() if o.is_in)
        used = self._osd_used() * sum(1 for o in self._osds.values() if o.is_in)
        return size, min(size, used)

    def _pool_stats(self, pool: FakePool) -> dict[str, Any]:
        size, used = self._totals()
        stored = sum(len(v.data) for v in pool.volumes.values())
        objects = sum(v.objects_used() for v in pool.volumes.values())
        max_avail = max(0, size - used) // max(1, pool.size)
        bytes_used = stored * pool.size
        return {"stored": stored, "objects": objects, "kb_used": -(-bytes_used // 1024),
                "bytes_used": bytes_used,
                "percent_used": bytes_used / (bytes_used + max_avail * pool.size) if bytes_used else 0.0,
                "max_avail": max_avail}

    def _health(self) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        if self._flags:
            flags = ",".join(sorted(self._flags))
            checks["OSDMAP_FLAGS"] = {
                "severity": "HEALTH_WARN", "muted": False,
                "summary": {"message": f"{flags} flag(s) set", "count": len(self._flags)}}
        down = [o for o in self._osds.values() if not o.up]
        if down:
            checks["OSD_DOWN"] = {"severity": "HEALTH_WARN",
                                  "summary": {"message": f"{len(down)} osds down", "count": len(down)},
                                  "muted": False}
        return {"status": "HEALTH_WARN" if checks else "HEALTH_OK", "checks": checks, "mutes": []}

    def _status(self) -> dict[str, Any]:
        size, used = self._totals()
        pgs = sum(p.pgs for p in self._pools.values())
        objects = sum(v.objects_used() for p in self._pools.values() for v in p.volumes.values())
        stored = sum(len(v.data) for p in self._pools.values() for v in p.volumes.values())
        now = int(self.clock())
        return {
            "fsid": self.cluster_fsid, "health": self._health(), "election_epoch": 4,
            "quorum": list(range(len(self.mons))),
            "quorum_names": [f"hv{i + 1}" for i in range(len(self.mons))], "quorum_age": 3600,
            "monmap": {"epoch": 1, "min_mon_release_name": "pacific", "num_mons": len(self.mons)},
            "osdmap": {"epoch": self._epoch, "num_osds": len(self._osds),
                       "num_up_osds": sum(o.up for o in self._osds.values()), "osd_up_since": now - 3600,
                       "num_in_osds": sum(o.is_in for o in self._osds.values()), "osd_in_since": now - 3600,
                       "num_remapped_pgs": 0},
            "pgmap": {"pgs_by_state": [{"state_name": "active+clean", "count": pgs}] if pgs else [],
                      "num_pgs": pgs, "num_pools": len(self._pools), "num_objects": objects,
                      "data_bytes": stored, "bytes_used": used, "bytes_avail": size - used,
                      "bytes_total": size},
            "fsmap": {"epoch": 1, "by_rank": [], "up:standby": 0},
            "mgrmap": {"available": True, "num_standbys": 0, "modules": ["iostat"], "services": {}},
            "servicemap": {"epoch": 1, "modified": "2026-01-01T00:00:00.000000+0000", "services": {}},
            "progress_events": {},
        }

    def _df(self) -> dict[str, Any]:
        size, used = self._totals()
        by_class: dict[str, Any] = {}
        for cls in sorted({o.device_class for o in self._osds.values()}):
            members = [o for o in self._osds.values() if o.device_class == cls and o.is_in]
            c_size = sum(o.bytes for o in members)
            c_used = min(c_size, self._osd_used() * len(members))
            by_class[cls] = {"total_bytes": c_size, "total_avail_bytes": c_size - c_used,
                             "total_used_bytes": c_used, "total_used_raw_bytes": c_used,
                             "total_used_raw_ratio": c_used / c_size if c_size else 0.0}
        return {"stats": {"total_bytes": size, "total_avail_bytes": size - used, "total_used_bytes": used,
                          "total_used_raw_bytes": used, "total_used_raw_ratio": used / size if size else 0.0,
                          "num_osds": len(self._osds), "num_per_pool_osds": len(self._osds),
                          "num_per_pool_omap_osds": len(self._osds)},
                "stats_by_class": by_class,
                "pools": [{"name": p.name, "id": p.id, "stats": self._pool_stats(p)}
                          for p in self._pools.values()]}

    def _osd_dump(self) -> dict[str, Any]:
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", time.gmtime(self.clock()))
        base_flags = ["sortbitwise", "recovery_deletes", "purged_snapdirs", "pglog_hardlimit"]
        flags = base_flags + sorted(self._flags)
        rule_ids = {name: i for i, name in enumerate(self._rules)}
        pools = [{"pool": p.id, "pool_name": p.name,
                  "create_time": time.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", time.gmtime(p.created)),
                  "flags": 8193, "flags_names": "hashpspool,selfmanaged_snaps", "type": 1, "size": p.size,
                  "min_size": p.min_size, "crush_rule": rule_ids[p.rule], "object_hash": 2,
                  "pg_autoscale_mode": "off", "pg_num": p.pgs, "pg_placement_num": p.pgs,
                  "pg_placement_num_target": p.pgs, "pg_num_target": p.pgs, "pg_num_pending": p.pgs,
                  "snap_mode": "selfmanaged", "quota_max_bytes": 0, "quota_max_objects": 0,
                  "erasure_code_profile": "", "application_metadata": {"rbd": {}}}
                 for p in self._pools.values()]
        osds = []
        for o in self._osds.values():
            addr, nonce = f"10.200.0.{o.id + 1}", 4000 + o.id
            osds.append({"osd": o.id, "uuid": str(uuidlib.uuid5(uuidlib.NAMESPACE_OID, f"osd.{o.id}")),
                         "up": int(o.up), "in": int(o.is_in), "weight": 1 if o.is_in else 0,
                         "primary_affinity": 1, "up_from": 7, "up_thru": 11, "down_at": 0, "lost_at": 0,
                         "public_addrs": {"addrvec": [
                             {"type": "v2", "addr": f"{addr}:6800", "nonce": nonce},
                             {"type": "v1", "addr": f"{addr}:6801", "nonce": nonce}]},
                         "public_addr": f"{addr}:6801/{nonce}",
                         "cluster_addr": f"{addr}:6803/{nonce}",
                         "state": ["exists", "up"] if o.up else ["exists"]})
        blocklist = {a: time.strftime("%Y-%m-%dT%H:%M:%S.000000+0000", time.gmtime(t))
                     for a, t in self.blocklisted().items()}
        return {"epoch": self._epoch, "fsid": self.cluster_fsid, "created": now, "modified": now,
                "flags": ",".join(flags), "flags_set": sorted(flags), "crush_version": len(self._rules) + 4,
                "full_ratio": 0.95, "backfillfull_ratio": 0.9, "nearfull_ratio": 0.85, "pool_max": max(
                    (p.id for p in self._pools.values()), default=0), "max_osd": len(self._osds),
                "require_min_compat_client": "luminous", "min_compat_client": "jewel",
                "require_osd_release": "pacific", "pools": pools, "osds": osds, "blocklist": blocklist,
                "range_blocklist": {}, "erasure_code_profiles": {"default": {
                    "k": "2", "m": "2", "plugin": "jerasure", "technique": "reed_sol_van"}}}

    def _osd_node(self, o: FakeOsd, with_df: bool) -> dict[str, Any]:
        node: dict[str, Any] = {"id": o.id, "device_class": o.device_class, "name": f"osd.{o.id}",
                                "type": "osd", "type_id": 0, "crush_weight": o.bytes / (1 << 40), "depth": 2,
                                "pool_weights": {}, "reweight": 1 if o.is_in else 0,
                                "status": "up" if o.up else "down"}
        if with_df:
            used = min(o.bytes, self._osd_used()) if o.is_in else 0
            node.update({"kb": o.bytes // 1024, "kb_used": used // 1024,
                         "kb_used_data": max(0, used - (290 << 20)) // 1024, "kb_used_omap": 0,
                         "kb_used_meta": min(used, 290 << 20) // 1024,
                         "kb_avail": (o.bytes - used) // 1024, "utilization": 100.0 * used / o.bytes,
                         "var": 1, "pgs": sum(p.pgs * p.size for p in self._pools.values()) // max(1, len(
                             self._osds)) if o.is_in else 0})
        else:
            node.update({"exists": 1, "primary_affinity": 1})
        return node

    def _osd_df(self) -> dict[str, Any]:
        nodes = [self._osd_node(o, True) for o in self._osds.values()]
        total = sum(n["kb"] for n in nodes)
        used = sum(n["kb_used"] for n in nodes)
        avg = 100.0 * used / total if total else 0.0
        return {"nodes": nodes, "stray": [],
                "summary": {"total_kb": total, "total_kb_used": used,
                            "total_kb_used_data": sum(n["kb_used_data"] for n in nodes),
                            "total_kb_used_omap": 0,
                            "total_kb_used_meta": sum(n["kb_used_meta"] for n in nodes),
                            "total_kb_avail": total - used, "average_utilization": avg, "min_var": 1,
                            "max_var": 1, "dev": 0}}

    def _osd_tree(self) -> dict[str, Any]:
        hosts: dict[str, list[FakeOsd]] = {}
        for o in self._osds.values():
            hosts.setdefault(o.host, []).append(o)
        host_ids = {h: -3 - 2 * i for i, h in enumerate(hosts)}
        nodes: list[dict[str, Any]] = [{"id": -1, "name": "default", "type": "root", "type_id": 11,
                                        "children": sorted(host_ids.values())}]
        for host, members in hosts.items():
            nodes.append({"id": host_ids[host], "name": host, "type": "host", "type_id": 1,
                          "pool_weights": {}, "children": [o.id for o in members]})
            nodes.extend(self._osd_node(o, False) for o in members)
        return {"nodes": nodes, "stray": []}

    def _mon_dump(self) -> dict[str, Any]:
        mons = [{"rank": i, "name": f"hv{i + 1}",
                 "public_addrs": {"addrvec": [{"type": "v2", "addr": f"{h}:3300", "nonce": 0},
                                              {"type": "v1", "addr": f"{h}:6789", "nonce": 0}]},
                 "addr": f"{h}:6789/0", "public_addr": f"{h}:6789/0", "priority": 0, "weight": 0}
                for i, h in enumerate(self.mons)]
        return {"epoch": 1, "fsid": self.cluster_fsid, "min_mon_release": 16,
                "min_mon_release_name": "pacific", "mons": mons, "quorum": list(range(len(self.mons)))}

    def _rule_dump(self) -> list[dict[str, Any]]:
        rules = []
        for i, (name, cls) in enumerate(self._rules.items()):
            take: dict[str, Any] = ({"op": "take", "item": -1, "item_name": "default"} if cls is None else
                                    {"op": "take", "item": -2 - i, "item_name": f"default~{cls}"})
            steps = [take, {"op": "chooseleaf_firstn", "num": 0, "type": "host"}, {"op": "emit"}]
            rules.append({"rule_id": i, "rule_name": name, "ruleset": i, "type": 1, "min_size": 1,
                          "max_size": 10, "steps": steps})
        return rules

    def _status_text(self) -> str:
        st = self._status()
        om, pm = st["osdmap"], st["pgmap"]
        health = st["health"]["status"]
        for check in st["health"]["checks"].values():
            health += f"\n            {check['summary']['message']}"
        pgs = "\n".join(f"    pgs:     {s['count']} {s['state_name']}"
                        for s in pm["pgs_by_state"]) or "    pgs:"
        return (f"  cluster:\n    id:     {self.cluster_fsid}\n    health: {health}\n \n  services:\n"
                f"    mon: {len(self.mons)} daemons, quorum {','.join(st['quorum_names'])} (age 60m)\n"
                f"    mgr: hv1(active, since 60m)\n"
                f"    osd: {om['num_osds']} osds: {om['num_up_osds']} up, {om['num_in_osds']} in\n \n"
                f"  data:\n    pools:   {pm['num_pools']} pools, {pm['num_pgs']} pgs\n"
                f"    objects: {pm['num_objects']} objects, {_iec(pm['data_bytes'])}\n"
                f"    usage:   {_iec(pm['bytes_used'])} used, {_iec(pm['bytes_avail'])} / "
                f"{_iec(pm['bytes_total'])} avail\n{pgs}\n \n")

    def _df_text(self) -> str:
        df = self._df()
        lines = ["--- RAW STORAGE ---", "CLASS  SIZE  AVAIL  USED  RAW USED  %RAW USED"]
        for cls, c in df["stats_by_class"].items():
            lines.append(f"{cls}  {_iec(c['total_bytes'])}  {_iec(c['total_avail_bytes'])}  "
                         f"{_iec(c['total_used_bytes'])}  {_iec(c['total_used_raw_bytes'])}  "
                         f"{100 * c['total_used_raw_ratio']:.2f}")
        s = df["stats"]
        lines += [f"TOTAL  {_iec(s['total_bytes'])}  {_iec(s['total_avail_bytes'])}  "
                  f"{_iec(s['total_used_bytes'])}  {_iec(s['total_used_raw_bytes'])}  "
                  f"{100 * s['total_used_raw_ratio']:.2f}", " ",
                  "--- POOLS ---", "POOL  ID  PGS  STORED  OBJECTS  USED  %USED  MAX AVAIL"]
        for p in df["pools"]:
            st = p["stats"]
            lines.append(f"{p['name']}  {p['id']}  {self._pools[p['name']].pgs}  {_iec(st['stored'])}  "
                         f"{st['objects']}  {_iec(st['bytes_used'])}  {100 * st['percent_used']:.2f}  "
                         f"{_iec(st['max_avail'])}")
        return "\n".join(lines) + "\n"


def _iec(n: float) -> str:
    """Ceph's human sizes: `878 MiB`, `5.1 GiB`, `0 B`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 10 or n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _pool_get(fake: FakeStorage, args: dict[str, Any]) -> dict[str, Any]:
    pool = fake._pool(str(args.get("pool")))
    var = str(args.get("var"))
    values = {"size": pool.size, "min_size": pool.min_size, "pg_num": pool.pgs, "pgp_num": pool.pgs,
              "crush_rule": pool.rule}
    if var not in values:
        raise StorageError(f"ceph osd pool get {pool.name} {var}: unsupported variable (fake)")
    return {"pool": pool.name, "pool_id": pool.id, var: values[var]}


_FAKE_MON_COMMANDS: dict[str, Callable[[FakeStorage, dict[str, Any]], Any]] = {
    "status": lambda f, a: f._status(),
    "health": lambda f, a: f._health(),
    "df": lambda f, a: f._df(),
    "osd dump": lambda f, a: f._osd_dump(),
    "osd df": lambda f, a: f._osd_df(),
    "osd tree": lambda f, a: f._osd_tree(),
    "mon dump": lambda f, a: f._mon_dump(),
    "fsid": lambda f, a: {"fsid": f.cluster_fsid},
    "osd pool ls": lambda f, a: list(f._pools),
    "osd pool get": _pool_get,
    "osd crush rule ls": lambda f, a: list(f._rules),
    "osd crush rule dump": lambda f, a: f._rule_dump(),
    "osd blocklist ls": lambda f, a: [{"addr": k, "until": v} for k, v in f._osd_dump()["blocklist"].items()],
}


# --------------------------------------------------------------------------------------------
# Network: host links, nftables, services (the contracts of pvc.adapters.network)

@dataclass
class FakeLink:
    name: str
    kind: str
    mtu: int
    mac: str
    up: bool = False
    master: str | None = None
    alias: str | None = None
    vni: int | None = None
    parent: str | None = None          # a VLAN's lower device, a VXLAN's underlay device
    local: str | None = None           # a VXLAN's source address
    addresses: set[str] = field(default_factory=set)

    def snapshot(self) -> Link:
        return Link(name=self.name, kind=self.kind, mtu=self.mtu, mac=self.mac, up=self.up,
                    master=self.master, alias=self.alias, vni=self.vni, addresses=frozenset(self.addresses))


_FAKE_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


@dataclass(eq=False)
class FakeNetworkHost(NetworkHost):
    """A node's network stack in memory, with the kernel's bookkeeping the reconciler relies on:
    deleting a bridge detaches its ports, deleting a link drops its addresses and FDB entries,
    deleting a device deletes the VLANs on it, creation of an existing link of the same kind is
    an update. Starts with `devices` (lo plus the default cluster and bridge devices)."""

    devices: tuple[str, ...] = ("lo", "eth0", "eth1")
    vlan_support: bool = True          # False: create_vlan fails like a kernel without 802.1Q
    sysctls: dict[str, str] = field(default_factory=dict)
    announcements: list[tuple[str, str, str]] = field(default_factory=list)   # (link, ip, mac)
    closed: bool = False

    def __post_init__(self) -> None:
        self._links: dict[str, FakeLink] = {}
        self._fdb: dict[str, set[str]] = {}
        self._macs = 0
        self._faults: dict[str, list[NetworkError]] = {}
        self._lock = threading.RLock()
        for name in self.devices:
            self.add_device(name, addresses=("127.0.0.1/8", "::1/128") if name == "lo" else ())

    # -- test hooks

    def add_device(self, name: str, mtu: int = 1500, addresses: Sequence[str] = (), kind: str = "") -> None:
        """A device PVC did not create (a NIC, a guest's tap): up, no alias."""
        mac = "00:00:00:00:00:00" if name == "lo" else self._mac()
        self._links[name] = FakeLink(name=name, kind=kind, mtu=65536 if name == "lo" else mtu, mac=mac,
                                     up=True, addresses={self._norm(a, "add_device") for a in addresses})

    def fail_next(self, op: str, message: str = "injected failure", times: int = 1) -> None:
        """The next `times` calls of method `op` raise NetworkError(message)."""
        self._faults.setdefault(op, []).extend(NetworkError(f"{op}: {message}") for _ in range(times))

    def fdb(self, vxlan: str) -> set[str]:
        return set(self._fdb.get(vxlan, set()))

    # -- helpers

    def _enter(self, op: str) -> None:
        if self._faults.get(op):
            raise self._faults[op].pop(0)

    def _mac(self) -> str:
        self._macs += 1
        return "02:fa:ce:" + ":".join(f"{b:02x}" for b in self._macs.to_bytes(3, "big"))

    def _get(self, name: str, what: str) -> FakeLink:
        link = self._links.get(name)
        if link is None:
            raise NetworkError(f"{what}: no link {name}")
        return link

    @staticmethod
    def _norm(cidr: str, what: str) -> str:
        try:
            iface = ipaddress.ip_interface(cidr)
        except ValueError:
            raise NetworkError(f"{what}: '{cidr}' is not an address with a prefix length") from None
        return f"{iface.ip}/{iface.network.prefixlen}"

    def _create(self, name: str, kind: str, what: str, **attrs: Any) -> FakeLink:
        if not _FAKE_IFNAME.match(name):
            raise NetworkError(f"'{name}' is not a valid interface name")
        link = self._links.get(name)
        if link is not None and link.kind != kind:
            raise NetworkError(f"{what}: {name} exists as a {link.kind or 'plain'} device")
        if link is None:
            link = self._links[name] = FakeLink(name=name, kind=kind, mtu=1500, mac=self._mac(), **attrs)
        return link

    # -- NetworkHost

    def links(self) -> dict[str, Link]:
        with self._lock:
            self._enter("links")
            return {name: link.snapshot() for name, link in self._links.items()}

    def create_bridge(self, name: str, mtu: int, mac: str | None, alias: str, ipv6: bool = True) -> None:
        with self._lock:
            self._enter("create_bridge")
            link = self._create(name, "bridge", f"create bridge {name}")
            if not ipv6:
                self.sysctls[f"net.ipv6.conf.{name}.disable_ipv6"] = "1"
            link.mtu, link.alias, link.up = mtu, alias, True
            if mac:
                link.mac = mac.lower()

    def create_vxlan(self, name: str, vni: int, local: str, device: str, port: int, mtu: int,
                     alias: str, learning: bool = False) -> None:
        what = f"create vxlan {name} (vni {vni}) on {device}"
        with self._lock:
            self._enter("create_vxlan")
            self._get(device, what)
            try:
                ipaddress.ip_address(local)
            except ValueError:
                raise NetworkError(f"{what}: '{local}' is not an IP address") from None
            link = self._create(name, "vxlan", what, vni=vni, parent=device, local=local)
            link.mtu, link.alias, link.up = mtu, alias, True
            self._fdb.setdefault(name, set())

    def create_vlan(self, name: str, parent: str, vlan_id: int, mtu: int, alias: str) -> None:
        what = f"create vlan {name} (id {vlan_id}) on {parent}"
        with self._lock:
            self._enter("create_vlan")
            if not 1 <= vlan_id <= 4094:
                raise NetworkError(f"{what}: a VLAN id must be 1..4094")
            if not self.vlan_support:
                raise NetworkError(f"{what}: the kernel has no 802.1Q support (CONFIG_VLAN_8021Q)")
            self._get(parent, what)
            link = self._create(name, "vlan", what, vni=vlan_id, parent=parent)
            link.mtu, link.alias, link.up = mtu, alias, True

    def delete_link(self, name: str) -> None:
        with self._lock:
            self._enter("delete_link")
            if self._links.pop(name, None) is None:
                return
            self._fdb.pop(name, None)
            for other in list(self._links.values()):
                if other.master == name:
                    other.master = None
                if other.kind == "vlan" and other.parent == name:
                    self.delete_link(other.name)

    def set_link(self, name: str, *, mtu: int | None = None, mac: str | None = None,
                 master: str | None = None, up: bool | None = None) -> None:
        what = f"set link {name}"
        with self._lock:
            self._enter("set_link")
            link = self._get(name, what)
            if master:
                bridge = self._get(master, what)
                if bridge.kind != "bridge" or master == name:
                    raise NetworkError(f"{what}: {master} is not a bridge")
            if mtu is not None:
                link.mtu = mtu
            if mac is not None:
                link.mac = mac.lower()
            if master is not None:
                link.master = master or None
            if up is not None:
                link.up = up

    def flood_list(self, vxlan: str) -> set[str]:
        with self._lock:
            self._enter("flood_list")
            self._get(vxlan, f"flood list of {vxlan}")
            return set(self._fdb.get(vxlan, set()))

    def flood_lists(self) -> dict[str, set[str]]:
        with self._lock:
            self._enter("flood_lists")
            return {name: set(self._fdb.get(name, set())) for name, link in self._links.items()
                    if link.kind == "vxlan"}

    def set_flood_list(self, vxlan: str, remotes: set[str]) -> None:
        what = f"set flood list of {vxlan}"
        with self._lock:
            self._enter("set_flood_list")
            self._get(vxlan, what)
            wanted = set()
            for remote in remotes:
                try:
                    wanted.add(str(ipaddress.ip_address(remote)))
                except ValueError:
                    raise NetworkError(f"{what}: '{remote}' is not an IP address") from None
            self._fdb[vxlan] = wanted

    def add_address(self, name: str, cidr: str) -> None:
        what = f"add address {cidr} to {name}"
        with self._lock:
            self._enter("add_address")
            address = self._norm(cidr, what)
            self._get(name, what).addresses.add(address)

    def del_address(self, name: str, cidr: str) -> None:
        what = f"remove address {cidr} from {name}"
        with self._lock:
            self._enter("del_address")
            address = self._norm(cidr, what)
            link = self._links.get(name)
            if link is not None:
                link.addresses.discard(address)

    def announce(self, name: str, ip: str, mac: str) -> None:
        what = f"announce {ip} at {mac} on {name}"
        with self._lock:
            self._enter("announce")
            self._get(name, what)
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                raise NetworkError(f"{what}: '{ip}' is not an IP address") from None
            if not re.match(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$", mac):
                raise NetworkError(f"'{mac}' is not a MAC address")
            self.announcements.append((name, str(addr), mac.lower()))

    def set_sysctl(self, key: str, value: str) -> None:
        with self._lock:
            self._enter("set_sysctl")
            if not key or "/" in key or any(part in ("", ".", "..") for part in key.split(".")):
                raise NetworkError(f"sysctl {key}: not a sysctl key")
            self.sysctls[key] = value

    def close(self) -> None:
        self.closed = True


_NFT_TABLE_LINE = re.compile(r"^(delete )?table (\w+) ([A-Za-z0-9_.-]+)( \{)?\s*$")


@dataclass(eq=False)
class FakeNftables(Nftables):
    """nft in memory: `ruleset` is the last applied text, `applied` every one; tables follow the
    top-level `table`/`delete table` lines, so the atomic replacement idiom behaves as in nft.
    `fail_on(marker)` makes check() and apply() reject any text containing the marker."""

    ruleset: str | None = None
    applied: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    markers: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._tables: set[tuple[str, str]] = set()

    def fail_on(self, marker: str) -> None:
        self.markers.add(marker)

    def _validate(self, ruleset: str, what: str) -> list[tuple[bool, str, str]]:
        for number, line in enumerate(ruleset.splitlines(), 1):
            for marker in self.markers:
                if marker in line:
                    raise NetworkError(f"{what}: /dev/stdin:{number}:1-{len(line)}: Error: syntax error "
                                       f"(fake: '{marker}')\n{line}")
        if ruleset.count("{") != ruleset.count("}"):
            raise NetworkError(f"{what}: /dev/stdin: Error: syntax error, unbalanced braces (fake)")
        ops = []
        for line in ruleset.splitlines():
            m = _NFT_TABLE_LINE.match(line)
            if m:
                ops.append((bool(m.group(1)), m.group(2), m.group(3)))
        return ops

    def apply(self, ruleset: str) -> None:
        tables = set(self._tables)
        for delete, family, name in self._validate(ruleset, "nft apply"):
            if delete:
                if (family, name) not in tables:
                    raise NetworkError(f"nft apply: Error: Could not process rule: No such file or "
                                       f"directory\ndelete table {family} {name}")
                tables.discard((family, name))
            else:
                tables.add((family, name))
        self._tables = tables
        self.ruleset = ruleset
        self.applied.append(ruleset)

    def check(self, ruleset: str) -> None:
        self.checked.append(ruleset)
        self._validate(ruleset, "nft check")

    def tables(self) -> list[tuple[str, str]]:
        return sorted(self._tables)

    def delete_table(self, family: str, name: str) -> None:
        self._tables.discard((family, name))


@dataclass
class FakeService:
    key: str
    argv: tuple[str, ...]
    env: dict[str, str]
    pid: int
    running: bool = True
    signals: list[int] = field(default_factory=list)


@dataclass(eq=False)
class FakeServices(Services):
    """Services in memory: `services[key]` is the latest start of each key (argv, env, pid, the
    signals it got), `history` every start. `crash(key)` kills one (its pid file stays, as for a
    real crash); `fail_start(program)` makes starts of that program fail as if it exited at once."""

    services: dict[str, FakeService] = field(default_factory=dict)
    history: list[FakeService] = field(default_factory=list)
    next_pid: int = 1000
    failing: set[str] = field(default_factory=set)

    def crash(self, key: str) -> None:
        self.services[key].running = False

    def fail_start(self, program: str) -> None:
        self.failing.add(os.path.basename(program))

    def pid(self, key: str) -> int | None:
        svc = self.services.get(key)
        return svc.pid if svc is not None and svc.running else None

    def start(self, key: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
        if not argv:
            raise NetworkError(f"start {key}: empty command")
        if self.pid(key) is not None:
            raise NetworkError(f"start {key}: already running (pid {self.pid(key)})")
        program = os.path.basename(argv[0])
        if program in self.failing:
            self.services.pop(key, None)
            raise NetworkError(f"start {key}: {program} exited at once (status 1): injected failure")
        self.next_pid += 1
        svc = FakeService(key=key, argv=tuple(argv), env=dict(env or {}), pid=self.next_pid)
        self.services[key] = svc
        self.history.append(svc)
        return svc.pid

    def argv(self, key: str) -> list[str] | None:
        svc = self.services.get(key)
        return list(svc.argv) if svc is not None and svc.running else None

    def stop(self, key: str, timeout: float = 5.0) -> None:
        svc = self.services.pop(key, None)
        if svc is not None:
            svc.running = False

    def signal(self, key: str, signum: int) -> None:
        svc = self.services.get(key)
        if svc is None or not svc.running:
            raise NetworkError(f"signal {key}: not running")
        svc.signals.append(signum)

    def names(self) -> list[str]:
        return sorted(self.services)
