"""VM snapshot tasks: vm.create_snapshot (on the VM's node when it runs, else the primary),
vm.remove_snapshot, vm.rollback_snapshot and vm.rename_snapshot (on the primary).

The work is in pvc.worker.snapshots (shared with backups, mirrors and autobackup); these functions
check again what the API checked (a task document may be foreign or old), report progress, and
turn failures into task failures whose status is the message alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pvc.cluster import vmsnapshots as snaps
from pvc.core import schema
from pvc.core.errors import PVCError
from pvc.core.taskkinds import (
    VM_CREATE_SNAPSHOT,
    VM_REMOVE_SNAPSHOT,
    VM_RENAME_SNAPSHOT,
    VM_ROLLBACK_SNAPSHOT,
)
from pvc.worker import snapshots
from pvc.worker.registry import TaskContext, TaskFailed, task_kind


@contextmanager
def _failures() -> Iterator[None]:
    try:
        yield
    except PVCError as exc:
        raise TaskFailed(exc.message) from None


def _name(ctx: TaskContext, uuid: str, domain: str) -> str:
    data = ctx.zk.get(schema.vm(uuid), None) if uuid else None
    return str(data.get("name")) if isinstance(data, dict) and data.get("name") else (domain or uuid)


def _progress(ctx: TaskContext) -> Callable[[int, int, str], Any]:
    return ctx.progress


@task_kind(VM_CREATE_SNAPSHOT)
def create(ctx: TaskContext, uuid: str, snapshot_name: str, origin: str = "manual", domain: str = "",
           **_: Any) -> dict[str, Any]:
    name = _name(ctx, uuid, domain)
    details: dict[str, Any] = {}
    with _failures():
        record = snapshots.create_snapshot(ctx.zk, ctx.settings, ctx.node, uuid, snapshot_name, origin,
                                           ctx.log, progress=_progress(ctx), details=details)
    ctx.progress(3, 3, f'Successfully created snapshot "{snapshot_name}" of VM "{name}"')
    return {"status": f'Successfully created snapshot "{snapshot_name}" of VM "{name}"',
            "snapshot_name": snapshot_name, "consistency": record.consistency,
            "pause_ms": details.get("pause_ms"), "rbd_snapshots": record.rbd_snapshots}


@task_kind(VM_REMOVE_SNAPSHOT)
def remove(ctx: TaskContext, uuid: str, snapshot_name: str, force: bool = False, domain: str = "",
           **_: Any) -> dict[str, Any]:
    name = _name(ctx, uuid, domain)
    with _failures():
        snapshots.remove_snapshot(ctx.zk, ctx.settings, uuid, snapshot_name, force, ctx.log,
                                  progress=_progress(ctx))
    return {"status": f'Successfully removed snapshot "{snapshot_name}" of VM "{name}"',
            "snapshot_name": snapshot_name}


@task_kind(VM_ROLLBACK_SNAPSHOT)
def rollback(ctx: TaskContext, uuid: str, snapshot_name: str, force: bool = False, with_meta: bool = False,
             domain: str = "", **_: Any) -> dict[str, Any]:
    name = _name(ctx, uuid, domain)
    with _failures():
        snapshots.rollback_snapshot(ctx.zk, ctx.settings, uuid, snapshot_name, force, with_meta, ctx.log,
                                    progress=_progress(ctx))
    return {"status": f'Successfully rolled back to snapshot "{snapshot_name}" of VM "{name}"',
            "snapshot_name": snapshot_name}


@task_kind(VM_RENAME_SNAPSHOT)
def rename(ctx: TaskContext, uuid: str, snapshot_name: str, new_name: str, domain: str = "",
           **_: Any) -> dict[str, Any]:
    name = _name(ctx, uuid, domain)
    ctx.progress(0, 1, f'Renaming snapshot "{snapshot_name}" of VM "{name}" to "{new_name}"')
    with _failures():
        vm = snaps.get_vm(ctx.zk, uuid)
        snaps.check_rename(vm, snapshot_name, new_name)
        snapshots.rename_snapshot(ctx.zk, ctx.settings, uuid, snapshot_name, new_name, ctx.log)
    return {"status": f'Successfully renamed snapshot "{snapshot_name}" of VM "{name}" to "{new_name}"',
            "snapshot_name": new_name}
