"""Cluster-wide routes: initialize, backup/restore, status and maintenance, primary node."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from pvc.api.auth import require_auth
from pvc.api.common import get_settings, get_zk, ok, responses
from pvc.api.errors import message
from pvc.api.models import ClusterStatus, PrimaryNode
from pvc.api.params import Bool, Inputs, inputs
from pvc.cluster import backup as backup_mod
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import state as state_mod
from pvc.core.config import Settings
from pvc.core.zk import ZK

router = APIRouter(tags=["root"], dependencies=[Depends(require_auth)])
public = APIRouter(tags=["root"])

CONFIRM = "yes-i-really-mean-it"
CONFIRM_TEXT = "Confirmation that the caller really means it (any value)"


class InitializeInputs(Inputs):
    overwrite: Bool = Field(False, description="Wipe all existing cluster data first (default false)")
    confirm: str = Field(alias=CONFIRM, description=CONFIRM_TEXT)


class RestoreInputs(Inputs):
    confirm: str = Field(alias=CONFIRM, description=CONFIRM_TEXT)
    cluster_data: str = Field(description="The JSON text of a backup from GET /backup (as returned, "
                                          "double-encoded, or decoded once)")


class MaintenanceInputs(Inputs):
    state: Bool = Field(description="true to enter maintenance mode, false to leave it")


@router.post("/initialize", summary="Initialize a new PVC cluster (cluster name from the configuration)",
             responses=responses())
def initialize(params: InitializeInputs = inputs(InitializeInputs), zk: ZK = Depends(get_zk),
               settings: Settings = Depends(get_settings)) -> JSONResponse:
    return message(state_mod.initialize(zk, settings.cluster.name, overwrite=params.overwrite))


BACKUP_SCHEMA = {
    "type": "string",
    "contentMediaType": "application/json",
    "description": "A JSON object {path: value} of every persistent znode, encoded AGAIN as a JSON "
                   "string (upstream PVC's shape, which its CLI relies on).",
}


@router.get("/backup", summary="Back up all cluster data as JSON", responses=responses(BACKUP_SCHEMA))
def backup(zk: ZK = Depends(get_zk)) -> Response:
    body = json.dumps(json.dumps(backup_mod.backup(zk)))
    return Response(body, media_type="application/json")


@router.post("/restore", summary="Restore a backup over the cluster; overwrites existing data",
             responses=responses())
def restore(params: RestoreInputs = inputs(RestoreInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(backup_mod.restore(zk, params.cluster_data))


@router.get("/status", summary="Return the current PVC cluster status", responses=responses(ClusterStatus))
def status(zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok(state_mod.cluster_status(zk))


@router.post("/status", summary="Set the cluster maintenance mode", responses=responses())
def set_status(params: MaintenanceInputs = inputs(MaintenanceInputs),
               zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(state_mod.set_maintenance(zk, params.state))


@public.get("/status/primary_node", summary="Return the name of the current primary node",
            responses={**responses(PrimaryNode), 204: {"description": "There is no primary node right now"}})
def primary_node(zk: ZK = Depends(get_zk)) -> Response:
    name = nodes_mod.primary_node(zk)
    if name is None:
        return Response(status_code=204)
    return ok({"primary_node": name})
