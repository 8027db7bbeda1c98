"""What the storage kinds share: their adapters (module attributes, so tests can replace them),
numbered progress with a point of no return, revert on failure or cancel, and failure texts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvc.adapters import osd as osd_adapter
from pvc.adapters.ceph import Storage, StorageError, storage_from_settings
from pvc.adapters.osd import FioRunner, OsdError, OsdService
from pvc.core.config import Settings
from pvc.core.revert import Reverter
from pvc.worker.registry import TaskCancelled, TaskContext, TaskFailed

OSD_UP_TIMEOUT = 300.0        # a new or restarted OSD must be up and in by then
SAFE_TIMEOUT = 600.0          # how long removal waits for `osd safe-to-destroy`
POLL = 1.0


# -------------------------------------------------------------------------- adapters (patchable)

def storage_for(settings: Settings) -> Storage:
    """This worker's Storage (patchable in tests); one per configuration and process."""
    return storage_from_settings(settings)


def osd_service_for(settings: Settings) -> OsdService:
    return osd_adapter.service_for(settings)


def fio_runner_for(settings: Settings) -> FioRunner:
    cfg = settings.storage
    return FioRunner(cfg.ceph_config_file, cfg.ceph_keyring_file, cfg.client_user)


# ---------------------------------------------------------------------------- progress, revert

class Stages:
    """Numbered progress; past the point of no return a cancel request is logged, not obeyed."""

    def __init__(self, ctx: TaskContext, total: int) -> None:
        self.ctx, self.total, self.current = ctx, total, 0
        self.cancellable = True

    def start(self, status: str) -> None:
        self._report(status)

    def __call__(self, status: str) -> None:
        self.current = min(self.current + 1, self.total)
        self._report(status)

    def _report(self, status: str) -> None:
        try:
            self.ctx.progress(self.current, self.total, status)
        except TaskCancelled:
            if self.cancellable:
                raise
            self.ctx.log("cancel requested past the point of no return; finishing the task")

    def irreversible(self) -> None:
        self.cancellable = False


def task_reverter(ctx: TaskContext) -> Reverter:
    """Undo steps logged to the task; the first line says "cancelled" when the task was cancelled."""
    return Reverter(ctx.log, lambda exc: "cancelled" if isinstance(exc, TaskCancelled) else f"failed: {exc}")


def fail_on(exc: Exception, what: str | None = None) -> TaskFailed:
    text = getattr(exc, "message", None) or str(exc)
    return TaskFailed(f"{what}: {text}" if what else text)


def tolerant(ctx: TaskContext, force: bool, what: str, step: Callable[[], Any]) -> None:
    """Run a step; with force a failure is logged and skipped, else it fails the task."""
    try:
        step()
    except (StorageError, OsdError) as exc:
        if not force:
            raise fail_on(exc, f"Failed to {what}") from None
        ctx.log(f"Failed to {what} ({exc.message}); ignoring it due to force flag")


def on_node(ctx: TaskContext, node: str) -> None:
    if node and node != ctx.node:
        raise TaskFailed(f"This task is for node {node} but ran on node {ctx.node}")
