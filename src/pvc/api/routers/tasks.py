"""Task routes (DESIGN D9): list, status, log and cancellation of tasks, and a self-test task."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from pvc.api.auth import require_auth
from pvc.api.common import get_zk, ok, responses, task_accepted
from pvc.api.errors import message
from pvc.api.models import Message, TaskAccepted, TaskList, TaskLog, TaskStatus
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import tasks as tasks_mod
from pvc.core.taskkinds import CLUSTER_SELFTEST
from pvc.core.zk import ZK

router = APIRouter(prefix="/tasks", tags=["tasks"], dependencies=[Depends(require_auth)])


@router.get("", summary="Return running and waiting tasks, keyed by worker", responses=responses(TaskList))
def task_list(zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok(tasks_mod.list_tasks(zk, nodes_mod.primary_node(zk)))


@router.post("/selftest", summary="Queue a self-test task on the primary's worker",
             responses=responses(TaskAccepted, 202))
def selftest(zk: ZK = Depends(get_zk)) -> JSONResponse:
    task = tasks_mod.submit(zk, CLUSTER_SELFTEST, target=tasks_mod.PRIMARY)
    return task_accepted(tasks_mod.accepted(task, nodes_mod.primary_node(zk)))


@router.get("/{task_id}", summary="Return the status of task {task_id}",
            responses=responses(TaskStatus, 200, 404))
def task_status(task_id: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok(tasks_mod.task_view(tasks_mod.get_task(zk, task_id)))


@router.delete("/{task_id}", summary="Cancel task {task_id} (400 when it has already finished)",
               responses=responses(Message, 200, 400, 404))
def task_cancel(task_id: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(tasks_mod.cancel(zk, task_id))


@router.get("/{task_id}/log", summary="Return the log lines of task {task_id}",
            responses=responses(TaskLog, 200, 404))
def task_log(task_id: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok({"id": task_id, "log": tasks_mod.task_log(zk, task_id)})
