"""Template routes: `/provisioner/template` (all three lists) and the system, network and storage
templates, with a network template's networks (`/net`) and a storage template's disks (`/disk`).

A template's network or disk element GET answers the object itself, not a one-element array.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import Field

from pvc.api.common import get_zk, ok, responses
from pvc.api.errors import message
from pvc.api.models import Doc, Message
from pvc.api.params import Bool, Inputs, inputs
from pvc.api.routers.provisioner.common import CLEAR, NOT_FOUND, LimitInputs, listing
from pvc.cluster import provisioner as prov
from pvc.core.vocabulary import MIGRATION_METHODS, SELECTOR_CHOICES
from pvc.core.zk import ZK

router = APIRouter()

SYSTEM_HELP = {
    "vcpus": f"vCPU count for the VM ({prov.VCPU_MIN}..{prov.VCPU_MAX})",
    "vram": f"vRAM size in MB for the VM ({prov.VRAM_MIN}..{prov.VRAM_MAX})",
    "serial": "Whether to enable a serial console for the VM",
    "vnc": "Whether to enable a VNC console for the VM",
    "vnc_bind": "VNC bind address (an IP address) when the VNC console is enabled [default: 127.0.0.1]",
    "node_limit": "CSV list of node(s) to limit VM assignment to",
    "node_selector": f"Selector to use for VM node assignment on migration/move "
                     f"({', '.join(SELECTOR_CHOICES)})",
    "node_autostart": "Whether to start the VM with its node's ready state (one-time)",
    "migration_method": f"The preferred migration method ({', '.join(MIGRATION_METHODS)})",
    "migration_max_downtime": f"The maximum time in milliseconds that a VM can be down for during a live "
                              f"migration [default: {prov.DOWNTIME_DEFAULT}]",
}
DISK_HELP = {
    "pool": "Ceph storage pool for the disk (must exist)",
    "source_volume": "Source storage volume to clone; not compatible with disk_size, filesystem, mountpoint",
    "disk_size": f"Disk size in GB ({prov.DISK_MIN_GB}..{prov.DISK_MAX_GB}); not compatible with "
                 f"source_volume",
    "filesystem": f"Filesystem for the disk ({', '.join(prov.FILESYSTEMS)}); not compatible with "
                  f"source_volume",
    "filesystem_arg": "Filesystem mkfs argument in '-X=foo' format; may be specified multiple times",
    "mountpoint": "In-VM mountpoint for the disk (an absolute path; needs a filesystem)",
}
DISK_ID_HELP = "Disk identifier in 'sdX'/'vdX' format (e.g. 'sda', 'vdb')"


# -- response shapes ---------------------------------------------------------------------------------

class SystemTemplate(Doc):
    id: int
    name: str
    vcpu_count: int
    vram_mb: int
    serial: bool
    vnc: bool
    vnc_bind: str | None
    node_limit: str | None = Field(description="CSV list of nodes, null if unlimited")
    node_selector: str | None
    node_autostart: bool
    migration_method: str | None
    migration_max_downtime: int
    ova: str | None = Field(description="The OVA this template was made for, if any")


class TemplateNetwork(Doc):
    id: int
    network_template: int = Field(description="The id of the network template")
    vni: str = Field(description="PVC network VNI, or upstream, cluster, storage")


class NetworkTemplate(Doc):
    id: int
    name: str
    mac_template: str | None
    ova: str | None
    networks: list[TemplateNetwork]


class TemplateDisk(Doc):
    id: int
    storage_template: int = Field(description="The id of the storage template")
    disk_id: str
    pool: str
    source_volume: str | None
    disk_size_gb: int | None
    filesystem: str | None
    filesystem_args: str = Field(description="The mkfs arguments, space-separated")
    mountpoint: str | None


class StorageTemplate(Doc):
    id: int
    name: str
    ova: str | None
    disks: list[TemplateDisk]


class AllTemplates(Doc):
    system_templates: list[SystemTemplate]
    network_templates: list[NetworkTemplate]
    storage_templates: list[StorageTemplate]


# -- inputs ------------------------------------------------------------------------------------------

class SystemElementAddInputs(Inputs):
    vcpus: int = Field(ge=prov.VCPU_MIN, le=prov.VCPU_MAX, description=SYSTEM_HELP["vcpus"])
    vram: int = Field(ge=prov.VRAM_MIN, le=prov.VRAM_MAX, description=SYSTEM_HELP["vram"])
    serial: Bool = Field(description=SYSTEM_HELP["serial"])
    vnc: Bool = Field(description=SYSTEM_HELP["vnc"])
    vnc_bind: str | None = Field(None, description=SYSTEM_HELP["vnc_bind"])
    node_limit: str | None = Field(None, description=SYSTEM_HELP["node_limit"])
    node_selector: str | None = Field(None, description=SYSTEM_HELP["node_selector"])
    node_autostart: Bool = Field(False, description=SYSTEM_HELP["node_autostart"])
    migration_method: str | None = Field(None, description=SYSTEM_HELP["migration_method"])
    migration_max_downtime: int | None = Field(None, ge=1, le=prov.DOWNTIME_MAX,
                                               description=SYSTEM_HELP["migration_max_downtime"])


class SystemAddInputs(SystemElementAddInputs):
    name: str = Field(description="Template name")


class SystemModifyInputs(Inputs):
    vcpus: int | None = Field(None, ge=prov.VCPU_MIN, le=prov.VCPU_MAX, description=SYSTEM_HELP["vcpus"])
    vram: int | None = Field(None, ge=prov.VRAM_MIN, le=prov.VRAM_MAX, description=SYSTEM_HELP["vram"])
    serial: Bool | None = Field(None, description=SYSTEM_HELP["serial"])
    vnc: Bool | None = Field(None, description=SYSTEM_HELP["vnc"])
    vnc_bind: str | None = Field(None, description=SYSTEM_HELP["vnc_bind"] + CLEAR)
    node_limit: str | None = Field(None, description=SYSTEM_HELP["node_limit"] + CLEAR)
    node_selector: str | None = Field(None, description=SYSTEM_HELP["node_selector"])
    node_autostart: Bool | None = Field(None, description=SYSTEM_HELP["node_autostart"])
    migration_method: str | None = Field(None, description=SYSTEM_HELP["migration_method"] + CLEAR)
    migration_max_downtime: int | None = Field(None, ge=1, le=prov.DOWNTIME_MAX,
                                               description=SYSTEM_HELP["migration_max_downtime"])


class NetworkElementAddInputs(Inputs):
    mac_template: str | None = Field(None, description="MAC address template, e.g. '{prefix}:ff:ff:{vmid}"
                                                       "{netid}' [default: random MACs]")


class NetworkAddInputs(NetworkElementAddInputs):
    name: str = Field(description="Template name")


class PermitInputs(Inputs):
    permit_duplicate: Bool = Field(False, description="Bypass checks to permit duplicate VNIs for niche "
                                                      "usecases")


class NetAddInputs(PermitInputs):
    vni: str = Field(description="PVC network VNI (an existing network), or upstream, cluster, storage")


class StorageAddInputs(Inputs):
    name: str = Field(description="Template name")


class DiskElementAddInputs(Inputs):
    pool: str = Field(description=DISK_HELP["pool"])
    source_volume: str | None = Field(None, description=DISK_HELP["source_volume"])
    disk_size: int | None = Field(None, ge=prov.DISK_MIN_GB, le=prov.DISK_MAX_GB,
                                  description=DISK_HELP["disk_size"])
    filesystem: str | None = Field(None, description=DISK_HELP["filesystem"])
    filesystem_arg: list[str] = Field(default_factory=list, description=DISK_HELP["filesystem_arg"])
    mountpoint: str | None = Field(None, description=DISK_HELP["mountpoint"])


class DiskAddInputs(DiskElementAddInputs):
    disk_id: str = Field(description=DISK_ID_HELP)


# -- all templates -----------------------------------------------------------------------------------

@router.get("/template", summary="Return a list of all templates",
            responses=responses(AllTemplates, 200))
def template_list(params: LimitInputs = inputs(LimitInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok(prov.list_templates(zk, params.limit))


# -- system templates ------------------------------------------------------------------------------

def _system_add(zk: ZK, name: str, params: SystemElementAddInputs) -> str:
    return prov.add_system_template(
        zk, name, params.vcpus, params.vram, params.serial, params.vnc, vnc_bind=params.vnc_bind,
        node_limit=params.node_limit, node_selector=params.node_selector,
        node_autostart=params.node_autostart, migration_method=params.migration_method,
        migration_max_downtime=params.migration_max_downtime)


@router.get("/template/system", summary="Return a list of system templates",
            responses=responses(list[SystemTemplate], 200, *NOT_FOUND))
def system_list(params: LimitInputs = inputs(LimitInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return listing(prov.list_system_templates(zk, params.limit), "system templates")


@router.post("/template/system", summary="Create a new system template", responses=responses(Message, 200))
def system_add(params: SystemAddInputs = inputs(SystemAddInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(_system_add(zk, params.name, params))


@router.get("/template/system/{template}", summary="Return information about system template {template} "
                                                  "(a one-element array)",
            responses=responses(list[SystemTemplate], 200, *NOT_FOUND))
def system_get(template: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok([prov.system_template_item(zk, template)])


@router.post("/template/system/{template}", summary="Create a new system template {template}",
             responses=responses(Message, 200))
def system_add_named(template: str, params: SystemElementAddInputs = inputs(SystemElementAddInputs),
                     zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(_system_add(zk, template, params))


@router.put("/template/system/{template}", summary="Modify an existing system template {template}: only the "
                                                  "given fields change",
            responses=responses(Message, 200, *NOT_FOUND))
def system_modify(template: str, params: SystemModifyInputs = inputs(SystemModifyInputs),
                  zk: ZK = Depends(get_zk)) -> JSONResponse:
    changes = {name: getattr(params, name) for name in SystemModifyInputs.model_fields}
    return message(prov.modify_system_template(zk, template, **changes))


@router.delete("/template/system/{template}", summary="Remove system template {template} (not while a "
                                                     "profile uses it)",
               responses=responses(Message, 200, 400, *NOT_FOUND))
def system_remove(template: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(prov.remove_system_template(zk, template))


# -- network templates -----------------------------------------------------------------------------

@router.get("/template/network", summary="Return a list of network templates",
            responses=responses(list[NetworkTemplate], 200, *NOT_FOUND))
def network_list(params: LimitInputs = inputs(LimitInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return listing(prov.list_network_templates(zk, params.limit), "network templates")


@router.post("/template/network", summary="Create a new network template", responses=responses(Message, 200))
def network_add(params: NetworkAddInputs = inputs(NetworkAddInputs), zk: ZK = Depends(get_zk)
                ) -> JSONResponse:
    return message(prov.add_network_template(zk, params.name, params.mac_template))


@router.get("/template/network/{template}", summary="Return information about network template {template} "
                                                   "(a one-element array)",
            responses=responses(list[NetworkTemplate], 200, *NOT_FOUND))
def network_get(template: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok([prov.network_template_item(zk, template)])


@router.post("/template/network/{template}", summary="Create a new network template {template}",
             responses=responses(Message, 200))
def network_add_named(template: str, params: NetworkElementAddInputs = inputs(NetworkElementAddInputs),
                      zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(prov.add_network_template(zk, template, params.mac_template))


@router.delete("/template/network/{template}", summary="Remove network template {template} (not while a "
                                                      "profile uses it)",
               responses=responses(Message, 200, 400, *NOT_FOUND))
def network_remove(template: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(prov.remove_network_template(zk, template))


@router.get("/template/network/{template}/net", summary="Return a list of networks in network template "
                                                       "{template}",
            responses=responses(list[TemplateNetwork], 200, *NOT_FOUND))
def net_list(template: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return listing(prov.list_template_networks(zk, template), "network template networks")


@router.post("/template/network/{template}/net", summary="Add a network to network template {template} (at "
                                                        "the end)",
             responses=responses(Message, 200, *NOT_FOUND))
def net_add(template: str, params: NetAddInputs = inputs(NetAddInputs), zk: ZK = Depends(get_zk)
            ) -> JSONResponse:
    return message(prov.add_template_network(zk, template, params.vni, params.permit_duplicate))


@router.get("/template/network/{template}/net/{vni}", summary="Return information about network {vni} in "
                                                             "network template {template}",
            responses=responses(TemplateNetwork, 200, *NOT_FOUND))
def net_get(template: str, vni: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok(prov.get_template_network(zk, template, vni))


@router.post("/template/network/{template}/net/{vni}", summary="Add network {vni} to network template "
                                                              "{template} (at the end)",
             responses=responses(Message, 200, *NOT_FOUND))
def net_add_named(template: str, vni: str, params: PermitInputs = inputs(PermitInputs),
                  zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(prov.add_template_network(zk, template, vni, params.permit_duplicate))


@router.delete("/template/network/{template}/net/{vni}", summary="Remove network {vni} from network template "
                                                                "{template}",
               responses=responses(Message, 200, 400, *NOT_FOUND))
def net_remove(template: str, vni: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(prov.remove_template_network(zk, template, vni))


# -- storage templates -----------------------------------------------------------------------------

def _disk_add(zk: ZK, template: str, disk_id: str, params: DiskElementAddInputs) -> str:
    return prov.add_template_disk(zk, template, disk_id, params.pool, source_volume=params.source_volume,
                                  disk_size=params.disk_size, filesystem=params.filesystem,
                                  filesystem_args=params.filesystem_arg, mountpoint=params.mountpoint)


@router.get("/template/storage", summary="Return a list of storage templates",
            responses=responses(list[StorageTemplate], 200, *NOT_FOUND))
def storage_list(params: LimitInputs = inputs(LimitInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return listing(prov.list_storage_templates(zk, params.limit), "storage templates")


@router.post("/template/storage", summary="Create a new storage template", responses=responses(Message, 200))
def storage_add(params: StorageAddInputs = inputs(StorageAddInputs), zk: ZK = Depends(get_zk)
                ) -> JSONResponse:
    return message(prov.add_storage_template(zk, params.name))


@router.get("/template/storage/{template}", summary="Return information about storage template {template} "
                                                   "(a one-element array)",
            responses=responses(list[StorageTemplate], 200, *NOT_FOUND))
def storage_get(template: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok([prov.storage_template_item(zk, template)])


@router.post("/template/storage/{template}", summary="Create a new storage template {template}",
             responses=responses(Message, 200, 400))
def storage_add_named(template: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(prov.add_storage_template(zk, template))


@router.delete("/template/storage/{template}", summary="Remove storage template {template} (not while a "
                                                      "profile uses it)",
               responses=responses(Message, 200, 400, *NOT_FOUND))
def storage_remove(template: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(prov.remove_storage_template(zk, template))


@router.get("/template/storage/{template}/disk", summary="Return a list of disks in storage template "
                                                        "{template}",
            responses=responses(list[TemplateDisk], 200, *NOT_FOUND))
def disk_list(template: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return listing(prov.list_template_disks(zk, template), "storage template disks")


@router.post("/template/storage/{template}/disk", summary="Create a new disk in storage template {template}",
             responses=responses(Message, 200, *NOT_FOUND))
def disk_add(template: str, params: DiskAddInputs = inputs(DiskAddInputs), zk: ZK = Depends(get_zk)
             ) -> JSONResponse:
    return message(_disk_add(zk, template, params.disk_id, params))


@router.get("/template/storage/{template}/disk/{disk_id}", summary="Return information about disk {disk_id} "
                                                                  "in storage template {template}",
            responses=responses(TemplateDisk, 200, *NOT_FOUND))
def disk_get(template: str, disk_id: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok(prov.get_template_disk(zk, template, disk_id))


@router.post("/template/storage/{template}/disk/{disk_id}", summary="Create a new disk {disk_id} in storage "
                                                                   "template {template}",
             responses=responses(Message, 200, *NOT_FOUND))
def disk_add_named(template: str, disk_id: str, params: DiskElementAddInputs = inputs(DiskElementAddInputs),
                   zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(_disk_add(zk, template, disk_id, params))


@router.delete("/template/storage/{template}/disk/{disk_id}", summary="Remove disk {disk_id} from storage "
                                                                     "template {template}",
               responses=responses(Message, 200, 400, *NOT_FOUND))
def disk_remove(template: str, disk_id: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(prov.remove_template_disk(zk, template, disk_id))

