"""VM snapshot export and import (upstream's routes, 202 + a task), our backup catalogue, and the
deprecated per-VM backup routes as thin aliases over the snapshot tasks.

Inputs are checked before anything is queued (pvc.cluster.backups): the VM and snapshots exist,
the path is absolute and under an allowed export root (storage.export_roots), the node exists.
The legacy routes queue the snapshot tasks, wait for them (bounded) and answer 200 or 400 with a
message, as upstream's synchronous routes did; old clients keep working.
"""

from __future__ import annotations

import contextlib
import time

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import Field

from pvc.api.auth import require_auth
from pvc.api.common import get_settings, get_zk, ok, responses, task_accepted, wait_async
from pvc.api.errors import message
from pvc.api.models import Message, TaskAccepted
from pvc.api.params import Bool, Inputs, inputs
from pvc.cluster import backups as backups_mod
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import tasks as tasks_mod
from pvc.cluster import vms as vms_mod
from pvc.cluster import vmsnapshots as snaps
from pvc.core import schema
from pvc.core import vmsnapshots as pure
from pvc.core.config import Settings
from pvc.core.errors import InvalidInput, NotFound, PVCError
from pvc.core.records import TaskRecord
from pvc.core.zk import ZK

router = APIRouter(prefix="/vm", tags=["vm"], dependencies=[Depends(require_auth)])

LEGACY_TIMEOUT = 24 * 3600.0      # a legacy request waits this long for its tasks at most
PENDING_TIMEOUT = 120.0           # ... and this long for a worker to take each of them
NODE_HELP = "The node whose filesystem holds the path (default: the primary coordinator); not in upstream PVC"


class ExportInputs(Inputs):
    snapshot_name: str = Field(description="The name of the snapshot to export")
    export_path: str = Field(description="An absolute directory under an allowed export root; the export "
                                         "goes to <export_path>/<vm>/<snapshot_name>/")
    incremental_parent: str | None = Field(None, description=(
        "Export only the changes since this snapshot of the VM (which must exist). Its own export should "
        "be under export_path too, as an import needs it; if it is not, the task logs a warning and "
        "exports anyway. Upstream PVC 1.0 imports a full export or an incremental of a full, not a "
        "deeper chain"))
    force: Bool = Field(False, description="Export even if the free space is below the estimate (ours)")
    node: str | None = Field(None, description=NODE_HELP)


class ImportInputs(Inputs):
    snapshot_name: str = Field(description="The name of the snapshot to import")
    import_path: str = Field(description="The export root holding <vm>/<snapshot_name>/ (absolute, under an "
                                         "allowed export root)")
    retain_snapshot: Bool = Field(True, description="Keep the imported snapshots as snapshots of the VM")
    new_name: str | None = Field(None, description="Import under this name, with a new UUID, new NIC MAC "
                                                   "addresses and the volumes renamed (ours)")
    start: Bool = Field(True, description="Start the VM after the import (ours; upstream always starts it)")
    verify: Bool = Field(False, description="Only verify the tree's sizes and checksums; change nothing "
                                            "(ours)")
    node: str | None = Field(None, description=NODE_HELP)


class LegacyBackupInputs(Inputs):
    backup_path: str = Field(description="An absolute directory under an allowed export root")
    incremental_parent: str | None = Field(None, description="The datestring of a retained backup to diff "
                                                             "against")
    retain_snapshot: Bool = Field(False, description="Keep the backup's snapshot (a future incremental "
                                                     "parent)")


class LegacyRemoveInputs(Inputs):
    backup_path: str = Field(description="The directory the backup was written to")
    backup_datestring: str = Field(description="The datestring of the backup")


class LegacyRestoreInputs(Inputs):
    backup_path: str = Field(description="The directory the backup was written to")
    backup_datestring: str = Field(description="The datestring of the backup")
    retain_snapshot: Bool = Field(True, description="Keep the restored snapshot")


def _accepted(zk: ZK, task: TaskRecord) -> JSONResponse:
    return task_accepted(tasks_mod.accepted(task, nodes_mod.primary_node(zk)))


# -- upstream's snapshot export and import ---------------------------------------------------------------

@router.post("/{vm}/snapshot/export", summary="Export a snapshot of VM {vm} to a directory (full or "
                                              "incremental; upstream's on-disk format plus checksums; "
                                              "upstream PVC 1.0 imports a full or a full plus one "
                                              "incremental)",
             responses=responses(TaskAccepted, 202, 404))
def vm_snapshot_export(vm: str, params: ExportInputs = inputs(ExportInputs), zk: ZK = Depends(get_zk),
                       settings: Settings = Depends(get_settings)) -> JSONResponse:
    task = backups_mod.submit_export(zk, settings, vm, params.snapshot_name, params.export_path,
                                     params.incremental_parent or None, params.force, params.node or None)
    return _accepted(zk, task)


@router.post("/{vm}/snapshot/import", summary="Import VM {vm} from an exported snapshot (and its chain of "
                                              "parents, of any depth), or only verify the export; "
                                              "symbolic links inside the tree are refused",
             responses=responses(TaskAccepted, 202, 404))
def vm_snapshot_import(vm: str, params: ImportInputs = inputs(ImportInputs), zk: ZK = Depends(get_zk),
                       settings: Settings = Depends(get_settings)) -> JSONResponse:
    task = backups_mod.submit_import(zk, settings, vm, params.snapshot_name, params.import_path,
                                     params.retain_snapshot, params.new_name or None, params.start,
                                     params.verify, params.node or None)
    return _accepted(zk, task)


@router.get("/{vm}/backup", summary="Return the backup catalogue of VM {vm}: every export, its type, parent, "
                                    "result, size and checksums (not in upstream PVC)",
            responses=responses({"type": "array", "items": {"type": "object"}}, 200, 404))
def vm_backup_list(vm: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    record = vms_mod.get_vm(zk, vm)
    return ok([backups_mod.backup_view(r) for r in backups_mod.list_backups(zk, record.uuid)])


# -- the deprecated per-VM backup (aliases) ---------------------------------------------------------------

async def _run(request: Request, zk: ZK, task: TaskRecord) -> TaskRecord:
    """Wait for the task; InvalidInput (400) with its message if it failed or did not finish.

    A task no worker takes within PENDING_TIMEOUT (workers down) is cancelled and refused, so a
    request never hangs for a day on a task that will not run."""
    def started() -> bool:
        return tasks_mod.get_task(zk, task.id).state != "PENDING"

    def finished() -> bool:
        return tasks_mod.get_task(zk, task.id).finished_state

    if not await wait_async(request, started, timeout=PENDING_TIMEOUT, interval=0.25):
        with contextlib.suppress(PVCError):
            await run_in_threadpool(tasks_mod.cancel, zk, task.id)
        raise InvalidInput(f"No worker took task {task.id} ({task.kind}) within {PENDING_TIMEOUT:.0f}s; it "
                           f"was cancelled and nothing was done.")
    done = await wait_async(request, finished, timeout=LEGACY_TIMEOUT, interval=0.5)
    current = await run_in_threadpool(tasks_mod.get_task, zk, task.id)
    if not done:
        raise InvalidInput(f"Task {task.id} ({task.kind}) did not finish; it is still {current.state}: "
                           f"{current.status}")
    if current.state != "SUCCESS":
        raise InvalidInput(current.status)
    return current


@router.post("/{vm}/backup", deprecated=True,
             summary="Back up VM {vm} (deprecated: a snapshot, an export in the legacy layout, and the "
                     "snapshot removed unless retained; use snapshot export)",
             responses=responses(Message, 200, 404))
async def vm_backup_create(request: Request, vm: str,
                           params: LegacyBackupInputs = inputs(LegacyBackupInputs), zk: ZK = Depends(get_zk),
                           settings: Settings = Depends(get_settings)) -> JSONResponse:
    started = time.monotonic()
    record = await run_in_threadpool(vms_mod.get_vm, zk, vm)
    await run_in_threadpool(backups_mod.check_path_text, params.backup_path, settings, "backup_path")
    parent = pure.LEGACY_BACKUP_PREFIX + params.incremental_parent if params.incremental_parent else None
    if parent and not await run_in_threadpool(zk.exists, schema.vm_snapshot(record.uuid, parent)):
        raise InvalidInput(f"incremental_parent: no retained snapshot of backup {params.incremental_parent} "
                           f"exists for VM {record.name}")
    datestring = pure.datestring()
    name = pure.LEGACY_BACKUP_PREFIX + datestring
    await _run(request, zk, await run_in_threadpool(snaps.submit_create, zk, record.uuid, name, "backup"))
    try:
        export = await run_in_threadpool(backups_mod.submit_export, zk, settings, record.uuid, name,
                                         params.backup_path, parent, False, None, True, "backup")
        await _run(request, zk, export)
    except Exception:
        await _run(request, zk, await run_in_threadpool(snaps.submit_remove, zk, record.uuid, name, True))
        raise
    if not params.retain_snapshot:
        await _run(request, zk, await run_in_threadpool(snaps.submit_remove, zk, record.uuid, name, True))
    kind = "incremental" if parent else "full"
    kept = ", snapshots retained" if params.retain_snapshot else ""
    where = await run_in_threadpool(nodes_mod.primary_node, zk)
    return message(f"Successfully backed up VM '{record.name}' ({kind}@{datestring}{kept}) to "
                   f"'{where}:{params.backup_path}' in {time.monotonic() - started:.2f}s.")


@router.delete("/{vm}/backup", deprecated=True,
               summary="Remove a backup of VM {vm}: its retained snapshot and its directory (deprecated)",
               responses=responses(Message, 200, 404))
async def vm_backup_remove(request: Request, vm: str,
                           params: LegacyRemoveInputs = inputs(LegacyRemoveInputs), zk: ZK = Depends(get_zk),
                           settings: Settings = Depends(get_settings)) -> JSONResponse:
    started = time.monotonic()
    record = await run_in_threadpool(vms_mod.get_vm, zk, vm)
    name = pure.LEGACY_BACKUP_PREFIX + params.backup_datestring
    await run_in_threadpool(snaps.check_name, name)
    await run_in_threadpool(backups_mod.check_path_text, params.backup_path, settings, "backup_path")
    if await run_in_threadpool(zk.exists, schema.vm_snapshot(record.uuid, name)):
        await _run(request, zk, await run_in_threadpool(snaps.submit_remove, zk, record.uuid, name, True))
    try:
        await run_in_threadpool(backups_mod.remove_legacy_tree, settings, params.backup_path, record.name,
                                params.backup_datestring)
    except NotFound as exc:
        raise InvalidInput(exc.message) from None
    await run_in_threadpool(backups_mod.drop_backup, zk, record.uuid, name)
    where = await run_in_threadpool(nodes_mod.primary_node, zk)
    return message(f"Removed VM backup {params.backup_datestring} for '{record.name}' from "
                   f"'{where}:{params.backup_path}' in {time.monotonic() - started:.2f}s.")


@router.post("/{vm}/restore", deprecated=True,
             summary="Restore VM {vm} from a backup (deprecated: a snapshot import of backup_<datestring>)",
             responses=responses(Message, 200, 404))
async def vm_restore(request: Request, vm: str, params: LegacyRestoreInputs = inputs(LegacyRestoreInputs),
                     zk: ZK = Depends(get_zk), settings: Settings = Depends(get_settings)) -> JSONResponse:
    started = time.monotonic()
    name = pure.LEGACY_BACKUP_PREFIX + params.backup_datestring
    task = await run_in_threadpool(backups_mod.submit_import, zk, settings, vm, name, params.backup_path,
                                   params.retain_snapshot)
    await _run(request, zk, task)
    where = await run_in_threadpool(nodes_mod.primary_node, zk)
    return message(f"Successfully restored VM backup {params.backup_datestring} for '{vm}' from "
                   f"'{where}:{params.backup_path}' in {time.monotonic() - started:.2f}s.")
