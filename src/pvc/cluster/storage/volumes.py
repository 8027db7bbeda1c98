"""RBD volumes: reading, listing, create/clone/resize/rename/remove, scan and image upload.

A running VM's disk grown here is grown live by a `vm.block_resize` task on the VM's node.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, BinaryIO

from pvc.adapters import images
from pvc.adapters.ceph import IMAGE_FORMATS, Storage, StorageNotFound
from pvc.cluster import tasks as tasks_mod
from pvc.cluster import vms as vms_mod
from pvc.cluster.common import wait_until
from pvc.cluster.storage.common import (
    ceph,
    check_name,
    check_space,
    human_size,
    name_filter,
    parse_volume_size,
    read_doc,
    safe_name,
)
from pvc.cluster.storage.docs import (
    delete_volume_docs,
    move,
    snapshot_doc,
    snapshot_stats,
    volume_doc,
    volume_info,
    write_volume,
)
from pvc.cluster.storage.pools import get_pool, pool_space
from pvc.cluster.storage.users import refuse_in_use, users_of, vm_names, vm_running
from pvc.core import schema
from pvc.core.errors import Conflict, InvalidInput, NotFound, PVCError
from pvc.core.records import TaskRecord
from pvc.core.taskkinds import VM_BLOCK_RESIZE, BlockResizeArgs
from pvc.core.zk import ZK

BLOCK_RESIZE_TIMEOUT = 30.0
POLL_INTERVAL = 0.2


class SnapshotOwned(Conflict):
    """An RBD snapshot (or a volume holding one) belongs to a VM snapshot (its document names the owner)."""

    status = 409


def live_owner(zk: ZK, doc: Any) -> tuple[str, str] | None:
    """(VM name, VM snapshot name) of a snapshot document's owner (`vm:<uuid>/<name>`) while that VM
    snapshot exists; None for no owner or a stale one (the VM snapshot is gone)."""
    value = doc.get("owner") if isinstance(doc, Mapping) else None
    if not isinstance(value, str) or not value.startswith("vm:") or "/" not in value:
        return None
    uuid, _, snap = value[3:].partition("/")
    if not zk.exists(schema.vm_snapshot(uuid, snap)):
        return None
    vm = zk.get(schema.vm(uuid), None)
    return (vm.get("name", uuid) if isinstance(vm, dict) else uuid), snap


def refuse_owned_volume(zk: ZK, pool: str, name: str, doing: str) -> None:
    """A volume whose RBD snapshots belong to existing VM snapshots is refused, naming those VM
    snapshots, so a VM snapshot never loses a disk behind its back. Removing the VM with its disks
    drops its snapshot records first, so that path is not refused."""
    snaps = zk.children(schema.volume_snapshots(pool, name))
    docs = zk.get_many([schema.snapshot(pool, name, s) for s in snaps]) if snaps else {}
    owners: dict[tuple[str, str], list[str]] = {}
    for snap in snaps:
        found = live_owner(zk, docs.get(schema.snapshot(pool, name, snap)))
        if found is not None:
            owners.setdefault(found, []).append(snap)
    if owners:
        named = "; ".join(f'snapshot "{vsnap}" of VM "{vm}" (RBD snapshot{"s" if len(rbd) > 1 else ""} '
                          f'{", ".join(rbd)})' for (vm, vsnap), rbd in sorted(owners.items()))
        raise SnapshotOwned(f'Cannot {doing} RBD volume "{name}" in pool "{pool}": its snapshots belong to '
                            f"VM snapshots: {named}. Remove those VM snapshots first (pvc vm snapshot "
                            f"remove), or remove the VM with its disks.")


def get_volume(zk: ZK, pool: str, volume: str) -> dict[str, Any]:
    get_pool(zk, pool)
    doc = read_doc(zk, schema.volume(pool, volume)) if safe_name(volume) else None
    if doc is None:
        raise NotFound(f'No volume with name "{volume}" is present in pool "{pool}".')
    return doc


def _volume_size(doc: Mapping[str, Any]) -> int:
    stats = doc.get("stats") or {}
    try:
        return int(stats.get("size", 0))
    except (TypeError, ValueError):
        return 0


def volume_view(doc: Mapping[str, Any], pool: str, name: str) -> dict[str, Any]:
    """The volume item: {name, pool, stats}, with stats.size human-readable as PVC clients show it."""
    stats = dict(doc.get("stats") or {}) if isinstance(doc.get("stats"), dict) else {}
    if isinstance(stats.get("size"), int):
        stats["size"] = human_size(stats["size"])
    return {"name": doc.get("name", name), "pool": doc.get("pool", pool), "stats": stats}


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
    keep = name_filter(limit)
    refs = [(p, v) for p, v in _volume_refs(zk, pool) if keep(v)]
    docs = zk.get_many([schema.volume(p, v) for p, v in refs])
    out = [volume_view(docs[schema.volume(p, v)], p, v) for p, v in refs
           if isinstance(docs.get(schema.volume(p, v)), dict)]
    return sorted(out, key=lambda item: (item["name"], item["pool"]))


def volume_item(zk: ZK, pool: str, name: str) -> dict[str, Any]:
    try:
        return volume_view(get_volume(zk, pool, name), pool, name)
    except NotFound:
        raise NotFound("Volume not found.") from None


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
    write_volume(zk, pool, name, volume_info(storage, pool, name, size_bytes))
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
    write_volume(zk, pool, new_name, volume_info(storage, pool, new_name, size))
    return f'Cloned RBD volume "{name}" to "{new_name}" in pool "{pool}".'


def resize_volume(zk: ZK, storage: Storage, pool: str, name: str, size: str | int, force: bool = False,
                  wait: float = BLOCK_RESIZE_TIMEOUT) -> str:
    """Grow (or, with force and while no VM uses it, shrink) a volume; a running VM's disk is
    grown live by a `vm.block_resize` task on its node, waited for up to `wait` seconds."""
    size_bytes = parse_volume_size(size, "new_size")
    doc = get_volume(zk, pool, name)
    with ceph(f'read RBD volume "{name}" in pool "{pool}"'):
        current = int(storage.volume_info(pool, name).get("size", _volume_size(doc)))
    users = users_of(zk, pool, name)
    if size_bytes == current:
        return f'RBD volume "{name}" in pool "{pool}" already has size "{human_size(size_bytes)}".'
    if size_bytes < current:
        if users:
            raise Conflict(f'Cannot shrink RBD volume "{name}" in pool "{pool}" from '
                           f'"{human_size(current)}" to "{human_size(size_bytes)}": it is used by VM '
                           f"{vm_names(users)}, whose data would be cut off.")
        if not force:
            raise InvalidInput(f'new_size: "{human_size(size_bytes)}" is smaller than the current size '
                               f'"{human_size(current)}" of RBD volume "{name}"; shrinking discards the data '
                               f"beyond the new size: retry with force to shrink")
    else:
        check_space(size_bytes - current, pool_space(zk, storage, pool), pool, force, field="new_size")
    with ceph(f'resize RBD volume "{name}" in pool "{pool}"'):
        storage.resize_volume(pool, name, size_bytes)
    write_volume(zk, pool, name, volume_info(storage, pool, name, size_bytes))
    text = f'Resized RBD volume "{name}" to size "{human_size(size_bytes)}" in pool "{pool}".'
    running = [e for e in users if vm_running(e)]
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
        args = BlockResizeArgs(uuid=record.uuid, domain=record.name, pool=pool, volume=volume, size=size)
        task = tasks_mod.submit(zk, VM_BLOCK_RESIZE, args, target=node)
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
    """The finished task, or None when it is still going after timeout."""
    seen: list[TaskRecord] = []

    def finished() -> bool:
        seen.append(tasks_mod.get_task(zk, task.id))
        return seen[-1].finished_state

    return seen[-1] if wait_until(finished, timeout, POLL_INTERVAL) else None


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
    refuse_in_use(zk, pool, name, "rename", allow_vm)
    if allow_vm is None:              # a VM rename re-stamps its snapshot records (follow_vm_rename)
        refuse_owned_volume(zk, pool, name, "rename")
    with ceph(f'rename RBD volume "{name}" to "{new_name}" in pool "{pool}"'):
        storage.rename_volume(pool, name, new_name)
    stats = volume_info(storage, pool, new_name)
    snaps = zk.children(schema.volume_snapshots(pool, name))
    docs = zk.get_many([schema.snapshot(pool, name, s) for s in snaps])
    moves: list[tuple[str, Any]] = [(schema.volume(pool, new_name), volume_doc(pool, new_name, stats)),
                                    (schema.volume_snapshots(pool, new_name), None)]
    for snap in snaps:
        old = docs.get(schema.snapshot(pool, name, snap))
        old_stats = old.get("stats", {}) if isinstance(old, dict) else {}
        moves.append((schema.snapshot(pool, new_name, snap), snapshot_doc(pool, new_name, snap, old_stats)))
    deletes = [schema.snapshot(pool, name, s) for s in snaps]
    if zk.exists(schema.volume_snapshots(pool, name)):
        deletes.append(schema.volume_snapshots(pool, name))
    deletes.append(schema.volume(pool, name))
    zk.ensure(f"{schema.CEPH_SNAPSHOTS}/{pool}")
    move(zk, moves, deletes)
    return f'Renamed RBD volume "{name}" to "{new_name}" in pool "{pool}".'


def remove_volume(zk: ZK, storage: Storage, pool: str, name: str, allow_vm: str | None = None) -> str:
    """Remove a volume with all its snapshots; refused while a VM uses it or a VM snapshot owns one.

    `allow_vm` (a VM uuid) skips that VM in the in-use check, for removing a VM with its disks.
    A volume already gone from Ceph is only forgotten.
    """
    get_volume(zk, pool, name)
    refuse_in_use(zk, pool, name, "remove", allow_vm)
    refuse_owned_volume(zk, pool, name, "remove")
    with ceph(f'remove RBD volume "{name}" from pool "{pool}"'):
        try:
            storage.remove_volume(pool, name)
        except StorageNotFound:
            pass
    delete_volume_docs(zk, pool, name)
    return f'Removed RBD volume "{name}" in pool "{pool}".'


def scan_volume(zk: ZK, storage: Storage, pool: str, name: str) -> str:
    """(Re)register a volume from Ceph, e.g. one created outside PVC: its `rbd info` and snapshots."""
    check_name(name, "volume")
    get_pool(zk, pool)
    with ceph(f'scan RBD volume "{name}" in pool "{pool}"'):
        stats = storage.volume_info(pool, name)
        snaps = storage.list_snapshots(pool, name)
    write_volume(zk, pool, name, stats)
    known = set(zk.children(schema.volume_snapshots(pool, name)))
    for snap in snaps:
        if snap not in known and safe_name(snap):
            zk.put(schema.snapshot(pool, name, snap), snapshot_doc(pool, name, snap, snapshot_stats(stats)))
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
        try:   # before any conversion: no backing file, data file, foreign extent or wrong format
            images.inspect(path, image_format)
        except images.ImageRefused as exc:
            raise InvalidInput(f"file: {exc.message}") from None
        with ceph(f'convert the uploaded {image_format} image into RBD volume "{name}" in pool "{pool}"'):
            storage.convert_into_volume(pool, name, path, image_format)
        text = f'Converted and wrote uploaded file to volume "{name}" in pool "{pool}".'
    write_volume(zk, pool, name, volume_info(storage, pool, name))
    return text
