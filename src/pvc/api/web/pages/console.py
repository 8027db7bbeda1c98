"""Consoles in the browser (issue 19, DESIGN D17): a VM's serial console and its VNC display.

The page (`/vms/<vm>/console`) is an ordinary UI page; the consoles themselves are websockets
(`/vms/<vm>/console/serial` and `/vms/<vm>/console/vnc`), checked and relayed by
pvc.api.web.wsproxy. They sit on their own router: the UI guard is written for HTTP requests, and
the websocket handshake has its own checks there (Origin, session, CSRF token in the query).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import Response

from pvc.api.web import render, wsproxy
from pvc.api.web.guard import UIUser, ui_router, ui_user
from pvc.api.web.pages.common import zk_of
from pvc.cluster import vms as vms_mod
from pvc.core.zk import ZK

router = ui_router()
sockets = APIRouter(include_in_schema=False)


def data(zk: ZK, vm: str) -> Mapping[str, Any]:
    entry = vms_mod.get_entry(zk, vm)
    status = entry.status
    return {"record": entry.record, "running": vms_mod.is_running(status),
            "node": status.node if status is not None else "",
            "has_vnc": bool(status is not None and status.vnc)}


@router.get("/vms/{vm}/console")
def console_page(request: Request, vm: str, user: UIUser = Depends(ui_user)) -> Response:
    return render.page(request, "console/console.html", data(zk_of(request), vm), user=user, active="vms")


@sockets.websocket("/vms/{vm}/console/serial")
async def serial_socket(ws: WebSocket, vm: str) -> None:
    refusal = await wsproxy.handshake_refusal(ws)
    if refusal is not None:
        wsproxy.log.warning("%s", refusal)
        await ws.close(code=1008)          # before accept: the browser sees 403
        return
    await wsproxy.serial(ws, vm)


@sockets.websocket("/vms/{vm}/console/vnc")
async def vnc_socket(ws: WebSocket, vm: str) -> None:
    refusal = await wsproxy.handshake_refusal(ws)
    if refusal is not None:
        wsproxy.log.warning("%s", refusal)
        await ws.close(code=1008)
        return
    await wsproxy.vnc(ws, vm)
