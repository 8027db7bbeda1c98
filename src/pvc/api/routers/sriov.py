"""SR-IOV routes (upstream PVC 1.0.3): list PFs and VFs per node, show a VF, set its settings.

The node's PFs and VFs are what its daemon published; a PUT writes the VF's desired settings and
the node applies them (pvc.node.services.sriov). Lists answer 404 when empty, as upstream.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from pvc.api.auth import require_auth
from pvc.api.common import get_zk, ok, responses
from pvc.api.errors import message
from pvc.api.models import Message
from pvc.api.params import Bool, Inputs, inputs
from pvc.cluster import sriov as sriov_mod
from pvc.core.errors import NotFound
from pvc.core.zk import ZK

router = APIRouter(prefix="/sriov", tags=["network / sriov"], dependencies=[Depends(require_auth)])


class SriovPF(BaseModel):
    phy: str = Field(description="The name of the SR-IOV PF device")
    mtu: str = Field(description="The MTU of the SR-IOV PF device")
    vfs: list[str] = Field(description="The PHY names of the VFs of this PF")


class SriovVFConfig(BaseModel):
    vlan_id: str
    vlan_qos: str
    tx_rate_min: str
    tx_rate_max: str
    link_state: str
    spoof_check: bool
    trust: bool
    query_rss: bool


class SriovVFUsage(BaseModel):
    used: bool = Field(description="Whether the VF is currently used by a VM")
    domain: str = Field(description="The UUID of the VM using the VF, or empty")


class SriovVFPci(BaseModel):
    domain: str
    bus: str
    slot: str
    function: str


class SriovVF(BaseModel):
    phy: str
    pf: str
    mtu: int
    mac: str
    config: SriovVFConfig
    pci: SriovVFPci
    usage: SriovVFUsage


class NodeInputs(Inputs):
    node: str | None = Field(None, description="The node whose PFs or VFs to list (required)")


class VFListInputs(Inputs):
    node: str | None = Field(None, description="The node whose VFs to list (required)")
    pf: str | None = Field(None, description="Only the VFs of this PF")


class PFOnlyInputs(Inputs):
    pf: str | None = Field(None, description="Only the VFs of this PF")


class VFConfigInputs(Inputs):
    vlan_id: int | None = Field(None, description="The vLAN ID for vLAN tagging (0 is disabled)")
    vlan_qos: int | None = Field(None, description="The vLAN QOS priority (0 is disabled)")
    tx_rate_min: int | None = Field(None, description="The minimum TX rate (0 is disabled)")
    tx_rate_max: int | None = Field(None, description="The maximum TX rate (0 is disabled)")
    link_state: Literal["auto", "enable", "disable"] | None = Field(None, description="The administrative "
                                                                                     "link state")
    spoof_check: Bool | None = Field(None, description="Enable or disable spoof checking")
    trust: Bool | None = Field(None, description="Enable or disable VF user trust")
    query_rss: Bool | None = Field(None, description="Enable or disable query RSS support")


def _pfs(node: str | None, zk: ZK) -> JSONResponse:
    pfs = sriov_mod.list_pfs(zk, node)
    if not pfs:
        raise NotFound("This node has no SR-IOV PFs.")
    return ok(pfs)


def _vfs(node: str | None, pf: str | None, zk: ZK) -> JSONResponse:
    vfs = sriov_mod.list_vfs(zk, node, pf)
    if not vfs:
        raise NotFound("This node has no SR-IOV VFs." if not pf else f'PF "{pf}" has no SR-IOV VFs.')
    return ok(vfs)


@router.get("", summary="SR-IOV (a placeholder upstream: answers null)", include_in_schema=False)
def sriov_root() -> JSONResponse:
    return ok(None)


@router.get("/pf", summary="Return a list of SR-IOV PFs on a given node",
            responses=responses(list[SriovPF], 200, 404))
def pf_list(params: NodeInputs = inputs(NodeInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _pfs(params.node, zk)


@router.get("/pf/{node}", summary="Return a list of SR-IOV PFs on node {node}",
            responses=responses(list[SriovPF], 200, 400, 404))
def pf_list_node(node: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _pfs(node, zk)


@router.get("/vf", summary="Return a list of SR-IOV VFs on a given node, optionally limited to those in "
                           "the specified PF", responses=responses(list[SriovVF], 200, 404))
def vf_list(params: VFListInputs = inputs(VFListInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _vfs(params.node, params.pf, zk)


@router.get("/vf/{node}", summary="Return a list of SR-IOV VFs on node {node}, optionally limited to "
                                  "those in the specified PF",
            responses=responses(list[SriovVF], 200, 400, 404))
def vf_list_node(node: str, params: PFOnlyInputs = inputs(PFOnlyInputs),
                 zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _vfs(node, params.pf, zk)


@router.get("/vf/{node}/{vf}", summary="Return information about {vf} on {node}",
            responses=responses(SriovVF, 200, 400, 404))
def vf_info(node: str, vf: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok(sriov_mod.get_vf(zk, node, vf))


@router.put("/vf/{node}/{vf}", summary="Set the configuration of {vf} on {node}",
            responses=responses(Message, 200, 404))
def vf_set(node: str, vf: str, params: VFConfigInputs = inputs(VFConfigInputs),
           zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(sriov_mod.set_vf_config(zk, node, vf, params.model_dump()))
