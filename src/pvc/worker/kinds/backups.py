"""`vm.export_snapshot` and `vm.import_snapshot`: the task side of pvc.worker.backups.

They run on the primary, or on the node the API was asked for (the task's target); the export
or import path is checked on that node, where it must exist.
"""

from __future__ import annotations

from typing import Any

from pvc.core.taskkinds import VM_EXPORT_SNAPSHOT, VM_IMPORT_SNAPSHOT
from pvc.worker import backups
from pvc.worker.registry import TaskContext, TaskFailed, task_kind


@task_kind(VM_EXPORT_SNAPSHOT)
def export_snapshot(ctx: TaskContext, uuid: str, snapshot_name: str, export_path: str, domain: str = "",
                    incremental_parent: str | None = None, force: bool = False, legacy: bool = False,
                    origin: str = "export", **_: Any) -> dict[str, Any]:
    try:
        record = backups.export_snapshot(ctx.zk, ctx.settings, ctx.node, uuid, snapshot_name, export_path,
                                         incremental_parent, origin, ctx.log, ctx.progress, force=force,
                                         legacy=legacy)
    except backups.ExportFailed as exc:
        raise TaskFailed(exc.message) from None
    kind = f"incremental from {incremental_parent}" if incremental_parent else "full"
    return {"status": f'Exported snapshot "{snapshot_name}" of VM "{domain or record.vm}" ({kind}) to '
                      f"{record.message.removeprefix('exported to ')}",
            "backup": record.doc()}


@task_kind(VM_IMPORT_SNAPSHOT)
def import_snapshot(ctx: TaskContext, vm_name: str, snapshot_name: str, import_path: str,
                    retain_snapshot: bool = True, new_name: str | None = None, start: bool = True,
                    verify_only: bool = False, **_: Any) -> dict[str, Any]:
    try:
        result = backups.import_snapshot(ctx.zk, ctx.settings, ctx.node, vm_name, snapshot_name, import_path,
                                         retain_snapshot, new_name, start, verify_only, ctx.log, ctx.progress)
    except backups.ImportFailed as exc:
        raise TaskFailed(exc.message) from None
    if verify_only:
        status = (f'Verified snapshot "{snapshot_name}" of VM "{vm_name}" in {import_path}: '
                  f"{result['files']} file(s), {'checksums' if result['checksums'] else 'sizes only'}")
    else:
        status = (f'Imported snapshot "{snapshot_name}" of VM "{vm_name}" from {import_path} as VM '
                  f'"{result["name"]}"')
    return {"status": status, **result}
