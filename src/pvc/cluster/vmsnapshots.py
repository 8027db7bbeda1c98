"""VM snapshots in ZooKeeper: the records, their volume snapshot documents, and the API's checks.

A VM snapshot is one document, `/vmsnapshots/<uuid>/<name>` (VMSnapshotRecord: the XML and the
metadata of the VM plus one RBD snapshot per disk), kept outside `/vms` so snapshot churn does not
wake the VM list's watch cache. Each RBD snapshot also has its storage document
(`/ceph/snapshots/<pool>/<volume>/<snap>`) carrying `owner: "vm:<uuid>/<name>"`, which is what makes
`pvc storage volume snapshot remove/rename` refuse it while the VM snapshot exists.

`write_snapshot` writes the record and the volume documents in one transaction that also checks
the VM document's version: the XML and metadata in the record are then exactly those the disks
were snapshotted with (DESIGN D15). The side effects (Ceph, libvirt) are in pvc.worker.snapshots;
this module is what the API, the workers and the other helpers (export, send, autobackup) share.

The submit functions check synchronously what can be checked (VM exists, name valid and free, the
VM has an RBD disk, rollback only while stopped), so bad input is a 400 before a task is queued.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from pvc.cluster import tasks as tasks_mod
from pvc.cluster.vms.index import get_status, get_vm, is_running
from pvc.core import domainxml, schema, taskkinds
from pvc.core import vmsnapshots as pure
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.records import SnapshotVolume, TaskRecord, VMRecord, VMSnapshotRecord
from pvc.core.vocabulary import VM_RENAME_STATES
from pvc.core.zk import ZK, encode

# States a rollback is allowed in (upstream: stop, disable, mirror).
ROLLBACK_STATES = VM_RENAME_STATES
META_FIELDS = ("node_limit", "node_selector", "node_autostart", "migration_method",
               "migration_max_downtime", "profile", "description", "tags")
OWNER_PREFIX = "vm:"


class VMChanged(Conflict):
    """The VM document moved on between reading its XML and writing the snapshot record."""


def check_name(name: str) -> None:
    """InvalidInput naming the rule `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$` (no '@', '/', ':')."""
    pure.check_name(name)


def owner(uuid: str, name: str) -> str:
    """The `owner` value of a volume snapshot document that belongs to VM snapshot `name`."""
    return f"{OWNER_PREFIX}{uuid}/{name}"


def parse_owner(value: Any) -> tuple[str, str] | None:
    """(uuid, snapshot name) of an owner value, or None when it is not a VM snapshot's."""
    if not isinstance(value, str) or not value.startswith(OWNER_PREFIX) or "/" not in value:
        return None
    uuid, _, name = value[len(OWNER_PREFIX):].partition("/")
    return (uuid, name) if uuid and name else None


def capture_meta(record: VMRecord) -> dict[str, Any]:
    """The VM's metadata as VMRecord spells it (what upstream never captured)."""
    doc = record.doc()
    return {key: doc[key] for key in META_FIELDS if key in doc}


def split_ref(ref: str) -> tuple[str, str]:
    """pool/volume -> (pool, volume)."""
    pool, _, volume = ref.partition("/")
    if not pool or not volume:
        raise InvalidInput(f"'{ref}' is not a pool/volume reference")
    return pool, volume


# -- reading -----------------------------------------------------------------------------------------

def _parse(data: Any) -> VMSnapshotRecord | None:
    if not isinstance(data, dict):
        return None
    try:
        return VMSnapshotRecord.model_validate(data)
    except ValueError:
        return None


def get_snapshot(zk: ZK, uuid: str, name: str) -> VMSnapshotRecord:
    record = _parse(zk.get(schema.vm_snapshot(uuid, name), None)) if not pure.name_problem(name) else None
    if record is None:
        raise NotFound(f'Could not find snapshot "{name}" of VM {uuid}.')
    return record


def newest_first(records: Iterable[VMSnapshotRecord]) -> list[VMSnapshotRecord]:
    return sorted(records, key=lambda r: (-r.created, r.name))


def list_snapshots(zk: ZK, uuid: str) -> list[VMSnapshotRecord]:
    """The VM's snapshots, newest first (two round trips)."""
    return load_many(zk, [uuid]).get(uuid, [])


def load_many(zk: ZK, uuids: Iterable[str] | None = None) -> dict[str, list[VMSnapshotRecord]]:
    """{uuid: snapshots newest first} of the VMs given (all VMs with snapshots when None), read in
    bulk: (the VMs with snapshots,) their snapshot names, then every record (pipelined)."""
    wanted = zk.children(schema.VM_SNAPSHOTS) if uuids is None else sorted(set(uuids))
    if not wanted:
        return {}
    kids = zk.children_many([schema.vm_snapshots(u) for u in wanted])
    paths = [schema.vm_snapshot(u, n) for u in wanted for n in kids.get(schema.vm_snapshots(u), [])]
    docs = zk.get_many(paths) if paths else {}
    out: dict[str, list[VMSnapshotRecord]] = {}
    for uuid in wanted:
        records = [r for n in kids.get(schema.vm_snapshots(uuid), [])
                   if (r := _parse(docs.get(schema.vm_snapshot(uuid, n)))) is not None]
        if records:
            out[uuid] = newest_first(records)
    return out


# -- writing ------------------------------------------------------------------------------------------

def snapshot_doc(vol: SnapshotVolume, owned_by: str, stats: Mapping[str, Any] | None) -> dict[str, Any]:
    """The storage document of one RBD snapshot (pvc.cluster.storage's shape) plus its owner."""
    found = dict(stats or {"size": vol.size})
    found.setdefault("protected", "false")
    return {"pool": vol.pool, "volume": vol.volume, "snapshot": vol.snap, "stats": found,
            "owner": owned_by}


def _first_error(results: list[Any]) -> Exception | None:
    return next((r for r in results if isinstance(r, Exception) and type(r).__name__ != "RolledBackError"),
                None)


def write_snapshot(zk: ZK, uuid: str, record: VMSnapshotRecord, vm_version: int | None,
                   stats: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Write the record and each volume snapshot document (with `owner`) in one transaction that
    checks the VM document is still at `vm_version`.

    stats: `rbd info` of each volume by `pool/volume`, stored with its snapshot document.
    VMChanged when the VM document moved on (nothing written; the caller retries), Conflict when
    the snapshot exists already, NotFound when the VM is gone.
    """
    stats = stats or {}
    zk.ensure(schema.vm_snapshots(uuid))
    for vol in record.volumes:
        zk.ensure(schema.volume_snapshots(vol.pool, vol.volume))
    owned_by = owner(uuid, record.name)
    docs = [(schema.snapshot(v.pool, v.volume, v.snap),
             snapshot_doc(v, owned_by, stats.get(f"{v.pool}/{v.volume}"))) for v in record.volumes]

    def once() -> list[Any]:
        tx = zk.transaction()
        if vm_version is not None:
            tx.check(schema.vm(uuid), vm_version)
        else:
            tx.check(schema.vm(uuid), -1)
        tx.create(schema.vm_snapshot(uuid, record.name), encode(record.doc()))
        for path, doc in docs:
            # the primary's storage scan may have registered the new RBD snapshot already
            if zk.stat(path, retry=False) is None:
                tx.create(path, encode(doc))
            else:
                tx.set_data(path, encode(doc))
        return list(tx.commit())

    failed = _first_error(zk.retry(once))
    if failed is None:
        return
    if isinstance(failed, BadVersionError):
        raise VMChanged(f"VM {uuid} changed while snapshot \"{record.name}\" was taken; nothing was "
                        f"recorded.")
    if isinstance(failed, NoNodeError) and not zk.exists(schema.vm(uuid)):
        raise NotFound(f"VM {uuid} was removed while snapshot \"{record.name}\" was taken.")
    if isinstance(failed, NodeExistsError):
        raise Conflict(f'Snapshot "{record.name}" of VM {uuid} already exists.')
    raise Conflict(f'Could not record snapshot "{record.name}" of VM {uuid} ({type(failed).__name__}).')


def _owned_paths(zk: ZK, uuid: str, record: VMSnapshotRecord) -> list[str]:
    """The volume snapshot documents that exist and still name this VM snapshot as their owner."""
    paths = [schema.snapshot(v.pool, v.volume, v.snap) for v in record.volumes]
    docs = zk.get_many(paths) if paths else {}
    mine = owner(uuid, record.name)
    return [p for p in paths if isinstance(docs.get(p), dict) and docs[p].get("owner") == mine]


def drop_snapshot(zk: ZK, uuid: str, name: str) -> None:
    """Delete the record and its volume snapshot documents (one transaction; missing is fine)."""
    found = zk.get_doc(schema.vm_snapshot(uuid, name))
    if found is None:
        return
    record = _parse(found.data)
    paths = [*(_owned_paths(zk, uuid, record) if record is not None else []), schema.vm_snapshot(uuid, name)]
    if not _delete_together(zk, paths):
        zk.delete_many(paths)


def mark_removing(zk: ZK, uuid: str, name: str) -> tuple[VMSnapshotRecord, bool]:
    """Mark the snapshot as being removed before its first RBD snapshot goes; (the record, whether
    it was marked already: a removal cut short, which a repeat finishes).

    A snapshot marked so is never rolled back or renamed again; a worker dying in the
    middle leaves the mark, and the removal task is queued again (taskkinds.RESUMABLE).
    """
    before: list[str] = []

    def change(data: Any) -> Any:
        record = _parse(data)
        if record is None:
            raise NotFound(f'Could not find snapshot "{name}" of VM {uuid}.')
        before[:] = [record.state]
        return record.model_copy(update={"state": "removing"}).doc()

    try:
        data = zk.update(schema.vm_snapshot(uuid, name), change)
    except NoNodeError:
        raise NotFound(f'Could not find snapshot "{name}" of VM {uuid}.') from None
    return VMSnapshotRecord.model_validate(data), before == ["removing"]


def check_not_removing(snapshot: VMSnapshotRecord, vm_name: str, doing: str) -> None:
    if snapshot.state == "removing":
        raise Conflict(f'Snapshot "{snapshot.name}" of VM "{vm_name}" is being removed; it cannot be '
                       f"{doing}. Repeat its removal to finish it.")


def _delete_together(zk: ZK, paths: list[str]) -> bool:
    """Delete paths in one transaction; False when one vanished meanwhile (the caller falls back to
    deleting what is left one by one)."""
    def once() -> list[Any]:
        tx = zk.transaction()
        for path in paths:
            tx.delete(path)
        return list(tx.commit())

    failed = _first_error(zk.retry(once))
    if failed is None:
        return True
    if isinstance(failed, NoNodeError):
        return False
    raise failed


def rename_documents(zk: ZK, uuid: str, name: str, new_name: str) -> VMSnapshotRecord:
    """Move the record and its volume snapshot documents to `new_name` in one transaction (after the
    RBD snapshots themselves were renamed)."""
    old = get_snapshot(zk, uuid, name)
    new = old.model_copy(update={"name": new_name, "volumes": [v.model_copy(update={"snap": new_name})
                                                                for v in old.volumes]})
    old_docs = zk.get_many([schema.snapshot(v.pool, v.volume, v.snap) for v in old.volumes]) \
        if old.volumes else {}
    new_owner = owner(uuid, new_name)

    def once() -> list[Any]:
        tx = zk.transaction()
        tx.create(schema.vm_snapshot(uuid, new_name), encode(new.doc()))
        tx.delete(schema.vm_snapshot(uuid, name))
        for before, after in zip(old.volumes, new.volumes, strict=True):
            path = schema.snapshot(before.pool, before.volume, before.snap)
            doc = old_docs.get(path)
            stats = doc.get("stats") if isinstance(doc, dict) else None
            new_path = schema.snapshot(after.pool, after.volume, after.snap)
            if zk.stat(new_path, retry=False) is None:
                tx.create(new_path, encode(snapshot_doc(after, new_owner, stats)))
            else:
                tx.set_data(new_path, encode(snapshot_doc(after, new_owner, stats)))
            if doc is not None:
                tx.delete(path)
        return list(tx.commit())

    failed = _first_error(zk.retry(once))
    if isinstance(failed, NodeExistsError):
        raise Conflict(f'Snapshot "{new_name}" of VM {uuid} already exists.')
    if failed is not None:
        raise Conflict(f'Could not rename the records of snapshot "{name}" of VM {uuid} '
                       f"({type(failed).__name__}); nothing was changed in ZooKeeper.")
    return new


def forget_vm(zk: ZK, uuid: str) -> int:
    """A VM was removed: delete its snapshot records and free their volume snapshot documents (the
    RBD snapshots stay with the volumes, and go when the volumes are removed). How many records."""
    records = list_snapshots(zk, uuid)
    for record in records:
        paths = _owned_paths(zk, uuid, record)
        docs = zk.get_many(paths) if paths else {}
        for path, doc in docs.items():
            if isinstance(doc, dict):
                zk.update(path, lambda d: {k: v for k, v in (d or {}).items() if k != "owner"})
    zk.delete(schema.vm_snapshots(uuid))
    return len(records)


def rename_xml(xml: str, new_name: str, renames: Mapping[str, str]) -> str:
    """The snapshot XML after a VM rename: the new name, and each disk's source renamed only where
    its volume really was (`renames`: pool/old -> pool/new)."""
    old_domain = domainxml.parse(xml)
    new_domain = domainxml.parse(domainxml.rename(xml, new_name))
    if new_domain.rbd_volumes == old_domain.rbd_volumes:
        return domainxml.render(new_domain)
    disks = tuple(
        new if old.source is None or new.source is None or old.source.name == new.source.name
        or renames.get(str(old.source.name)) == new.source.name else old
        for old, new in zip(old_domain.disks, new_domain.disks, strict=True))
    return domainxml.render(dataclasses.replace(new_domain, disks=disks))


def follow_vm_rename(zk: ZK, uuid: str, new_name: str, renames: Mapping[str, str]) -> int:
    """A VM was renamed (and volumes `renames`, pool/old -> pool/new, with it): rewrite each snapshot
    record (the name in its XML, its volumes) and re-stamp the owner on the volume snapshot
    documents, which moved with their volumes. How many records were rewritten."""
    count = 0
    for record in list_snapshots(zk, uuid):
        volumes = []
        for vol in record.volumes:
            ref = renames.get(f"{vol.pool}/{vol.volume}")
            volumes.append(vol.model_copy(update={"volume": split_ref(ref)[1]}) if ref else vol)
        try:
            xml = rename_xml(record.xml, new_name, renames) if record.xml else record.xml
        except Exception:
            xml = record.xml          # an XML our parser refuses stays as it was captured
        new = record.model_copy(update={"xml": xml, "volumes": volumes})
        zk.put(schema.vm_snapshot(uuid, record.name), new.doc())
        mine = owner(uuid, record.name)
        for vol in volumes:
            path = schema.snapshot(vol.pool, vol.volume, vol.snap)
            if zk.exists(path):
                zk.update(path, lambda d, mine=mine: {**(d or {}), "owner": mine})
        count += 1
    return count


# -- the API's checks, then the task -----------------------------------------------------------------

def _vm(zk: ZK, vm: str) -> VMRecord:
    try:
        return get_vm(zk, vm)
    except NotFound:
        raise NotFound(f'Could not find VM "{vm}" in the cluster.') from None


def _require_disks(record: VMRecord, doing: str) -> None:
    if not record.rbd_volumes:
        raise Conflict(f'VM "{record.name}" has no RBD disks; a snapshot of it would hold no data, so '
                       f"it cannot {doing}.")


def create_target(zk: ZK, record: VMRecord) -> str:
    """The node whose worker takes the snapshot: the one running the VM (it pauses or freezes the
    guest locally), else the primary."""
    status = get_status(zk, record.uuid)
    if is_running(status) and status is not None and status.node and zk.exists(schema.node(status.node)):
        return status.node
    return tasks_mod.PRIMARY


def submit_create(zk: ZK, vm: str, name: str | None = None, origin: str | None = None) -> TaskRecord:
    """Queue `vm.create_snapshot` after the synchronous checks; the default name is the date."""
    record = _vm(zk, vm)
    name = name or pure.datestring()
    check_name(name)
    _require_disks(record, "be snapshotted")
    if zk.exists(schema.vm_snapshot(record.uuid, name)):
        raise Conflict(f'Snapshot "{name}" of VM "{record.name}" already exists.')
    args = taskkinds.SnapshotCreateArgs(uuid=record.uuid, domain=record.name, snapshot_name=name,
                                        origin=origin or pure.origin_of(name))
    return tasks_mod.submit(zk, taskkinds.VM_CREATE_SNAPSHOT, args, target=create_target(zk, record))


def _existing(zk: ZK, record: VMRecord, name: str) -> VMSnapshotRecord:
    check_name(name)
    try:
        return get_snapshot(zk, record.uuid, name)
    except NotFound:
        raise NotFound(f'Could not find snapshot "{name}" of VM "{record.name}".') from None


def submit_remove(zk: ZK, vm: str, name: str, force: bool = False) -> TaskRecord:
    record = _vm(zk, vm)
    _existing(zk, record, name)
    args = taskkinds.SnapshotRemoveArgs(uuid=record.uuid, domain=record.name, snapshot_name=name, force=force)
    return tasks_mod.submit(zk, taskkinds.VM_REMOVE_SNAPSHOT, args)


def extra_disks(record: VMRecord, snapshot: VMSnapshotRecord) -> list[str]:
    """The VM's current RBD disks that the snapshot does not hold (pool/volume)."""
    held = {f"{v.pool}/{v.volume}" for v in snapshot.volumes}
    return [ref for ref in record.rbd_volumes if ref not in held]


def check_rollback(record: VMRecord, snapshot: VMSnapshotRecord, force: bool) -> list[str]:
    """Refuse a rollback the VM's state or disks do not allow; the disks `force` will detach."""
    check_not_removing(snapshot, record.name, "rolled back")
    if record.state not in ROLLBACK_STATES:
        raise Conflict(f'VM "{record.name}" is in state {record.state}; a snapshot is only rolled back '
                       f"while the VM is in state {', '.join(ROLLBACK_STATES)}. Stop it first.")
    extra = extra_disks(record, snapshot)
    if extra and not force:
        raise Conflict(f'VM "{record.name}" has disks that snapshot "{snapshot.name}" does not hold '
                       f"({', '.join(extra)}); nothing was changed. Use force to detach them in the "
                       f"restored configuration.")
    return extra


def submit_rollback(zk: ZK, vm: str, name: str, force: bool = False, with_meta: bool = False) -> TaskRecord:
    record = _vm(zk, vm)
    snapshot = _existing(zk, record, name)
    check_rollback(record, snapshot, force)
    if is_running(get_status(zk, record.uuid)):
        raise Conflict(f'VM "{record.name}" is still running; a snapshot is only rolled back once it '
                       f"is down.")
    args = taskkinds.SnapshotRollbackArgs(uuid=record.uuid, domain=record.name, snapshot_name=name,
                                          force=force, with_meta=with_meta)
    return tasks_mod.submit(zk, taskkinds.VM_ROLLBACK_SNAPSHOT, args)


def check_rename(record: VMRecord, name: str, new_name: str) -> None:
    """Refuse renaming to or from a system name (ab, am or mr + digits), or to the same name."""
    pure.check_name(new_name, "new_name")
    for which, value in (("snapshot_name", name), ("new_name", new_name)):
        prefix = pure.reserved_prefix(value)
        if prefix:
            raise Conflict(f"{which}: '{value}' is the prefix '{prefix}' followed by a datestring, as the "
                           f"system's own snapshots are named (ab autobackup, am automirror, mr mirror); "
                           f"such snapshots are not renamed.")
    if new_name == name:
        raise InvalidInput(f"new_name: snapshot \"{name}\" of VM \"{record.name}\" already has that name")


def submit_rename(zk: ZK, vm: str, name: str, new_name: str) -> TaskRecord:
    record = _vm(zk, vm)
    pure.check_name(new_name, "new_name")
    check_not_removing(_existing(zk, record, name), record.name, "renamed")
    check_rename(record, name, new_name)
    if zk.exists(schema.vm_snapshot(record.uuid, new_name)):
        raise Conflict(f'Snapshot "{new_name}" of VM "{record.name}" already exists.')
    args = taskkinds.SnapshotRenameArgs(uuid=record.uuid, domain=record.name, snapshot_name=name,
                                        new_name=new_name)
    return tasks_mod.submit(zk, taskkinds.VM_RENAME_SNAPSHOT, args)


def new_record(vm: VMRecord, name: str, volumes: list[SnapshotVolume], consistency: str, origin: str,
               vm_version: int, created: float | None = None) -> VMSnapshotRecord:
    """The record of a snapshot just taken of `vm` (read at `vm_version`)."""
    return VMSnapshotRecord(name=name, created=time.time() if created is None else created, xml=vm.xml,
                            meta=capture_meta(vm), volumes=volumes, consistency=consistency,  # type: ignore[arg-type]
                            origin=origin if origin in _ORIGINS else "manual", state="ready",  # type: ignore[arg-type]
                            xml_version=vm_version)


_ORIGINS = ("manual", "autobackup", "automirror", "mirror", "received", "imported", "backup")
