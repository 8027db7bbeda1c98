"""FakeStorage: the Storage contract in memory, for the pure unit tests and the HA simulator.

It honours the same contract as CephStorage (tests/unit/test_storage_fake.py runs one suite
against both), keeps to an injectable clock, and offers failure-injection hooks for the cases that
are hard to provoke for real. Its mon command answers are in fake_mon.py.
"""

from __future__ import annotations

import os
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from pvc.adapters.ceph import fake_mon
from pvc.adapters.ceph.base import (
    IMAGE_FORMATS,
    OSD_FLAGS,
    BlockHandle,
    Locker,
    Storage,
    StorageError,
    StorageExists,
    StorageInUse,
    StorageNotFound,
    StorageUnavailable,
)

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
                raise StorageInUse(f"volume {ref}: in use (watched by {', '.join(vol.watchers)})")
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

    # ---- block I/O (snapshot send and receive) -------------------------------------------------

    @contextmanager
    def open_block(self, pool: str, volume: str, snapshot: str | None = None,
                   write: bool = False) -> Iterator[BlockHandle]:
        ref = f"{pool}/{volume}" + (f"@{snapshot}" if snapshot else "")
        with self._lock:
            self._enter("open_block", ref)
            vol = self._volume(pool, volume)
            if write and snapshot:
                raise StorageError(f"volume {ref}: a snapshot is read-only")
            if snapshot:
                snap = self._snapshot(pool, volume, snapshot)
        yield _FakeBlock(self, vol, snap if snapshot else None, ref)

    # ---- mon commands ------------------------------------------------------------------------

    def mon_command(self, prefix: str, **args: Any) -> Any:
        """The answers PVC reads, in Ceph 16's JSON shapes; other prefixes raise StorageError."""
        with self._lock:
            self._enter("mon_command", prefix)
            return fake_mon.mon_command(self, prefix, args)

    def mon_command_text(self, prefix: str, **args: Any) -> str:
        with self._lock:
            self._enter("mon_command_text", prefix)
            return fake_mon.mon_command_text(self, prefix)


class _FakeBlock(BlockHandle):
    """Block access to a FakeVolume (or one of its snapshots); an object "exists" when it holds a
    non-zero byte, which is what thin provisioning looks like from outside."""

    def __init__(self, owner: FakeStorage, vol: FakeVolume, snap: FakeSnapshot | None, ref: str) -> None:
        self._owner, self._vol, self._snap, self._ref = owner, vol, snap, ref
        self.size = snap.size if snap else vol.size

    def _data(self) -> bytes | bytearray:
        return self._snap.data if self._snap else self._vol.data

    @staticmethod
    def _slice(data: bytes | bytearray, offset: int, length: int) -> bytes:
        chunk = bytes(data[offset:offset + length])
        return chunk + bytes(length - len(chunk))

    def extents(self, since: str | None = None) -> list[tuple[int, int, bool]]:
        with self._owner._lock:
            data = self._data()
            if since and since not in self._vol.snapshots:
                raise StorageNotFound(f"snapshot {self._ref}@{since}: not found")
            before = self._vol.snapshots[since].data if since else b""
            found = []
            for offset in range(0, self.size, _OBJECT):
                length = min(_OBJECT, self.size - offset)
                now, old = self._slice(data, offset, length), self._slice(before, offset, length)
                if now != old:
                    found.append((offset, length, now != bytes(length)))
            return found

    def read(self, offset: int, length: int) -> bytes:
        with self._owner._lock:
            self._owner._enter("block_read", self._ref)
            return self._slice(self._data(), offset, max(0, min(length, self.size - offset)))

    def write(self, offset: int, data: bytes) -> None:
        with self._owner._lock:
            self._owner._enter("block_write", self._ref)
            if offset + len(data) > self._vol.size:
                raise StorageError(f"volume {self._ref}: a write at {offset} of {len(data)} bytes passes "
                                   f"the end of the volume ({self._vol.size} bytes)")
            buf = self._vol.data
            if len(buf) < offset:
                buf.extend(bytes(offset - len(buf)))
            buf[offset:offset + len(data)] = data
            self._vol.modified = self._owner.clock()

    def discard(self, offset: int, length: int) -> None:
        with self._owner._lock:
            self._owner._enter("block_discard", self._ref)
            buf = self._vol.data
            end = min(len(buf), offset + length)
            if end > offset:
                buf[offset:end] = bytes(end - offset)

    def flush(self) -> None:
        pass
