"""Fault routes: list, acknowledge and delete cluster faults (pvc-facts §11.2); `GET /faults?all=true`
(ours) lists resolved faults too."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import Field

from pvc.api.auth import require_auth
from pvc.api.common import get_zk, ok, responses
from pvc.api.errors import message
from pvc.api.models import Fault, Message
from pvc.api.params import Bool, Inputs, inputs
from pvc.cluster import faults as faults_mod
from pvc.core.zk import ZK

router = APIRouter(prefix="/faults", tags=["faults"], dependencies=[Depends(require_auth)])

SortKey = Literal["first_reported", "last_reported", "acknowledged_at", "status", "health_delta", "message"]


class FaultListInputs(Inputs):
    sort_key: SortKey = Field("last_reported", description="The fault key to sort by (default last_reported)")
    all: Bool = Field(False, description="Also list resolved faults (whose condition ended; kept for "
                                         "faults.fault_retention_days); by default only active ones")


@router.get("", summary="Return a list of cluster faults (an empty array when there are none)",
            responses=responses(list[Fault]))
def fault_list(params: FaultListInputs = inputs(FaultListInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    # Upstream answers an unfiltered, empty fault list with 200 [] (the healthy case), not 404.
    return ok(faults_mod.list_faults(zk, params.sort_key, resolved=params.all))


@router.put("", summary="Acknowledge all cluster faults", responses=responses())
def fault_ack_all(zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(faults_mod.ack_all(zk))


@router.delete("", summary="Delete all cluster faults", responses=responses())
def fault_delete_all(zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(faults_mod.delete_all(zk))


@router.get("/{fault_id}", summary="Return one cluster fault (a one-element array)",
            responses=responses(list[Fault], 200, 404))
def fault_get(fault_id: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok([faults_mod.fault_view(faults_mod.get_fault(zk, fault_id))])


@router.put("/{fault_id}", summary="Acknowledge a cluster fault", responses=responses(Message, 200, 404))
def fault_ack(fault_id: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(faults_mod.ack_fault(zk, fault_id))


@router.delete("/{fault_id}", summary="Delete a cluster fault", responses=responses(Message, 200, 404))
def fault_delete(fault_id: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(faults_mod.delete_fault(zk, fault_id))
