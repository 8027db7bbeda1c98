"""The dashboard: cluster health and faults, nodes, VMs by state, resources, running tasks.

Its figures come from `pvc.cluster.state.cluster_status`, the function behind `GET /api/v1/status`,
so the page and the API cannot disagree; nodes from the node list (`GET /api/v1/node`) and tasks
from `GET /api/v1/tasks`'s function. Faults are acknowledged here (pages/faults.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import Response

from pvc.api.web import live, render
from pvc.api.web.guard import UIUser, ui_router, ui_user
from pvc.api.web.pages.common import zk_of
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import state as state_mod
from pvc.cluster import tasks as tasks_mod
from pvc.core.zk import ZK

router = ui_router()

FRAGMENTS = {
    "dash-summary": "dashboard/_summary.html",
    "dash-faults": "dashboard/_faults.html",
    "dash-nodes": "dashboard/_nodes.html",
    "dash-vms": "dashboard/_vms.html",
    "dash-tasks": "dashboard/_tasks.html",
}
VM_STATE_ORDER = state_mod.VM_STATE_COMBINATIONS


def running_tasks(zk: ZK, primary: str | None) -> list[dict[str, Any]]:
    """Running tasks first, then waiting ones, as `GET /api/v1/tasks` lists them."""
    listed = tasks_mod.list_tasks(zk, primary)
    on_primary = f"{primary or 'none'} (primary)"
    out = []
    for group in ("active", "reserved"):
        for items in listed[group].values():
            for task in items:
                target = on_primary if task["target"] == tasks_mod.PRIMARY else task["target"]
                out.append({**task, "run_on": task["worker"] or target})
    return out


def data(zk: ZK) -> Mapping[str, Any]:
    status = state_mod.cluster_status(zk)
    nodes = [nodes_mod.node_view(n) for n in nodes_mod.load_nodes(zk)]
    vm_states = [(state, status["vms"].get(state, 0)) for state in VM_STATE_ORDER]
    return {"status": status, "nodes": nodes, "vm_states": vm_states,
            "tasks": running_tasks(zk, status["primary_node"]), "next": "/"}


def view(zk: ZK) -> live.View:
    return live.View(lambda: data(zk), FRAGMENTS)


@router.get("/")
def dashboard(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    context = data(zk_of(request))
    return render.page(request, "dashboard/page.html", context, user=user, active="dashboard",
                       live="/events/dashboard")


@router.get("/events/dashboard")
async def dashboard_events(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    return live.stream(request, user, view(zk_of(request)))
