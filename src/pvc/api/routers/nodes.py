"""Node routes: list and inspect nodes, primary hand-over, flush/ready, node logs."""

from __future__ import annotations

from typing import get_args

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import AliasChoices, Field

from pvc.api.auth import require_auth
from pvc.api.common import get_zk, ok, responses, wait_async
from pvc.api.errors import message
from pvc.api.models import Message, Node, NodeCoordinatorState, NodeDaemonState, NodeDomainState, NodeLog
from pvc.api.params import Bool, Inputs, inputs
from pvc.cluster import nodes as nodes_mod
from pvc.core import vocabulary
from pvc.core.errors import NotFound
from pvc.core.records import CoordinatorState
from pvc.core.zk import ZK

router = APIRouter(prefix="/node", tags=["node"], dependencies=[Depends(require_auth)])

NODE_404 = (404,)
FLUSH_WAIT = 3600.0   # as the cluster layer: a flush of a busy node can take long


def _states(states: tuple[str, ...]) -> str:
    return ", ".join(states)


class NodeListInputs(Inputs):
    """As upstream, a state filter takes any text: one that no node is in finds nothing (404)."""

    limit: str | None = Field(None, description="A regex on the node name; fuzzy unless anchored with ^ or $")
    daemon_state: str | None = Field(None, description="Only nodes in this daemon state ("
                                                       f"{_states(vocabulary.DAEMON_STATES)})")
    coordinator_state: str | None = Field(None, description="Only nodes in this coordinator state ("
                                                            f"{_states(get_args(CoordinatorState))})")
    domain_state: str | None = Field(None, description="Only nodes in this domain state ("
                                                       f"{_states(vocabulary.DOMAIN_STATES)}; the state "
                                                       "filters are OR-combined)")


class CoordinatorInputs(Inputs):
    state: vocabulary.NodeCoordinatorAction = Field(
        validation_alias=AliasChoices("state", "action"),
        description="The new coordinator state (PVC's CLI sends `state`; its swagger said `action`)")


class DomainInputs(Inputs):
    state: vocabulary.NodeDomainAction = Field(
        validation_alias=AliasChoices("state", "action"),
        description="flush: move every VM away; ready: take VMs again (PVC's CLI sends `state`)")
    wait: Bool = Field(False, description="Answer only once the node has finished flushing or readying")


class LogInputs(Inputs):
    lines: int = Field(10, ge=0, le=100000, description="How many of the last log lines to return")


@router.get("", summary="Return a list of nodes in the cluster", responses=responses(list[Node], 200, 404))
def node_list(params: NodeListInputs = inputs(NodeListInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    nodes = nodes_mod.list_nodes(zk, params.limit, params.daemon_state, params.coordinator_state,
                                 params.domain_state)
    if not nodes:
        raise NotFound("Node not found.")
    fencing = nodes_mod.load_fencing(zk)
    return ok([nodes_mod.node_view(n, fencing.get(n.name)) for n in nodes])


@router.get("/{node}", summary="Return information about {node} (a one-element array)",
            responses=responses(list[Node], 200, *NODE_404))
def node_get(node: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    record = nodes_mod.get_node(zk, node)
    return ok([nodes_mod.node_view(record, nodes_mod.load_fencing(zk, [record.name]).get(record.name))])


@router.get("/{node}/daemon-state", summary="Return the daemon state of {node}",
            responses=responses(NodeDaemonState, 200, *NODE_404))
def daemon_state(node: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    record = nodes_mod.get_node(zk, node)
    return ok({"name": record.name, "daemon_state": record.daemon_state})


@router.get("/{node}/coordinator-state", summary="Return the coordinator state of {node}",
            responses=responses(NodeCoordinatorState, 200, *NODE_404))
def coordinator_state(node: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    record = nodes_mod.get_node(zk, node)
    return ok({"name": record.name, "coordinator_state": record.coordinator_state})


@router.post("/{node}/coordinator-state", summary="Make {node} primary or secondary coordinator",
             responses=responses(Message, 200, *NODE_404))
def set_coordinator_state(node: str, params: CoordinatorInputs = inputs(CoordinatorInputs),
                          zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(nodes_mod.set_coordinator_state(zk, node, params.state))


@router.get("/{node}/domain-state", summary="Return the domain state of {node}",
            responses=responses(NodeDomainState, 200, *NODE_404))
def domain_state(node: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    record = nodes_mod.get_node(zk, node)
    return ok({"name": record.name, "domain_state": record.domain_state})


@router.post("/{node}/domain-state", summary="Flush {node} of its VMs or return it to service",
             responses=responses(Message, 200, *NODE_404))
async def set_domain_state(request: Request, node: str, params: DomainInputs = inputs(DomainInputs),
                           zk: ZK = Depends(get_zk)) -> JSONResponse:
    text = await run_in_threadpool(nodes_mod.set_domain_state, zk, node, params.state)
    if params.wait:
        # Wait here rather than in the cluster layer's sleep loop: a flush can take minutes, and
        # a waiting request must not hold one of the threads that serve everyone else.
        def settled() -> bool:
            return nodes_mod.get_node(zk, node).domain_state not in ("flush", "unflush")

        await wait_async(request, settled, FLUSH_WAIT)
    return message(text)


@router.get("/{node}/log", summary="Return the recent log lines of {node}",
            responses=responses(NodeLog, 200, *NODE_404))
def node_log(node: str, params: LogInputs = inputs(LogInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok({"name": node, "data": nodes_mod.node_log(zk, node, params.lines)})
