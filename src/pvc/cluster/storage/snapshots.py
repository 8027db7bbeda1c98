"""RBD snapshots of volumes: reading, listing, create/rename/roll back/remove."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pvc.adapters.ceph import Storage, StorageNotFound
from pvc.cluster.storage.common import ceph, check_name, name_filter, read_doc, safe_name
from pvc.cluster.storage.docs import move, snapshot_doc, snapshot_stats, volume_info, write_volume
from pvc.cluster.storage.users import users_of, vm_names, vm_running
from pvc.cluster.storage.volumes import SnapshotOwned, get_volume, live_owner
from pvc.core import schema
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.zk import ZK


def refuse_owned(zk: ZK, doc: Mapping[str, Any], pool: str, volume: str, name: str, doing: str) -> None:
    """A snapshot owned by a VM snapshot (`owner: vm:<uuid>/<name>`) that still exists is refused,
    so a VM snapshot never loses one of its disks behind its back. A stale owner is ignored."""
    found = live_owner(zk, doc)
    if found is None:
        return
    vm_name, snap = found
    raise SnapshotOwned(f'Cannot {doing} RBD snapshot "{name}" of volume "{volume}" in pool "{pool}": it '
                        f'belongs to snapshot "{snap}" of VM "{vm_name}"; remove or rename that VM snapshot '
                        f"instead (pvc vm snapshot remove/rename).")


def get_snapshot(zk: ZK, pool: str, volume: str, snapshot: str) -> dict[str, Any]:
    get_volume(zk, pool, volume)
    doc = read_doc(zk, schema.snapshot(pool, volume, snapshot)) if safe_name(snapshot) else None
    if doc is None:
        raise NotFound(f'No snapshot with name "{snapshot}" is present for volume "{volume}" '
                       f'in pool "{pool}".')
    return doc


def snapshot_view(doc: Mapping[str, Any], pool: str, volume: str, name: str) -> dict[str, Any]:
    stats = doc.get("stats")
    return {"pool": pool, "volume": volume, "snapshot": name,
            "stats": stats if isinstance(stats, dict) else {}}


def list_snapshots(zk: ZK, pool: str | None = None, volume: str | None = None,
                   limit: str | None = None) -> list[dict[str, Any]]:
    """Snapshots (of one pool and/or volume name) whose name matches limit; sorted by name."""
    keep = name_filter(limit)
    pools = [pool] if pool else zk.children(schema.CEPH_SNAPSHOTS)
    if (pool and not safe_name(pool)) or (volume and not safe_name(volume)):
        return []
    kids = zk.children_many([f"{schema.CEPH_SNAPSHOTS}/{p}" for p in pools])
    vols = [(p, v) for p in pools for v in kids.get(f"{schema.CEPH_SNAPSHOTS}/{p}", [])
            if volume is None or v == volume]
    snaps = zk.children_many([schema.volume_snapshots(p, v) for p, v in vols])
    refs = [(p, v, s) for p, v in vols for s in snaps.get(schema.volume_snapshots(p, v), []) if keep(s)]
    docs = zk.get_many([schema.snapshot(p, v, s) for p, v, s in refs])
    out = [snapshot_view(docs.get(schema.snapshot(p, v, s)) or {}, p, v, s) for p, v, s in refs]
    return sorted(out, key=lambda item: (item["snapshot"], item["pool"], item["volume"]))


def snapshot_item(zk: ZK, pool: str, volume: str, name: str) -> dict[str, Any]:
    try:
        return snapshot_view(get_snapshot(zk, pool, volume, name), pool, volume, name)
    except NotFound:
        raise NotFound("Snapshot not found.") from None


def add_snapshot(zk: ZK, storage: Storage, pool: str, volume: str, name: str) -> str:
    check_name(name, "snapshot")
    get_volume(zk, pool, volume)
    if zk.exists(schema.snapshot(pool, volume, name)):
        raise Conflict(f'Snapshot "{name}" of volume "{volume}" already exists in pool "{pool}".')
    with ceph(f'create RBD snapshot "{name}" of volume "{volume}" in pool "{pool}"'):
        storage.create_snapshot(pool, volume, name)
    stats = volume_info(storage, pool, volume)
    zk.put(schema.snapshot(pool, volume, name), snapshot_doc(pool, volume, name, snapshot_stats(stats)))
    write_volume(zk, pool, volume, stats)
    return f'Created RBD snapshot "{name}" of volume "{volume}" in pool "{pool}".'


def rename_snapshot(zk: ZK, storage: Storage, pool: str, volume: str, name: str, new_name: str) -> str:
    check_name(new_name, "new_name")
    doc = get_snapshot(zk, pool, volume, name)
    refuse_owned(zk, doc, pool, volume, name, "rename")
    if new_name == name:
        raise InvalidInput(f'new_name: snapshot "{name}" already has that name')
    if zk.exists(schema.snapshot(pool, volume, new_name)):
        raise Conflict(f'Snapshot "{new_name}" of volume "{volume}" already exists in pool "{pool}".')
    with ceph(f'rename RBD snapshot "{name}" to "{new_name}" of volume "{volume}" in pool "{pool}"'):
        storage.rename_snapshot(pool, volume, name, new_name)
    new_doc = snapshot_doc(pool, volume, new_name, doc.get("stats") or {})
    move(zk, [(schema.snapshot(pool, volume, new_name), new_doc)], [schema.snapshot(pool, volume, name)])
    return f'Renamed RBD snapshot "{name}" to "{new_name}" for volume "{volume}" in pool "{pool}".'


def rollback_snapshot(zk: ZK, storage: Storage, pool: str, volume: str, name: str) -> str:
    """Roll a volume back; only while nothing uses it (its VMs stopped, no client has it open)."""
    get_snapshot(zk, pool, volume, name)
    running = [e for e in users_of(zk, pool, volume) if vm_running(e)]
    if running:
        raise Conflict(f'Cannot roll back RBD volume "{volume}" in pool "{pool}": VM {vm_names(running)} '
                       f"using it is not stopped; stop it first.")
    with ceph(f'roll back RBD volume "{volume}" in pool "{pool}" to snapshot "{name}"'):
        watchers = storage.watchers(pool, volume)
        if watchers:
            raise Conflict(f'Cannot roll back RBD volume "{volume}" in pool "{pool}": it is open by '
                           f"{', '.join(watchers)}; all I/O must be stopped first.")
        storage.rollback_snapshot(pool, volume, name)
    write_volume(zk, pool, volume, volume_info(storage, pool, volume))
    return f'Rolled back RBD volume "{volume}" in pool "{pool}" to snapshot "{name}".'


def remove_snapshot(zk: ZK, storage: Storage, pool: str, volume: str, name: str) -> str:
    refuse_owned(zk, get_snapshot(zk, pool, volume, name), pool, volume, name, "remove")
    with ceph(f'remove RBD snapshot "{name}" of volume "{volume}" in pool "{pool}"'):
        try:
            storage.remove_snapshot(pool, volume, name)
        except StorageNotFound:
            pass
    zk.delete(schema.snapshot(pool, volume, name))
    write_volume(zk, pool, volume, volume_info(storage, pool, volume))
    return f'Removed RBD snapshot "{name}" of volume "{volume}" in pool "{pool}".'
