"""The backup catalogue (`/backups/<uuid>/<snapshot>`, DESIGN D15) and where exports may go.

Every export (manual, legacy backup, autobackup) records one BackupRecord: its type, parent,
result, size and per-file checksums. A failed export is recorded too (result false) so reports
show it; decisions (a full or an incremental, retention) read only the entries with result true.

Export and import paths are confined: absolute, resolved with realpath (no symlink escapes) and
under one of `storage.export_roots` or the autobackup root. The API checks the text before it
queues a task; the task checks again on the node that does the work, where the path must exist.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from typing import Any

from pvc.cluster import tasks as tasks_mod
from pvc.cluster import vms as vms_mod
from pvc.cluster import vmsnapshots as snaps
from pvc.core import backupformat as fmt
from pvc.core import schema, taskkinds
from pvc.core.config import Settings
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.records import BackupRecord, TaskRecord
from pvc.core.zk import ZK

# -- the catalogue ----------------------------------------------------------------------------------

def record_backup(zk: ZK, uuid: str, record: BackupRecord) -> None:
    """Write (or overwrite) the catalogue entry of one exported snapshot."""
    zk.put(schema.vm_backup(uuid, record.snapshot), record.doc())


def get_backup(zk: ZK, uuid: str, snapshot: str) -> BackupRecord:
    data = zk.get(schema.vm_backup(uuid, snapshot), None) if "/" not in snapshot else None
    if not isinstance(data, dict):
        raise NotFound(f'No backup of snapshot "{snapshot}" is in the catalogue.')
    return BackupRecord.model_validate(data)


def list_backups(zk: ZK, uuid: str) -> list[BackupRecord]:
    """The VM's catalogue, newest first (entries that do not parse are skipped)."""
    names = zk.children(schema.vm_backups(uuid))
    docs = zk.get_many([schema.vm_backup(uuid, n) for n in names])
    out: list[BackupRecord] = []
    for name in names:
        doc = docs.get(schema.vm_backup(uuid, name))
        if isinstance(doc, dict):
            try:
                out.append(BackupRecord.model_validate(doc))
            except ValueError:
                continue
    return sorted(out, key=lambda r: r.started, reverse=True)


def drop_backup(zk: ZK, uuid: str, snapshot: str) -> None:
    zk.delete(schema.vm_backup(uuid, snapshot))


def backup_view(record: BackupRecord) -> dict[str, Any]:
    """One catalogue entry as the API shows it."""
    return record.doc()


# -- where exports may go ----------------------------------------------------------------------------

def allowed_roots(settings: Settings) -> list[str]:
    """storage.export_roots plus the autobackup target (when that section is configured)."""
    roots = list(settings.storage.export_roots)
    autobackup = getattr(settings, "autobackup", None)
    target = getattr(autobackup, "target", None) if autobackup is not None else None
    if isinstance(target, str) and target.startswith("/"):
        roots.append(target)
    return list(dict.fromkeys(posixpath.normpath(r) for r in roots))


def _under(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def check_path_text(path: str, settings: Settings, field: str = "export_path") -> str:
    """The API's check (the path may live on another node): absolute, no '..', under a root."""
    roots = allowed_roots(settings)
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidInput(f"{field}: '{path}' is not an absolute path")
    if ".." in path.split("/") or "\0" in path:
        raise InvalidInput(f"{field}: '{path}' may not contain '..'")
    norm = posixpath.normpath(path)
    if not _under(norm, roots):
        raise InvalidInput(f"{field}: '{path}' is not under an allowed export root ({', '.join(roots)}); "
                           f"add it to storage.export_roots in pvc.conf")
    return norm


def resolve_path(path: str, settings: Settings, field: str = "export_path") -> str:
    """The task's check on its node: an existing directory whose realpath is under a root (the
    roots resolved too, so a root that is itself a symlink still works)."""
    norm = check_path_text(path, settings, field)
    real = os.path.realpath(norm)
    if not os.path.isdir(real):
        raise InvalidInput(f"{field}: '{path}' is not an existing directory on this node")
    roots = allowed_roots(settings)
    if not _under(real, roots + [os.path.realpath(r) for r in roots]):
        raise InvalidInput(f"{field}: '{path}' resolves to '{real}', which is not under an allowed export "
                           f"root ({', '.join(roots)})")
    return real


# -- queueing export and import (checked first; nothing is queued on a refusal) ------------------------

def _target(zk: ZK, node: str | None) -> str:
    if not node:
        return tasks_mod.PRIMARY
    if not zk.exists(schema.node(node)):
        raise InvalidInput(f"node: '{node}' is not a node of this cluster")
    return node


def check_export(zk: ZK, settings: Settings, vm: str, snapshot: str, path: str,
                 parent: str | None = None) -> tuple[Any, str]:
    """(VM record, normalised path) of a valid export request; refusals name the problem."""
    record = vms_mod.get_vm(zk, vm)
    snaps.check_name(snapshot)
    if not zk.exists(schema.vm_snapshot(record.uuid, snapshot)):
        raise NotFound(f'Could not find snapshot "{snapshot}" of VM "{record.name}".')
    if parent:
        snaps.check_name(parent)
        if parent == snapshot:
            raise InvalidInput(f"incremental_parent: '{parent}' is the snapshot itself")
        if not zk.exists(schema.vm_snapshot(record.uuid, parent)):
            raise NotFound(f'Could not find the incremental parent snapshot "{parent}" of VM '
                           f'"{record.name}".')
    return record, check_path_text(path, settings, "export_path")


def submit_export(zk: ZK, settings: Settings, vm: str, snapshot: str, path: str, parent: str | None = None,
                  force: bool = False, node: str | None = None, legacy: bool = False,
                  origin: str = "export") -> TaskRecord:
    record, norm = check_export(zk, settings, vm, snapshot, path, parent)
    args = taskkinds.SnapshotExportArgs(uuid=record.uuid, domain=record.name, snapshot_name=snapshot,
                                        export_path=norm, incremental_parent=parent or None, force=force,
                                        legacy=legacy, origin=origin)
    return tasks_mod.submit(zk, taskkinds.VM_EXPORT_SNAPSHOT, args, target=_target(zk, node))


def submit_import(zk: ZK, settings: Settings, vm: str, snapshot: str, path: str, retain: bool = True,
                  new_name: str | None = None, start: bool = True, verify_only: bool = False,
                  node: str | None = None) -> TaskRecord:
    """The VM `vm` names the directory in the tree; it (or new_name) must not exist here yet."""
    vms_mod.check_vm_name(vm, "vm")
    try:
        fmt.check_snapshot_name(snapshot)
    except fmt.FormatError as exc:
        raise InvalidInput(exc.message) from None
    norm = check_path_text(path, settings, "import_path")
    if new_name:
        vms_mod.check_vm_name(new_name, "new_name")
    name = new_name or vm
    if not verify_only and zk.exists(schema.vm_name(name)):
        raise Conflict(f'A VM named "{name}" already exists in the cluster; remove it, or import under '
                       f"another name (new_name).")
    args = taskkinds.SnapshotImportArgs(vm_name=vm, snapshot_name=snapshot, import_path=norm,
                                        retain_snapshot=retain, new_name=new_name or None, start=start,
                                        verify_only=verify_only)
    return tasks_mod.submit(zk, taskkinds.VM_IMPORT_SNAPSHOT, args, target=_target(zk, node))


def remove_legacy_tree(settings: Settings, path: str, vm: str, datestring: str) -> str:
    """Delete `<path>/<vm>/<datestring>` of the deprecated backup (it must hold pvcbackup.json), or
    our `<path>/<vm>/backup_<datestring>`; runs where the API runs (the primary), as upstream."""
    real = resolve_path(path, settings, "backup_path")
    layouts = ((datestring, fmt.LEGACY_JSON), (fmt.legacy_snapshot(datestring), fmt.SNAPSHOT_JSON))
    for name, manifest in layouts:
        try:
            directory = fmt.snapshot_dir(real, vm, name)
        except fmt.FormatError as exc:
            raise InvalidInput(f"backup_datestring: {exc.message}") from None
        if os.path.isfile(os.path.join(directory, manifest)):
            shutil.rmtree(directory)
            return directory
    raise NotFound(f"No backup {datestring} of VM {vm} in {path}.")
