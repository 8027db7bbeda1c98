"""Task kinds vm.send_snapshot, vm.create_mirror and vm.promote_mirror (pvc.worker.send does the
work). Each opens its destination from /transfers (the key sealed there, never in the task's
arguments) and deletes it when the task ends, whatever the outcome; one send of a VM at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvc.cluster import transfers
from pvc.core.errors import PVCError
from pvc.core.taskkinds import VM_CREATE_MIRROR, VM_PROMOTE_MIRROR, VM_SEND_SNAPSHOT
from pvc.worker import send
from pvc.worker.registry import TaskContext, TaskFailed, task_kind


def _run(ctx: TaskContext, uuid: str, domain: str, destination: str,
         work: Callable[[transfers.Destination], dict[str, Any]]) -> dict[str, Any]:
    try:
        try:
            dest = transfers.load(ctx.zk, ctx.settings, destination)
        except PVCError as exc:
            raise TaskFailed(exc.message) from None
        with send.send_lock(ctx.zk, uuid, domain or uuid, ctx.node):
            return work(dest)
    except send.SendFailed as exc:
        raise TaskFailed(exc.message) from None
    finally:
        transfers.drop(ctx.zk, destination)


def _after_batch(ctx: TaskContext) -> Callable[[str, int], None]:
    def check(ref: str, batch: int) -> None:
        ctx.check_cancelled()          # a cancel stops between batches; a resend resumes there
    return check


@task_kind(VM_SEND_SNAPSHOT)
def send_snapshot(ctx: TaskContext, uuid: str, snapshot_name: str, destination: str, domain: str = "",
                  incremental_parent: str | None = None, **_: Any) -> dict[str, Any]:
    return _run(ctx, uuid, domain, destination, lambda dest: send.send_snapshot(
        ctx.zk, ctx.settings, uuid, snapshot_name, dest, incremental_parent, ctx.log, ctx.progress,
        after_batch=_after_batch(ctx)))


@task_kind(VM_CREATE_MIRROR)
def create_mirror(ctx: TaskContext, uuid: str, destination: str, domain: str = "",
                  **_: Any) -> dict[str, Any]:
    return _run(ctx, uuid, domain, destination, lambda dest: send.create_mirror(
        ctx.zk, ctx.settings, ctx.node, uuid, dest, ctx.log, ctx.progress, after_batch=_after_batch(ctx)))


@task_kind(VM_PROMOTE_MIRROR)
def promote_mirror(ctx: TaskContext, uuid: str, destination: str, domain: str = "",
                   remove_on_source: bool = False, dry_run: bool = False, **_: Any) -> dict[str, Any]:
    def work(dest: transfers.Destination) -> dict[str, Any]:
        result = send.promote_mirror(ctx.zk, ctx.settings, ctx.node, uuid, dest, remove_on_source, ctx.log,
                                     ctx.progress, is_dry_run=dry_run, after_batch=_after_batch(ctx))
        if dry_run and not result.get("ok"):
            raise TaskFailed("Dry run: the promote would fail: " + "; ".join(result["problems"]), result)
        return result

    return _run(ctx, uuid, domain, destination, work)
