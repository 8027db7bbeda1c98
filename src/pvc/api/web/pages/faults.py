"""Fault actions (shown on the dashboard): acknowledge one fault, or all of them.

The same functions as `PUT /api/v1/faults/<id>` and `PUT /api/v1/faults`.
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from pvc.api.web.guard import UIUser, ui_router, ui_user
from pvc.api.web.pages.common import action_done, next_path, zk_of
from pvc.cluster import faults as faults_mod

router = ui_router()


@router.post("/faults/{fault_id}/ack")
async def fault_ack(request: Request, fault_id: str, user: UIUser = Depends(ui_user)) -> Response:
    text = await run_in_threadpool(faults_mod.ack_fault, zk_of(request), fault_id)
    return action_done(request, user, text, await next_path(request, "/"))


@router.post("/faults/ack")
async def fault_ack_all(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    text = await run_in_threadpool(faults_mod.ack_all, zk_of(request))
    return action_done(request, user, text, await next_path(request, "/"))
