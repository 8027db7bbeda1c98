"""Storage operations (pvc-facts §6): pools, volumes, snapshots, OSDs, flags and benchmarks.

pvcapid runs these on the primary coordinator, which can reach Ceph, through a `Storage` adapter.
Every operation validates all of its input and the cluster's state first (nothing changes when it
is refused), then acts on Ceph, then mirrors the result into the /ceph documents in ZooKeeper,
which the primary node daemon keeps refreshing with statistics:

    /ceph/pools/<p>           {name, pgs, tier, copies, mincopies, stats{id, stored_bytes, free_bytes, ...}}
    /ceph/volumes/<p>/<v>     {name, pool, stats: `rbd info --format json`}
    /ceph/snapshots/<p>/<v>/<s> {pool, volume, snapshot, stats: `rbd info` of the snapshot}
    /ceph/osds/<id>           {id, node, device, db_device, stats{...}}   (written by OSD tasks)
    /ceph/benchmarks/<job>    {id, job, pool, test_format, benchmark_result} (by the benchmark task)

Long operations (OSD add/replace/refresh/remove, DB volume groups, benchmarks) are tasks for a
node's worker; here they are only validated and submitted. Adapter errors become PVC errors in
one place (`ceph()`): not found -> 404, exists/refused -> 400, Ceph unreachable -> 503.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from kazoo.exceptions import NodeExistsError, NoNodeError

from pvc.adapters.ceph import (
    IMAGE_FORMATS,
    OSD_FLAGS,
    Storage,
    StorageError,
    StorageNotFound,
    StorageUnavailable,
)
from pvc.adapters.osd import OsdError, parse_file_device
from pvc.cluster import tasks as tasks_mod
from pvc.cluster import vms as vms_mod
from pvc.cluster.common import limit_matcher
from pvc.cluster.nodes import get_node, primary_node
from pvc.core import schema
from pvc.core.errors import Conflict, InvalidInput, NotFound, PVCError
from pvc.core.records import TaskRecord
from pvc.core.units import parse_size
from pvc.core.zk import ZK, encode

TIERS = ("default", "hdd", "ssd", "nvme")
DEFAULT_RULE = "replicated_rule"
SAFE_RATIO = 0.8              # volumes may fill a pool to 80 % unless forced (upstream rule)
STATS_MAX_AGE = 60.0          # older pool statistics are refreshed from `ceph df` before a space check
MAX_NAME = 100
MAX_PGS = 65536               # Ceph's mon_max_pool_pg_num
MAX_COPIES = 10               # Ceph: "pool size must be between 1 and 10"
MAX_OSDS_PER_DEVICE = 16
BLOCK_RESIZE_TIMEOUT = 30.0
POLL_INTERVAL = 0.2
VM_STOPPED = ("stop", "disable", "fail")
DF_LAG_WAIT = 10.0          # seconds to wait for a new pool to appear in `ceph df`
OSD_PLACEHOLDER = "|"         # stats value until the first real statistics (pvc-facts §2.5)
_UNITS = ("B", "K", "M", "G", "T", "P", "E", "Z", "Y", "R", "Q")
_FORBIDDEN = {"/": "'/'", "@": "'@'", '"': "quotes", "'": "quotes", "\\": "'\\'"}


class StorageDown(PVCError):
    """Ceph cannot be reached (or is not configured on this node); nothing was changed."""

    status = 503


# -- adapter errors -----------------------------------------------------------------------------

@contextmanager
def ceph(action: str, not_found: type[PVCError] = NotFound) -> Iterator[None]:
    """Run adapter calls, turning their errors into PVC errors that name the action.

    `not_found` is the error for something missing in Ceph: 404 where the request named it, 400
    (Conflict) where it is a precondition (e.g. no OSDs of a pool's tier).
    """
    try:
        yield
    except StorageUnavailable as exc:
        raise StorageDown(f"Ceph is unavailable, cannot {action}: {exc.message}") from None
    except StorageNotFound as exc:
        raise not_found(f"Failed to {action}: {exc.message}") from None
    except StorageError as exc:   # StorageExists included: both are refusals of a valid request
        raise Conflict(f"Failed to {action}: {exc.message}") from None


# -- validation (pure) ------------------------------------------------------------------------------

def check_name(value: str | None, field: str) -> str:
    """Pool, volume, snapshot and job names: they become ZooKeeper path elements and RBD specs
    (`pool/volume@snapshot`), so '/', '@', blanks and control characters cannot be allowed."""
    text = "" if value is None else str(value)
    if not text:
        raise InvalidInput(f"{field}: a name is required")
    if len(text) > MAX_NAME:
        raise InvalidInput(f"{field}: '{text[:40]}...' is too long ({len(text)} characters, "
                           f"at most {MAX_NAME})")
    if any(ch.isspace() for ch in text):
        raise InvalidInput(f"{field}: '{text}' may not contain spaces or other blanks")
    for char, what in _FORBIDDEN.items():
        if char in text:
            raise InvalidInput(f"{field}: '{text}' may not contain {what}")
    if any(not ch.isprintable() for ch in text):
        raise InvalidInput(f"{field}: '{text}' may not contain control characters")
    if text in (".", "..") or text.startswith("-"):
        raise InvalidInput(f"{field}: '{text}' is not a valid name (it may not be '.', '..' or "
                           f"start with '-')")
    return text


def parse_volume_size(value: str | int | None, field: str = "size") -> int:
    """Bytes of a human size ('10G', '512M', bare bytes); refusals name the field."""
    if value is None or str(value).strip() == "":
        raise InvalidInput(f"{field}: a size is required (e.g. 10G)")
    return parse_size(str(value), field)


def parse_replcfg(value: str | None, field: str = "replcfg") -> tuple[int, int]:
    """(copies, mincopies) of 'copies=N,mincopies=M' (either order), with 1 <= M <= N <= 10."""
    text = (value or "").strip()
    found: dict[str, int] = {}
    example = "e.g. 'copies=3,mincopies=2'"
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, number = (s.strip() for s in part.partition("="))
        if not sep or key not in ("copies", "mincopies") or key in found:
            raise InvalidInput(f"{field}: '{text}' is not a replication configuration ({example})")
        if not re.fullmatch(r"\d{1,6}", number):
            raise InvalidInput(f"{field}: {key} '{number}' is not a whole number ({example})")
        found[key] = int(number)
    if set(found) != {"copies", "mincopies"}:
        raise InvalidInput(f"{field}: '{text}' must give both copies and mincopies ({example})")
    copies, mincopies = found["copies"], found["mincopies"]
    if not 1 <= copies <= MAX_COPIES:
        raise InvalidInput(f"{field}: copies={copies} must be between 1 and {MAX_COPIES}")
    if not 1 <= mincopies <= copies:
        raise InvalidInput(f"{field}: mincopies={mincopies} must be between 1 and copies ({copies})")
    return copies, mincopies


def check_pgs(pgs: int, field: str = "pgs", power_of_two: bool = False) -> int:
    """Placement groups: > 0 and at most Ceph's limit; a power of two where PVC requires it."""
    if pgs < 1 or pgs > MAX_PGS:
        raise InvalidInput(f"{field}: {pgs} must be between 1 and {MAX_PGS}")
    if power_of_two and pgs & (pgs - 1):
        raise InvalidInput(f"{field}: {pgs} is not a power of two (e.g. 32, 64, 128)")
    return pgs


def check_tier(tier: str | None, field: str = "tier") -> str:
    value = tier or "default"
    if value not in TIERS:
        raise InvalidInput(f"{field}: '{tier}' is not one of {', '.join(TIERS)}")
    return value


def check_osd_id(osd_id: str | int, field: str = "osd") -> int:
    text = str(osd_id).strip()
    if not re.fullmatch(r"\d{1,9}", text):
        raise InvalidInput(f"{field}: '{osd_id}' is not an OSD ID (a whole number)")
    return int(text)


def check_device(device: str | None, field: str = "device") -> str:
    """A block device path (/dev/...), a detect string (detect:NAME:SIZE:INDEX), or a file-backed
    device (file:PATH[:SIZE]) for nodes that run OSDs directly (the lab, hosts without LVM)."""
    text = (device or "").strip()
    if not text:
        raise InvalidInput(f"{field}: a block device is required (e.g. /dev/sdb or detect:INTEL:800G:0)")
    if any(ch.isspace() or not ch.isprintable() for ch in text) or len(text) > 255:
        raise InvalidInput(f"{field}: '{text}' is not a block device path or detect string")
    if text.startswith("file:"):
        try:
            parse_file_device(text, "/")
        except OsdError as exc:
            raise InvalidInput(f"{field}: {exc}") from None
        return text
    if text.startswith("detect:"):
        if len(text.split(":")) != 4 or not all(text.split(":")[1:]):
            raise InvalidInput(f"{field}: '{text}' is not a detect string (detect:NAME:SIZE:INDEX)")
        return text
    if not text.startswith("/dev/") or "/../" in text or text.endswith("/.."):
        raise InvalidInput(f"{field}: '{text}' is not a block device path (/dev/...), detect string or "
                           f"file:PATH[:SIZE]")
    return text


def check_weight(weight: float | None, field: str = "weight") -> float:
    if weight is None or not math.isfinite(weight) or weight <= 0:
        raise InvalidInput(f"{field}: '{weight}' must be a number greater than zero (the CRUSH weight, "
                           f"usually the size in TiB)")
    return float(weight)


def check_db_options(ext_db_ratio: float | None, ext_db_size: str | None) -> tuple[float | None, int | None]:
    """The OSD DB volume is sized by a ratio of the OSD or an explicit size, never both."""
    if ext_db_ratio is not None and ext_db_size:
        raise InvalidInput("ext_db_ratio, ext_db_size: give only one of them (they are mutually exclusive)")
    if ext_db_ratio is not None and (not math.isfinite(ext_db_ratio) or not 0 < ext_db_ratio < 1):
        raise InvalidInput(f"ext_db_ratio: '{ext_db_ratio}' must be a fraction between 0 and 1 (e.g. 0.05)")
    size = parse_volume_size(ext_db_size, "ext_db_size") if ext_db_size else None
    return ext_db_ratio, size


def human_size(size: int) -> str:
    """A byte count as PVC shows sizes: exact in the largest whole unit ('1G', '1536M'), else as
    upstream rounds (up, in the smallest unit that needs at most 4 digits)."""
    for index in range(len(_UNITS) - 1, 0, -1):
        factor = 1024 ** index
        if size >= factor and size % factor == 0:
            return f"{size // factor}{_UNITS[index]}"
    for index, unit in enumerate(_UNITS):
        value = -(-size // 1024 ** index)      # integer ceiling: floats lose bytes at petabytes
        if value <= 9999:
            return f"{value}{unit}"
    return f"{size}B"


@dataclass(frozen=True)
class PoolSpace:
    """A pool's stored bytes and its free bytes (after replication), from `ceph df`."""

    stored: int
    free: int

    @property
    def safe_free(self) -> int:
        """What may still be allocated before the pool is 80 % full: (stored+free)*0.8 - stored."""
        return int((self.stored + self.free) * SAFE_RATIO) - self.stored


def check_space(size: int, space: PoolSpace, pool: str, force: bool, field: str = "size") -> None:
    """Refuse what does not fit: never beyond the free space, and beyond 80 % only with force."""
    if size >= space.free:
        raise InvalidInput(f"{field}: '{human_size(size)}' is greater than the free space in pool \"{pool}\" "
                           f"('{human_size(max(space.free, 0))}')")
    if not force and size >= space.safe_free:
        raise InvalidInput(f"{field}: '{human_size(size)}' is greater than the safe free space in pool "
                           f"\"{pool}\" ('{human_size(max(space.safe_free, 0))}' until 80% full); retry "
                           f"with force to ignore this limit")


def df_stats(df: Mapping[str, Any] | None, pool: str) -> dict[str, Any] | None:
    """The pool-statistics figures PVC keeps (pvc-facts §2.5) that a `ceph df --format json`
    answer has for `pool`: id, stored_bytes, free_bytes, used_bytes, used_percent, num_objects."""
    for entry in (df or {}).get("pools", []) or []:
        if isinstance(entry, dict) and entry.get("name") == pool:
            stats = entry.get("stats") or {}
            return {"id": entry.get("id", 0), "stored_bytes": int(stats.get("stored", 0) or 0),
                    "free_bytes": int(stats.get("max_avail", 0) or 0),
                    "used_bytes": int(stats.get("bytes_used", 0) or 0),
                    "used_percent": float(stats.get("percent_used", 0.0) or 0.0),
                    "num_objects": int(stats.get("objects", 0) or 0)}
    return None


def df_space(df: Mapping[str, Any] | None, pool: str) -> PoolSpace | None:
    """The PoolSpace of `pool` in a `ceph df --format json` answer (None if it is not there)."""
    stats = df_stats(df, pool)
    return None if stats is None else PoolSpace(stats["stored_bytes"], stats["free_bytes"])


# -- reading ZooKeeper --------------------------------------------------------------------------

def _doc(zk: ZK, path: str) -> dict[str, Any] | None:
    data = zk.get(path, None)
    return data if isinstance(data, dict) else None


def _safe(value: str | None) -> bool:
    """A name that can be looked up (anything else cannot exist, and would be a bad ZK path)."""
    try:
        check_name(value, "name")
    except InvalidInput:
        return False
    return True


def get_pool(zk: ZK, pool: str) -> dict[str, Any]:
    doc = _doc(zk, schema.pool(pool)) if _safe(pool) else None
    if doc is None:
        raise NotFound(f'No pool with name "{pool}" is present in the cluster.')
    return doc


def get_volume(zk: ZK, pool: str, volume: str) -> dict[str, Any]:
    get_pool(zk, pool)
    doc = _doc(zk, schema.volume(pool, volume)) if _safe(volume) else None
    if doc is None:
        raise NotFound(f'No volume with name "{volume}" is present in pool "{pool}".')
    return doc


def get_snapshot(zk: ZK, pool: str, volume: str, snapshot: str) -> dict[str, Any]:
    get_volume(zk, pool, volume)
    doc = _doc(zk, schema.snapshot(pool, volume, snapshot)) if _safe(snapshot) else None
    if doc is None:
        raise NotFound(f'No snapshot with name "{snapshot}" is present for volume "{volume}" '
                       f'in pool "{pool}".')
    return doc


def get_osd(zk: ZK, osd_id: str | int) -> dict[str, Any]:
    text = str(osd_id)
    doc = _doc(zk, schema.osd(text)) if re.fullmatch(r"\d{1,9}", text) else None
    if doc is None:
        raise NotFound(f'No OSD with ID "{osd_id}" is present in the cluster.')
    return doc


def _volume_size(doc: Mapping[str, Any]) -> int:
    stats = doc.get("stats") or {}
    try:
        return int(stats.get("size", 0))
    except (TypeError, ValueError):
        return 0


def pool_view(doc: Mapping[str, Any], name: str, volume_count: int) -> dict[str, Any]:
    """The pool item of API v1: {name, volume_count, tier, pgs, stats} (+ copies, mincopies)."""
    return {
        "name": doc.get("name", name),
        "volume_count": volume_count,
        "tier": doc.get("tier") or "default",
        "pgs": doc.get("pgs", 0),
        "copies": doc.get("copies"),
        "mincopies": doc.get("mincopies"),
        "stats": doc.get("stats") if isinstance(doc.get("stats"), dict) else {},
    }


def volume_view(doc: Mapping[str, Any], pool: str, name: str) -> dict[str, Any]:
    """The volume item: {name, pool, stats}, with stats.size human-readable as PVC clients show it."""
    stats = dict(doc.get("stats") or {}) if isinstance(doc.get("stats"), dict) else {}
    if isinstance(stats.get("size"), int):
        stats["size"] = human_size(stats["size"])
    return {"name": doc.get("name", name), "pool": doc.get("pool", pool), "stats": stats}


def snapshot_view(doc: Mapping[str, Any], pool: str, volume: str, name: str) -> dict[str, Any]:
    stats = doc.get("stats")
    return {"pool": pool, "volume": volume, "snapshot": name,
            "stats": stats if isinstance(stats, dict) else {}}


def osd_view(doc: Mapping[str, Any], osd_id: str) -> dict[str, Any]:
    """The OSD item: {id, fsid, node, device, is_split, db_device, stats}."""
    stats = doc.get("stats")
    return {
        "id": str(doc.get("id", osd_id)),
        "fsid": doc.get("fsid", ""),
        "node": doc.get("node", ""),
        "device": doc.get("device", ""),
        "is_split": bool(doc.get("is_split", False)),
        "db_device": doc.get("db_device") or "",
        "stats": stats if isinstance(stats, dict) else {},
    }


def benchmark_view(doc: Mapping[str, Any], job: str) -> dict[str, Any]:
    return {
        "id": str(doc.get("id", job)),
        "job": doc.get("job", job),
        "pool": doc.get("pool", ""),
        "test_format": doc.get("test_format", 0),
        "benchmark_result": doc.get("benchmark_result", "Running"),
    }


def _matches(limit: str | None) -> Any:
    matcher = limit_matcher(limit)
    return (lambda _name: True) if matcher is None else (lambda name: matcher.fullmatch(name) is not None)


def list_pools(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    """Pools whose name matches limit (fuzzy regex), sorted by Ceph pool ID like upstream."""
    keep = _matches(limit)
    names = [n for n in zk.children(schema.CEPH_POOLS) if keep(n)]
    docs = zk.get_many([schema.pool(n) for n in names])
    counts = zk.children_many([schema.pool_volumes(n) for n in names])
    out = [pool_view(docs[schema.pool(n)], n, len(counts.get(schema.pool_volumes(n), [])))
           for n in names if isinstance(docs.get(schema.pool(n)), dict)]

    def pool_id(item: dict[str, Any]) -> tuple[int, str]:
        try:
            return int(item["stats"].get("id", 0)), item["name"]
        except (TypeError, ValueError):
            return 0, item["name"]

    return sorted(out, key=pool_id)


def _volume_refs(zk: ZK, pool: str | None) -> list[tuple[str, str]]:
    pools = [pool] if pool else zk.children(schema.CEPH_VOLUMES)
    kids = zk.children_many([schema.pool_volumes(p) for p in pools])
    return [(p, v) for p in pools for v in kids.get(schema.pool_volumes(p), [])]


def list_volumes(zk: ZK, pool: str | None = None, limit: str | None = None) -> list[dict[str, Any]]:
    """Volumes (of one pool, if given) whose name matches limit; sorted by name, then pool."""
    if pool:
        try:
            get_pool(zk, pool)
        except NotFound as exc:
            raise InvalidInput(f"pool: {exc.message}") from None
    keep = _matches(limit)
    refs = [(p, v) for p, v in _volume_refs(zk, pool) if keep(v)]
    docs = zk.get_many([schema.volume(p, v) for p, v in refs])
    out = [volume_view(docs[schema.volume(p, v)], p, v) for p, v in refs
           if isinstance(docs.get(schema.volume(p, v)), dict)]
    return sorted(out, key=lambda item: (item["name"], item["pool"]))


def list_snapshots(zk: ZK, pool: str | None = None, volume: str | None = None,
                   limit: str | None = None) -> list[dict[str, Any]]:
    """Snapshots (of one pool and/or volume name) whose name matches limit; sorted by name."""
    keep = _matches(limit)
    pools = [pool] if pool else zk.children(schema.CEPH_SNAPSHOTS)
    if (pool and not _safe(pool)) or (volume and not _safe(volume)):
        return []
    kids = zk.children_many([f"{schema.CEPH_SNAPSHOTS}/{p}" for p in pools])
    vols = [(p, v) for p in pools for v in kids.get(f"{schema.CEPH_SNAPSHOTS}/{p}", [])
            if volume is None or v == volume]
    snaps = zk.children_many([schema.volume_snapshots(p, v) for p, v in vols])
    refs = [(p, v, s) for p, v in vols for s in snaps.get(schema.volume_snapshots(p, v), []) if keep(s)]
    docs = zk.get_many([schema.snapshot(p, v, s) for p, v, s in refs])
    out = [snapshot_view(docs.get(schema.snapshot(p, v, s)) or {}, p, v, s) for p, v, s in refs]
    return sorted(out, key=lambda item: (item["snapshot"], item["pool"], item["volume"]))


def list_osds(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    """OSDs whose ID matches limit (fuzzy regex), sorted by numeric ID."""
    keep = _matches(limit)
    ids = [i for i in zk.children(schema.CEPH_OSDS) if keep(i)]
    docs = zk.get_many([schema.osd(i) for i in ids])
    out = [osd_view(docs[schema.osd(i)], i) for i in ids if isinstance(docs.get(schema.osd(i)), dict)]
    return sorted(out, key=lambda item: (int(item["id"]) if item["id"].isdigit() else 1 << 40, item["id"]))


def pool_item(zk: ZK, name: str) -> dict[str, Any]:
    """One pool by exact name (GET /storage/ceph/pool/<p>)."""
    try:
        doc = get_pool(zk, name)
    except NotFound:
        raise NotFound("Pool not found.") from None
    return pool_view(doc, name, len(zk.children(schema.pool_volumes(name))))


def volume_item(zk: ZK, pool: str, name: str) -> dict[str, Any]:
    try:
        return volume_view(get_volume(zk, pool, name), pool, name)
    except NotFound:
        raise NotFound("Volume not found.") from None


def snapshot_item(zk: ZK, pool: str, volume: str, name: str) -> dict[str, Any]:
    try:
        return snapshot_view(get_snapshot(zk, pool, volume, name), pool, volume, name)
    except NotFound:
        raise NotFound("Snapshot not found.") from None


def get_osd_item(zk: ZK, osd_id: str) -> dict[str, Any]:
    """One OSD (exact ID; upstream matched this fuzzily, so '1' also returned 10, 11, ...)."""
    try:
        return osd_view(get_osd(zk, osd_id), osd_id)
    except NotFound:
        raise NotFound("OSD not found.") from None


def osd_state(zk: ZK, osd_id: str) -> dict[str, Any]:
    """{id, in, up} as 0/1 from the OSD's statistics (0 until the first statistics arrive)."""
    item = get_osd_item(zk, osd_id)

    def flag(key: str) -> int:
        value = item["stats"].get(key, 0)
        return 1 if value in (1, True, "1", "up", "in") else 0

    return {"id": item["id"], "in": flag("in"), "up": flag("up")}


def list_benchmarks(zk: ZK, job: str | None = None) -> list[dict[str, Any]]:
    """Benchmark results, newest job first; `job` selects one job by exact name."""
    if job is not None and not _safe(job):
        return []
    jobs = [job] if job else zk.children(schema.CEPH_BENCHMARKS)
    docs = zk.get_many([schema.benchmark(j) for j in jobs])
    out = [benchmark_view(docs[schema.benchmark(j)], j) for j in jobs
           if isinstance(docs.get(schema.benchmark(j)), dict)]
    return sorted(out, key=lambda item: str(item["job"]), reverse=True)


def ceph_report(zk: ZK, kind: str) -> dict[str, Any]:
    """`{type, primary_node, ceph_data}` for GET /storage/ceph/status (kind 'status') or
    /utilization (kind 'utilization'), from what the primary last reported."""
    doc = _doc(zk, schema.CEPH_STATUS)
    key = "status_text" if kind == "status" else "util_text"
    if doc is None or not isinstance(doc.get(key), str):
        raise StorageDown("No Ceph status has been reported yet: the primary node reports it every keepalive "
                          "once it can reach Ceph.")
    return {"type": kind, "primary_node": primary_node(zk) or doc.get("node", ""),
            "ceph_data": doc[key].rstrip()}


# -- VMs using volumes ----------------------------------------------------------------------------

def volume_users(zk: ZK) -> dict[str, list[vms_mod.VMEntry]]:
    """'pool/volume' -> the VMs (with their status) whose definition uses that volume."""
    out: dict[str, list[vms_mod.VMEntry]] = {}
    for entry in vms_mod.load_entries(zk):
        for ref in entry.record.rbd_volumes:
            out.setdefault(ref, []).append(entry)
    return out


def volumes_in_use(zk: ZK) -> dict[str, str]:
    """'pool/volume' -> name of a VM using it (names joined by ', ' when several share it)."""
    return {ref: ", ".join(e.record.name for e in entries) for ref, entries in volume_users(zk).items()}


def _users_of(zk: ZK, pool: str, volume: str, allow_vm: str | None = None) -> list[vms_mod.VMEntry]:
    return [e for e in volume_users(zk).get(f"{pool}/{volume}", []) if e.record.uuid != allow_vm]


def _names(entries: list[vms_mod.VMEntry]) -> str:
    return ", ".join(f'"{e.record.name}"' for e in entries)


def _refuse_in_use(zk: ZK, pool: str, volume: str, doing: str, allow_vm: str | None = None) -> None:
    users = _users_of(zk, pool, volume, allow_vm)
    if users:
        plural = "VMs" if len(users) > 1 else "VM"
        raise Conflict(f'Cannot {doing} RBD volume "{volume}" in pool "{pool}": it is used by {plural} '
                       f"{_names(users)}; remove it from the VM definition first.")


def _vm_running(entry: vms_mod.VMEntry) -> bool:
    return entry.record.state not in VM_STOPPED or vms_mod.is_running(entry.status)


# -- writing ZooKeeper ----------------------------------------------------------------------------

def _volume_doc(pool: str, name: str, stats: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "pool": pool, "stats": stats}


def _snapshot_doc(pool: str, volume: str, name: str, stats: dict[str, Any]) -> dict[str, Any]:
    return {"pool": pool, "volume": volume, "snapshot": name, "stats": stats}


def _volume_info(storage: Storage, pool: str, name: str, size: int | None = None) -> dict[str, Any]:
    """`rbd info` of the volume; a minimal stand-in if Ceph answered the change but not the read
    (the primary's next statistics pass, or a scan, fills in the rest)."""
    try:
        return storage.volume_info(pool, name)
    except StorageError:
        return {"name": name, "size": size or 0, "snapshot_count": 0}


def _write_volume(zk: ZK, pool: str, name: str, stats: dict[str, Any]) -> None:
    zk.put(schema.volume(pool, name), _volume_doc(pool, name, stats))
    zk.ensure(schema.volume_snapshots(pool, name))


def _set_stats(zk: ZK, path: str, **stats: Any) -> None:
    """Merge figures into a document's stats, unless the document has gone meanwhile."""
    try:
        zk.update(path, lambda doc: {**doc, "stats": {**(doc.get("stats") or {}), **stats}})
    except NoNodeError:
        pass


def _delete_volume_docs(zk: ZK, pool: str, name: str) -> None:
    zk.delete(schema.volume_snapshots(pool, name))
    zk.delete(schema.volume(pool, name))


def _move(zk: ZK, creates: list[tuple[str, Any]], deletes: list[str]) -> None:
    """One transaction: write each (path, doc) in order, then delete the old paths (children first),
    so a rename is never half done in ZooKeeper. A new path that exists already (the primary's
    storage monitor may have registered the renamed volume meanwhile) is overwritten."""
    def once() -> list[Any]:
        tx = zk.transaction()
        for path, doc in creates:
            data = b"" if doc is None else encode(doc)
            if zk.client.exists(path) is None:
                tx.create(path, data)
            elif doc is not None:
                tx.set_data(path, data)
        for path in deletes:
            tx.delete(path)
        return list(tx.commit())

    results = zk.retry(once)
    failed = next((r for r in results if isinstance(r, Exception) and type(r).__name__ != "RolledBackError"),
                  None)
    if isinstance(failed, NodeExistsError):
        raise Conflict("The new name appeared in ZooKeeper meanwhile; scan the volume to repair "
                       "its documents.")
    if failed is not None:
        raise Conflict(f"ZooKeeper refused the rename ({type(failed).__name__}); scan the volume to "
                       f"repair its documents.")


# -- space ----------------------------------------------------------------------------------------

def _stats_fresh(zk: ZK) -> bool:
    status = _doc(zk, schema.CEPH_STATUS)
    try:
        return status is not None and time.time() - float(status.get("time", 0)) <= STATS_MAX_AGE
    except (TypeError, ValueError):
        return False


def pool_space(zk: ZK, storage: Storage, pool: str, doc: Mapping[str, Any] | None = None) -> PoolSpace:
    """The pool's space: from its statistics in ZooKeeper while the primary keeps them fresh,
    else straight from `ceph df` (and mirrored into the pool document)."""
    doc = doc if doc is not None else get_pool(zk, pool)
    stats = doc.get("stats") or {}
    if _stats_fresh(zk) and isinstance(stats, dict) and {"free_bytes", "stored_bytes"} <= set(stats):
        try:
            return PoolSpace(int(stats["stored_bytes"]), int(stats["free_bytes"]))
        except (TypeError, ValueError):
            pass
    # `ceph df` comes from the mgr, which learns of a new pool a second or two after it exists
    deadline = time.monotonic() + DF_LAG_WAIT
    while True:
        with ceph(f'read the free space of pool "{pool}"'):
            stats = df_stats(storage.mon_command("df"), pool)
        if stats is not None or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if stats is None:
        raise Conflict(f'Ceph reports no space figures for pool "{pool}"; is it still being created?')
    _set_stats(zk, schema.pool(pool), **stats)
    return PoolSpace(stats["stored_bytes"], stats["free_bytes"])


# -- pools ----------------------------------------------------------------------------------------

def add_pool(zk: ZK, storage: Storage, name: str, pgs: int, replcfg: str, tier: str | None = None) -> str:
    """Create a replicated RBD pool on the tier's CRUSH rule; register it in ZooKeeper."""
    check_name(name, "pool")
    check_pgs(pgs)
    copies, mincopies = parse_replcfg(replcfg)
    tier = check_tier(tier)
    if zk.exists(schema.pool(name)):
        raise Conflict(f'Pool "{name}" already exists in the cluster.')
    with ceph(f'create RBD pool "{name}" on tier "{tier}"', not_found=Conflict):
        rule = DEFAULT_RULE if tier == "default" else storage.ensure_tier_rule(tier)
        storage.create_pool(name, pgs, copies, mincopies, rule)
    try:   # first figures (the pool's ID above all, lists sort by it) until the primary's refresh
        stats = df_stats(storage.mon_command("df"), name) or {}
    except StorageError:
        stats = {}
    zk.put(schema.pool(name), {"name": name, "pgs": pgs, "tier": tier, "copies": copies,
                               "mincopies": mincopies, "stats": stats})
    zk.ensure(schema.pool_volumes(name))
    zk.ensure(f"{schema.CEPH_SNAPSHOTS}/{name}")
    return f'Created RBD pool "{name}" with {pgs} PGs'


def set_pool_pgs(zk: ZK, storage: Storage, name: str, pgs: int) -> str:
    check_pgs(pgs, power_of_two=True)
    get_pool(zk, name)
    with ceph(f'set the PG count of pool "{name}" to {pgs}'):
        storage.set_pool_pgs(name, pgs)
    try:
        zk.update(schema.pool(name), lambda doc: {**doc, "pgs": pgs})
    except NoNodeError:
        pass
    return f'Set PGs count to {pgs} for RBD pool "{name}".'


def remove_pool(zk: ZK, storage: Storage, name: str) -> str:
    """Remove a pool with all its volumes; refused while any VM uses one of them."""
    get_pool(zk, name)
    users = {ref: entries for ref, entries in volume_users(zk).items() if ref.split("/", 1)[0] == name}
    if users:
        detail = "; ".join(f"{ref} by {_names(entries)}" for ref, entries in sorted(users.items()))
        raise Conflict(f'Cannot remove RBD pool "{name}": VMs use its volumes ({detail}).')
    with ceph(f'remove RBD pool "{name}"'):
        try:
            storage.remove_pool(name)
        except StorageNotFound:
            pass   # already gone from Ceph: forgetting it is all that is left to do
    zk.delete(f"{schema.CEPH_SNAPSHOTS}/{name}")
    zk.delete(schema.pool_volumes(name))
    zk.delete(schema.pool(name))
    return f'Removed RBD pool "{name}" and all volumes.'


# -- volumes --------------------------------------------------------------------------------------

def add_volume(zk: ZK, storage: Storage, pool: str, name: str, size: str | int, force: bool = False) -> str:
    """Create a volume if it fits the pool (see check_space); register it with its `rbd info`."""
    check_name(pool, "pool")
    check_name(name, "volume")
    size_bytes = parse_volume_size(size)
    doc = get_pool(zk, pool)
    if zk.exists(schema.volume(pool, name)):
        raise Conflict(f'Volume "{name}" already exists in pool "{pool}".')
    check_space(size_bytes, pool_space(zk, storage, pool, doc), pool, force)
    with ceph(f'create RBD volume "{name}" in pool "{pool}"'):
        storage.create_volume(pool, name, size_bytes)
    _write_volume(zk, pool, name, _volume_info(storage, pool, name, size_bytes))
    return f'Created RBD volume "{name}" of size "{human_size(size_bytes)}" in pool "{pool}".'


def clone_volume(zk: ZK, storage: Storage, pool: str, name: str, new_name: str, force: bool = False) -> str:
    """A full copy of a volume in the same pool, if its size fits the pool."""
    check_name(new_name, "new_volume")
    source = get_volume(zk, pool, name)
    if zk.exists(schema.volume(pool, new_name)):
        raise Conflict(f'Volume "{new_name}" already exists in pool "{pool}".')
    size = _volume_size(source)
    check_space(size, pool_space(zk, storage, pool), pool, force, field="new_volume")
    with ceph(f'clone RBD volume "{name}" to "{new_name}" in pool "{pool}"'):
        storage.copy_volume(pool, name, new_name)
    _write_volume(zk, pool, new_name, _volume_info(storage, pool, new_name, size))
    return f'Cloned RBD volume "{name}" to "{new_name}" in pool "{pool}".'


def resize_volume(zk: ZK, storage: Storage, pool: str, name: str, size: str | int, force: bool = False,
                  wait: float = BLOCK_RESIZE_TIMEOUT) -> str:
    """Grow (or, with force and while no VM uses it, shrink) a volume; a running VM's disk is
    grown live by a `vm.block_resize` task on its node, waited for up to `wait` seconds."""
    size_bytes = parse_volume_size(size, "new_size")
    doc = get_volume(zk, pool, name)
    with ceph(f'read RBD volume "{name}" in pool "{pool}"'):
        current = int(storage.volume_info(pool, name).get("size", _volume_size(doc)))
    users = _users_of(zk, pool, name)
    if size_bytes == current:
        return f'RBD volume "{name}" in pool "{pool}" already has size "{human_size(size_bytes)}".'
    if size_bytes < current:
        if users:
            raise Conflict(f'Cannot shrink RBD volume "{name}" in pool "{pool}" from '
                           f'"{human_size(current)}" to "{human_size(size_bytes)}": it is used by VM '
                           f"{_names(users)}, whose data would be cut off.")
        if not force:
            raise InvalidInput(f'new_size: "{human_size(size_bytes)}" is smaller than the current size '
                               f'"{human_size(current)}" of RBD volume "{name}"; shrinking discards the data '
                               f"beyond the new size: retry with force to shrink")
    else:
        check_space(size_bytes - current, pool_space(zk, storage, pool), pool, force, field="new_size")
    with ceph(f'resize RBD volume "{name}" in pool "{pool}"'):
        storage.resize_volume(pool, name, size_bytes)
    _write_volume(zk, pool, name, _volume_info(storage, pool, name, size_bytes))
    text = f'Resized RBD volume "{name}" to size "{human_size(size_bytes)}" in pool "{pool}".'
    running = [e for e in users if _vm_running(e)]
    for entry in running:
        text += " " + _live_resize(zk, entry, pool, name, size_bytes, wait)
    return text


def _live_resize(zk: ZK, entry: vms_mod.VMEntry, pool: str, volume: str, size: int, wait: float) -> str:
    """Ask the VM's node to grow the running disk (libvirt blockResize); report what happened."""
    record = entry.record
    node = (entry.status.node if entry.status and entry.status.running and entry.status.node else record.node)
    name = f'VM "{record.name}"'
    if not node:
        return f"{name} is not assigned to a node; it sees the new size when it next starts."
    try:
        args = {"uuid": record.uuid, "domain": record.name, "pool": pool, "volume": volume, "size": size}
        task = tasks_mod.submit(zk, "vm.block_resize", args, target=node)
    except PVCError as exc:
        return (f"Could not ask node {node} to resize the disk of running {name} ({exc.message}); it "
                f"sees the new size when it next restarts.")
    final = _wait_task(zk, task, wait)
    if final is None:
        return (f"The live resize of the disk of running {name} on node {node} is still pending "
                f"(task {task.id}).")
    if final.state == "SUCCESS":
        return f"The disk of running {name} grew to the new size."
    return (f"The live resize of the disk of running {name} failed ({final.status}); it sees the new "
            f"size when it next restarts.")


def _wait_task(zk: ZK, task: TaskRecord, timeout: float) -> TaskRecord | None:
    deadline = time.monotonic() + timeout
    while True:
        current = tasks_mod.get_task(zk, task.id)
        if current.finished_state:
            return current
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_INTERVAL)


def rename_volume(zk: ZK, storage: Storage, pool: str, name: str, new_name: str,
                  allow_vm: str | None = None) -> str:
    """Rename a volume no VM uses; its snapshot documents move with it (one transaction).

    `allow_vm` (a VM uuid) skips that VM in the in-use check, for renaming a VM with its volumes
    (the caller then points the VM's definition at the new name).
    """
    check_name(new_name, "new_name")
    get_volume(zk, pool, name)
    if new_name == name:
        raise InvalidInput(f'new_name: RBD volume "{name}" already has that name')
    if zk.exists(schema.volume(pool, new_name)):
        raise Conflict(f'Volume "{new_name}" already exists in pool "{pool}".')
    _refuse_in_use(zk, pool, name, "rename", allow_vm)
    with ceph(f'rename RBD volume "{name}" to "{new_name}" in pool "{pool}"'):
        storage.rename_volume(pool, name, new_name)
    stats = _volume_info(storage, pool, new_name)
    snaps = zk.children(schema.volume_snapshots(pool, name))
    docs = zk.get_many([schema.snapshot(pool, name, s) for s in snaps])
    moves: list[tuple[str, Any]] = [(schema.volume(pool, new_name), _volume_doc(pool, new_name, stats)),
                                    (schema.volume_snapshots(pool, new_name), None)]
    for snap in snaps:
        old = docs.get(schema.snapshot(pool, name, snap))
        old_stats = old.get("stats", {}) if isinstance(old, dict) else {}
        moves.append((schema.snapshot(pool, new_name, snap), _snapshot_doc(pool, new_name, snap, old_stats)))
    deletes = [schema.snapshot(pool, name, s) for s in snaps]
    if zk.exists(schema.volume_snapshots(pool, name)):
        deletes.append(schema.volume_snapshots(pool, name))
    deletes.append(schema.volume(pool, name))
    zk.ensure(f"{schema.CEPH_SNAPSHOTS}/{pool}")
    _move(zk, moves, deletes)
    return f'Renamed RBD volume "{name}" to "{new_name}" in pool "{pool}".'


def remove_volume(zk: ZK, storage: Storage, pool: str, name: str, allow_vm: str | None = None) -> str:
    """Remove a volume with all its snapshots; refused while a VM uses it.

    `allow_vm` (a VM uuid) skips that VM in the in-use check, for removing a VM with its disks.
    A volume already gone from Ceph is only forgotten.
    """
    get_volume(zk, pool, name)
    _refuse_in_use(zk, pool, name, "remove", allow_vm)
    with ceph(f'remove RBD volume "{name}" from pool "{pool}"'):
        try:
            storage.remove_volume(pool, name)
        except StorageNotFound:
            pass
    _delete_volume_docs(zk, pool, name)
    return f'Removed RBD volume "{name}" in pool "{pool}".'


def scan_volume(zk: ZK, storage: Storage, pool: str, name: str) -> str:
    """(Re)register a volume from Ceph, e.g. one created outside PVC: its `rbd info` and snapshots."""
    check_name(name, "volume")
    get_pool(zk, pool)
    with ceph(f'scan RBD volume "{name}" in pool "{pool}"'):
        stats = storage.volume_info(pool, name)
        snaps = storage.list_snapshots(pool, name)
    _write_volume(zk, pool, name, stats)
    known = set(zk.children(schema.volume_snapshots(pool, name)))
    for snap in snaps:
        if snap not in known and _safe(snap):
            zk.put(schema.snapshot(pool, name, snap), _snapshot_doc(pool, name, snap, _snapshot_stats(stats)))
    for gone in known - set(snaps):
        zk.delete(schema.snapshot(pool, name, gone))
    count = len(snaps)
    return (f'Scanned RBD volume "{name}" in pool "{pool}": size "{human_size(int(stats.get("size", 0)))}", '
            f'{count} snapshot{"" if count == 1 else "s"}.')


def check_upload(zk: ZK, storage: Storage, pool: str, name: str, image_format: str, upload_size: int) -> None:
    """Refuse an upload that cannot go into the volume, before anything is written.

    The volume must exist (upstream rule); a raw image must be exactly the volume's size (it is
    written as is); other formats are converted by qemu-img, which checks the fit itself.
    """
    if image_format not in IMAGE_FORMATS:
        raise InvalidInput(f"image_format: '{image_format}' is not one of {', '.join(IMAGE_FORMATS)}")
    try:
        get_volume(zk, pool, name)
    except NotFound as exc:
        raise InvalidInput(f"{exc.message} Create it before uploading an image into it.") from None
    if upload_size <= 0:
        raise InvalidInput("file: the uploaded file is empty")
    if image_format != "raw":
        return
    with ceph(f'read RBD volume "{name}" in pool "{pool}"'):
        volume_size = int(storage.volume_info(pool, name).get("size", 0))
    if upload_size != volume_size:
        raise InvalidInput(f"file: the raw image is {upload_size} bytes ({human_size(upload_size)}) but "
                           f'volume "{name}" is {volume_size} bytes ({human_size(volume_size)}); a raw image '
                           f"must be exactly the size of the volume")


def write_upload(zk: ZK, storage: Storage, pool: str, name: str, image_format: str,
                 source: BinaryIO | None = None, path: str | None = None) -> str:
    """Write a checked upload (check_upload): raw streamed from `source`, other formats converted
    from the file at `path`; the volume's statistics are read again afterwards."""
    if image_format == "raw":
        if source is None:
            raise InvalidInput("file: no image data")
        with ceph(f'write the uploaded image to RBD volume "{name}" in pool "{pool}"'):
            storage.write_volume(pool, name, source)
        text = f'Wrote uploaded file to volume "{name}" in pool "{pool}".'
    else:
        if path is None:
            raise InvalidInput("file: no image file to convert")
        with ceph(f'convert the uploaded {image_format} image into RBD volume "{name}" in pool "{pool}"'):
            storage.convert_into_volume(pool, name, path, image_format)
        text = f'Converted and wrote uploaded file to volume "{name}" in pool "{pool}".'
    _write_volume(zk, pool, name, _volume_info(storage, pool, name))
    return text


# -- snapshots ------------------------------------------------------------------------------------

def _snapshot_stats(volume_stats: Mapping[str, Any]) -> dict[str, Any]:
    """`rbd info` of a snapshot is its image's info at that moment, plus `protected`."""
    return {**volume_stats, "protected": "false"}


def add_snapshot(zk: ZK, storage: Storage, pool: str, volume: str, name: str) -> str:
    check_name(name, "snapshot")
    get_volume(zk, pool, volume)
    if zk.exists(schema.snapshot(pool, volume, name)):
        raise Conflict(f'Snapshot "{name}" of volume "{volume}" already exists in pool "{pool}".')
    with ceph(f'create RBD snapshot "{name}" of volume "{volume}" in pool "{pool}"'):
        storage.create_snapshot(pool, volume, name)
    stats = _volume_info(storage, pool, volume)
    zk.put(schema.snapshot(pool, volume, name), _snapshot_doc(pool, volume, name, _snapshot_stats(stats)))
    _write_volume(zk, pool, volume, stats)
    return f'Created RBD snapshot "{name}" of volume "{volume}" in pool "{pool}".'


def rename_snapshot(zk: ZK, storage: Storage, pool: str, volume: str, name: str, new_name: str) -> str:
    check_name(new_name, "new_name")
    doc = get_snapshot(zk, pool, volume, name)
    if new_name == name:
        raise InvalidInput(f'new_name: snapshot "{name}" already has that name')
    if zk.exists(schema.snapshot(pool, volume, new_name)):
        raise Conflict(f'Snapshot "{new_name}" of volume "{volume}" already exists in pool "{pool}".')
    with ceph(f'rename RBD snapshot "{name}" to "{new_name}" of volume "{volume}" in pool "{pool}"'):
        storage.rename_snapshot(pool, volume, name, new_name)
    new_doc = _snapshot_doc(pool, volume, new_name, doc.get("stats") or {})
    _move(zk, [(schema.snapshot(pool, volume, new_name), new_doc)], [schema.snapshot(pool, volume, name)])
    return f'Renamed RBD snapshot "{name}" to "{new_name}" for volume "{volume}" in pool "{pool}".'


def rollback_snapshot(zk: ZK, storage: Storage, pool: str, volume: str, name: str) -> str:
    """Roll a volume back; only while nothing uses it (its VMs stopped, no client has it open)."""
    get_snapshot(zk, pool, volume, name)
    running = [e for e in _users_of(zk, pool, volume) if _vm_running(e)]
    if running:
        raise Conflict(f'Cannot roll back RBD volume "{volume}" in pool "{pool}": VM {_names(running)} '
                       f"using it is not stopped; stop it first.")
    with ceph(f'roll back RBD volume "{volume}" in pool "{pool}" to snapshot "{name}"'):
        watchers = storage.watchers(pool, volume)
        if watchers:
            raise Conflict(f'Cannot roll back RBD volume "{volume}" in pool "{pool}": it is open by '
                           f"{', '.join(watchers)}; all I/O must be stopped first.")
        storage.rollback_snapshot(pool, volume, name)
    _write_volume(zk, pool, volume, _volume_info(storage, pool, volume))
    return f'Rolled back RBD volume "{volume}" in pool "{pool}" to snapshot "{name}".'


def remove_snapshot(zk: ZK, storage: Storage, pool: str, volume: str, name: str) -> str:
    get_snapshot(zk, pool, volume, name)
    with ceph(f'remove RBD snapshot "{name}" of volume "{volume}" in pool "{pool}"'):
        try:
            storage.remove_snapshot(pool, volume, name)
        except StorageNotFound:
            pass
    zk.delete(schema.snapshot(pool, volume, name))
    _write_volume(zk, pool, volume, _volume_info(storage, pool, volume))
    return f'Removed RBD snapshot "{name}" of volume "{volume}" in pool "{pool}".'


# -- OSDs and flags -------------------------------------------------------------------------------

def set_osd_in(zk: ZK, storage: Storage, osd_id: str, is_in: bool) -> str:
    get_osd(zk, osd_id)
    with ceph(f"set OSD {osd_id} {'in' if is_in else 'out'}"):
        storage.set_osd_in(int(osd_id), is_in)
    _set_stats(zk, schema.osd(osd_id), **{"in": 1 if is_in else 0})
    return f"Set OSD {osd_id} {'online' if is_in else 'offline'}."


def set_flag(storage: Storage, option: str, enabled: bool) -> str:
    if option not in OSD_FLAGS:
        raise InvalidInput(f"option: '{option}' is not one of {', '.join(OSD_FLAGS)}")
    with ceph(f'{"set" if enabled else "unset"} OSD property "{option}"'):
        storage.set_flag(option, enabled)
    return f'{"Set" if enabled else "Unset"} OSD property "{option}".'


def _node_input(zk: ZK, node: str | None, field: str = "node") -> str:
    if not node:
        raise InvalidInput(f"{field}: a node is required")
    try:
        return get_node(zk, node).name
    except NotFound:
        raise InvalidInput(f"{field}: no node named '{node}' is in the cluster") from None


def _osd_node(zk: ZK, osd_id: str) -> str:
    doc = get_osd(zk, osd_id)
    node = doc.get("node") or ""
    if not node or not zk.exists(schema.node(node)):
        raise Conflict(f"OSD {osd_id} has no known node ({node or 'none recorded'}); cannot route the task.")
    return str(node)


def add_osd(zk: ZK, node: str, device: str, weight: float, ext_db_ratio: float | None = None,
            ext_db_size: str | None = None, osd_count: int | None = None) -> TaskRecord:
    """Queue `osd.add` on the node. Args: {node, device, weight, ext_db_ratio, ext_db_size (bytes
    or None), osd_count}."""
    node = _node_input(zk, node)
    device = check_device(device)
    weight = check_weight(weight)
    ratio, db_size = check_db_options(ext_db_ratio, ext_db_size)
    count = 1 if osd_count is None else osd_count
    if not 1 <= count <= MAX_OSDS_PER_DEVICE:
        raise InvalidInput(f"osd_count: {count} must be between 1 and {MAX_OSDS_PER_DEVICE}")
    for osd in list_osds(zk):
        if osd["node"] == node and osd["device"] == device:
            raise Conflict(f'Block device "{device}" on node "{node}" is already used by OSD {osd["id"]}.')
    args = {"node": node, "device": device, "weight": weight, "ext_db_ratio": ratio, "ext_db_size": db_size,
            "osd_count": count}
    return tasks_mod.submit(zk, "osd.add", args, target=node)


def add_db_vg(zk: ZK, node: str, device: str) -> TaskRecord:
    """Queue `osd.add_db_vg` (the `osd-db` volume group) on the node. Args: {node, device}."""
    node = _node_input(zk, node)
    device = check_device(device)
    return tasks_mod.submit(zk, "osd.add_db_vg", {"node": node, "device": device}, target=node)


def replace_osd(zk: ZK, osd_id: str, new_device: str, old_device: str | None = None,
                weight: float | None = None, ext_db_ratio: float | None = None,
                ext_db_size: str | None = None) -> TaskRecord:
    """Queue `osd.replace` on the OSD's node. Args: {osd_id, new_device, old_device, weight,
    ext_db_ratio, ext_db_size (bytes or None)}; None means "as the old OSD"."""
    new_device = check_device(new_device, "new_device")
    old = check_device(old_device, "old_device") if old_device else None
    if weight is not None:
        check_weight(weight)
    ratio, db_size = check_db_options(ext_db_ratio, ext_db_size)
    node = _osd_node(zk, osd_id)
    return tasks_mod.submit(zk, "osd.replace", {"osd_id": int(osd_id), "new_device": new_device,
                                                "old_device": old, "weight": weight, "ext_db_ratio": ratio,
                                                "ext_db_size": db_size}, target=node)


def refresh_osd(zk: ZK, osd_id: str, device: str) -> TaskRecord:
    """Queue `osd.refresh` (re-import the OSD's LVs) on its node. Args: {osd_id, device}."""
    device = check_device(device)
    node = _osd_node(zk, osd_id)
    return tasks_mod.submit(zk, "osd.refresh", {"osd_id": int(osd_id), "device": device}, target=node)


def remove_osd(zk: ZK, osd_id: str, force: bool = False) -> TaskRecord:
    """Queue `osd.remove` on the OSD's node. Args: {osd_id, force}."""
    node = _osd_node(zk, osd_id)
    return tasks_mod.submit(zk, "osd.remove", {"osd_id": int(osd_id), "force": force}, target=node)


def run_benchmark(zk: ZK, pool: str, name: str | None = None) -> TaskRecord:
    """Queue `storage.benchmark` on the primary. Args: {pool, name (job name or None: the worker
    names it '<ISO time>_<primary>')}."""
    check_name(pool, "pool")
    if name is not None and name != "":
        check_name(name, "name")
        if zk.exists(schema.benchmark(name)):
            raise Conflict(f'name: a benchmark job named "{name}" already exists.')
    try:
        get_pool(zk, pool)
    except NotFound as exc:
        raise InvalidInput(f"pool: {exc.message}") from None
    return tasks_mod.submit(zk, "storage.benchmark", {"pool": pool, "name": name or None},
                            target=tasks_mod.PRIMARY)
