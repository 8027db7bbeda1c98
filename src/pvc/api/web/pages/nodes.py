"""Nodes: the list, one node's detail with its VMs and its log (followed live), and its actions:
flush/ready and primary/secondary, through the same functions as `POST /api/v1/node/<node>/...`.

This module is the pattern for a page area: a `data` function per page that reads through
pvc.cluster, the fragments (by element id) a live view re-renders, the page routes, the SSE
routes (`/events/<same path>`), and the actions (POST, answered by `action_done`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from pvc.api.web import live, render
from pvc.api.web.guard import UIUser, ui_router, ui_user
from pvc.api.web.pages.common import action_done, form_field, next_path, zk_of
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import vms as vms_mod
from pvc.core import schema, vocabulary
from pvc.core.zk import ZK

router = ui_router()

LOG_LINES = 200
LIST_FRAGMENTS = {"nodes-table": "nodes/_table.html"}
DETAIL_FRAGMENTS = {
    "node-states": "nodes/_states.html",
    "node-facts": "nodes/_facts.html",
    "node-health": "nodes/_health.html",
    "node-vms": "nodes/_vms.html",
    "node-log": "nodes/_log.html",
}
DOMAIN_ACTIONS: tuple[str, ...] = vocabulary.NodeDomainAction.__args__        # flush, ready
COORDINATOR_ACTIONS: tuple[str, ...] = vocabulary.NodeCoordinatorAction.__args__   # primary, secondary


def list_data(zk: ZK) -> Mapping[str, Any]:
    fencing = nodes_mod.load_fencing(zk)
    nodes = [nodes_mod.node_view(n, fencing.get(n.name)) for n in nodes_mod.load_nodes(zk)]
    return {"nodes": nodes, "primary": nodes_mod.primary_node(zk)}


def detail_data(zk: ZK, name: str) -> Mapping[str, Any]:
    record = nodes_mod.get_node(zk, name)
    node = nodes_mod.node_view(record, nodes_mod.load_fencing(zk, [record.name]).get(record.name))
    vms = [vms_mod.static_view(e.record, e.status, vms_mod.record_summary(e.record))
           for e in vms_mod.list_vms(zk, node=record.name)]
    log_text = nodes_mod.node_log(zk, record.name, LOG_LINES)
    return {"node": node, "mode": record.mode, "vms": vms, "log_lines": log_text.splitlines(),
            "log_limit": LOG_LINES, "primary": nodes_mod.primary_node(zk)}


@router.get("/nodes")
def node_list(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    return render.page(request, "nodes/list.html", list_data(zk_of(request)), user=user, active="nodes",
                       live="/events/nodes")


@router.get("/events/nodes")
async def node_list_events(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    return live.stream(request, user, live.View(lambda: list_data(zk), LIST_FRAGMENTS))


@router.get("/nodes/{node}")
def node_detail(request: Request, node: str, user: UIUser = Depends(ui_user)) -> Response:
    context = detail_data(zk_of(request), node)
    return render.page(request, "nodes/detail.html", {**context, "domain_actions": DOMAIN_ACTIONS,
                                                      "coordinator_actions": COORDINATOR_ACTIONS},
                       user=user, active="nodes", live=f"/events/nodes/{node}")


@router.get("/events/nodes/{node}")
async def node_detail_events(request: Request, node: str, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    await run_in_threadpool(nodes_mod.get_node, zk, node)          # 404 for a node that is not there
    view = live.View(lambda: detail_data(zk, node), DETAIL_FRAGMENTS, watch=(schema.node_log(node),))
    return live.stream(request, user, view)


@router.post("/nodes/{node}/domain-state")
async def node_domain_state(request: Request, node: str, user: UIUser = Depends(ui_user)) -> Response:
    state = await form_field(request, "state", DOMAIN_ACTIONS)
    text = await run_in_threadpool(nodes_mod.set_domain_state, zk_of(request), node, state)
    return action_done(request, user, text, await next_path(request, f"/nodes/{node}"))


@router.post("/nodes/{node}/coordinator-state")
async def node_coordinator_state(request: Request, node: str, user: UIUser = Depends(ui_user)) -> Response:
    state = await form_field(request, "state", COORDINATOR_ACTIONS)
    text = await run_in_threadpool(nodes_mod.set_coordinator_state, zk_of(request), node, state)
    return action_done(request, user, text, await next_path(request, f"/nodes/{node}"))
