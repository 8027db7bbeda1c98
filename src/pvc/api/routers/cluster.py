"""Cluster-wide routes: initialize, backup/restore, status and maintenance, primary node."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from pvc.adapters.network import Nftables
from pvc.api.auth import require_auth
from pvc.api.common import get_settings, get_zk, ok, responses
from pvc.api.errors import message
from pvc.api.models import ClusterStatus, Doc, PrimaryNode
from pvc.api.params import Bool, Inputs, inputs
from pvc.api.routers.networks import get_nft
from pvc.cluster import backup as backup_mod
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import state as state_mod
from pvc.cluster import upstream_writes
from pvc.core import domainxml
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
                                          "double-encoded, or decoded once); with from_upstream, the JSON "
                                          "that upstream PVC 1.0.x's `pvc cluster backup -f` writes")
    mode: Literal["replace", "merge"] = Field(
        "replace", description="replace (default): the cluster equals the backup afterwards (what the "
                               "backup covers and lacks is deleted; secrets, sessions, locks and ephemeral "
                               "znodes are kept); merge: only write the backup's znodes (nothing is deleted)")
    force: Bool = Field(False, description="Restore or import even while node daemons run (their "
                                           "/nodes/<node>/alive znodes exist); refused otherwise")
    allow_other_cluster: Bool = Field(False, description="Restore a backup whose manifest names another "
                                                         "cluster; refused otherwise")
    from_upstream: Bool = Field(False, description="Import an upstream PVC 1.0.x backup (schema 15) into "
                                                   "this initialized cluster: VMs, networks, storage "
                                                   "documents and faults are mapped, the rest dropped with "
                                                   "reasons; the answer is the report")
    dry_run: Bool = Field(False, description="With from_upstream: report what maps, what does not and what "
                                             "is dropped, write nothing")
    partial: Bool = Field(False, description="With from_upstream: import what maps even if some items do "
                                             "not (default: nothing is written unless everything maps)")


class BackupInputs(Inputs):
    manifest: Bool = Field(False, description="Add a manifest (key `manifest`: format, schema version, "
                                              "cluster name, time, SHA-256 of the content) that restore "
                                              "checks; without it the body is upstream's shape exactly")


class ImportItem(Doc):
    kind: str = Field(description="vm, network, pool, volume, snapshot, fault (or acl, reservation, "
                                  "vm snapshot when not mapped)")
    key: str = Field(description="The object's key: VM UUID, VNI, pool, pool/volume, "
                                 "pool/volume@snapshot, fault id, <VM UUID>/<name> for a VM snapshot")
    name: str
    notes: list[str] | None = None
    reason: str | None = Field(None, description="Why it does not map (unmapped and failed items)")


class DroppedData(Doc):
    what: str = Field(description="The kind of upstream data, as a path pattern")
    reason: str = Field(description="Why it is not imported")
    count: int = Field(description="How many znodes")
    paths: list[str] = Field(description="The first 20 of those znodes")


class RestoreReport(Doc):
    message: str
    source: dict[str, Any] | None = Field(None, description="from_upstream: {cluster, schema_version}")
    complete: bool | None = Field(None, description="from_upstream: every item maps")
    dry_run: bool | None = None
    mapped: list[ImportItem] | None = None
    unmapped: list[ImportItem] | None = None
    dropped: list[DroppedData] | None = None
    written: list[ImportItem] | None = None
    failed: list[ImportItem] | None = None


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
def backup(params: BackupInputs = inputs(BackupInputs), zk: ZK = Depends(get_zk),
           settings: Settings = Depends(get_settings)) -> Response:
    data = backup_mod.backup(zk, manifest=params.manifest, cluster=settings.cluster.name)
    body = json.dumps(json.dumps(data))
    return Response(body, media_type="application/json")


@router.post("/restore", summary="Restore a backup over the cluster (replacing its data), or import an "
                                 "upstream PVC 1.0 backup", responses=responses(RestoreReport))
def restore(params: RestoreInputs = inputs(RestoreInputs), zk: ZK = Depends(get_zk),
            settings: Settings = Depends(get_settings), nft: Nftables = Depends(get_nft)) -> JSONResponse:
    """A backup's manifest (when it has one) is checked before anything is written: its checksum,
    schema version and cluster name. Refused (400, as every refusal) while node daemons run unless
    `force`. With `from_upstream` the answer is the import report; 400 with the report when items
    do not map and `partial` is not given (nothing written)."""
    if params.from_upstream:
        report = upstream_writes.import_upstream(
            zk, params.cluster_data, dry_run=params.dry_run, partial=params.partial, force=params.force,
            policy=domainxml.DomainPolicy.from_settings(settings), checker=nft.check)
        refused = not report["dry_run"] and not report["complete"] and not params.partial
        return ok(report, 400 if refused else 200)
    return message(backup_mod.restore(zk, params.cluster_data, mode=params.mode, force=params.force,
                                      cluster=settings.cluster.name,
                                      allow_other_cluster=params.allow_other_cluster))


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
