"""Task kinds a worker can run, and the context a running task works through."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pvc.cluster import tasks
from pvc.core.config import Settings
from pvc.core.taskkinds import TASK_KINDS
from pvc.core.zk import ZK

log = logging.getLogger(__name__)

TaskFunction = Callable[..., Any]
KINDS: dict[str, TaskFunction] = {}


def task_kind(name: str) -> Callable[[TaskFunction], TaskFunction]:
    """Register fn(ctx, **args) -> result as the implementation of task kind `name`, one of
    pvc.core.taskkinds.TASK_KINDS (its model types the arguments fn receives)."""
    if name not in TASK_KINDS:
        raise ValueError(f"task kind '{name}' is not declared in pvc.core.taskkinds")

    def register(fn: TaskFunction) -> TaskFunction:
        KINDS[name] = fn
        return fn

    return register


class TaskFailed(Exception):
    """A task that ran to its end but whose outcome is a failure; keeps its result."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class TaskCancelled(Exception):
    """Raised inside a task at a progress point after an administrator cancelled it."""


class TaskContext:
    """What a running task may do: report progress, log, check for cancellation."""

    def __init__(self, zk: ZK, settings: Settings, node: str, task: tasks.TaskRecord) -> None:
        self.zk, self.settings, self.node, self.task = zk, settings, node, task

    @property
    def task_id(self) -> str:
        return self.task.id

    def progress(self, current: int, total: int, status: str) -> None:
        """Record progress; raise TaskCancelled if a cancel was requested meanwhile."""
        record = tasks.update(self.zk, self.task.id, self.node, current=current, total=total,
                              status=status)
        self.log(status)
        if record.cancel_requested:
            raise TaskCancelled(status)

    def check_cancelled(self) -> None:
        if tasks.get_task(self.zk, self.task.id).cancel_requested:
            raise TaskCancelled("cancel requested")

    def log(self, line: str) -> None:
        log.info("task %s (%s): %s", self.task.id, self.task.kind, line)
        try:
            tasks.append_log(self.zk, self.task.id, line)
        except Exception:
            log.debug("could not append to task log", exc_info=True)
