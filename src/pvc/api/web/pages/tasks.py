"""Tasks: every task (newest first), one task with its log followed live, and cancel, through the
functions behind `GET /api/v1/tasks`, `GET /api/v1/tasks/<id>[/log]` and `DELETE /api/v1/tasks/<id>`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from pvc.api.web import live, render
from pvc.api.web.guard import UIUser, ui_router, ui_user
from pvc.api.web.pages.common import action_done, next_path, zk_of
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import tasks as tasks_mod
from pvc.core import schema
from pvc.core.vocabulary import TASK_FINISHED
from pvc.core.zk import ZK

router = ui_router()

LIST_LIMIT = 200
LIST_FRAGMENTS = {"tasks-table": "tasks/_table.html"}
DETAIL_FRAGMENTS = {"task-info": "tasks/_info.html", "task-log": "tasks/_log.html",
                    "task-cancel": "tasks/_cancel.html"}


def _row(task: Any, primary: str | None) -> dict[str, Any]:
    return {**tasks_mod.task_summary(task), "run_on": tasks_mod.run_on(task, primary),
            "finished_state": task.state in TASK_FINISHED}


def list_data(zk: ZK) -> Mapping[str, Any]:
    primary = nodes_mod.primary_node(zk)
    tasks = [task for task, _version in tasks_mod.load_tasks(zk)]
    tasks.reverse()                                    # newest first
    shown = [_row(t, primary) for t in tasks[:LIST_LIMIT]]
    return {"tasks": shown, "total": len(tasks), "limit": LIST_LIMIT,
            "running": sum(1 for t in tasks if t.state == "RUNNING"),
            "pending": sum(1 for t in tasks if t.state == "PENDING")}


def detail_data(zk: ZK, task_id: str) -> Mapping[str, Any]:
    task = tasks_mod.get_task(zk, task_id)
    result = None if task.result is None else json.dumps(task.result, indent=2, sort_keys=True)
    return {"task": _row(task, nodes_mod.primary_node(zk)), "result": result,
            "log_lines": tasks_mod.task_log(zk, task_id)}


@router.get("/tasks")
def task_list(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    return render.page(request, "tasks/list.html", list_data(zk_of(request)), user=user, active="tasks",
                       live="/events/tasks")


@router.get("/events/tasks")
async def task_list_events(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    return live.stream(request, user, live.View(lambda: list_data(zk), LIST_FRAGMENTS))


@router.get("/tasks/{task_id}")
def task_detail(request: Request, task_id: str, user: UIUser = Depends(ui_user)) -> Response:
    return render.page(request, "tasks/detail.html", detail_data(zk_of(request), task_id), user=user,
                       active="tasks", live=f"/events/tasks/{task_id}")


@router.get("/events/tasks/{task_id}")
async def task_detail_events(request: Request, task_id: str, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    await run_in_threadpool(tasks_mod.get_task, zk, task_id)       # 404 for a task that is not there
    view = live.View(lambda: detail_data(zk, task_id), DETAIL_FRAGMENTS,
                     watch=(schema.task(task_id), schema.task_log(task_id)))
    return live.stream(request, user, view)


@router.post("/tasks/{task_id}/cancel")
async def task_cancel(request: Request, task_id: str, user: UIUser = Depends(ui_user)) -> Response:
    text = await run_in_threadpool(tasks_mod.cancel, zk_of(request), task_id)
    return action_done(request, user, text, await next_path(request, f"/tasks/{task_id}"))
