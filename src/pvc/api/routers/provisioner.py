"""Provisioner data routes (pvc-facts §8.3 "Provisioner"): templates, userdata, scripts, profiles, OVAs.

Decisions and writes live in pvc.cluster.provisioner; these routes parse inputs, call it and shape
answers as PVC clients expect: element GETs of templates, userdata, scripts, profiles and OVAs are
one-element arrays, those of a template's network or disk the object itself; an empty list is a
404 with upstream's message. Creating VMs (`POST /provisioner/create`), job status and OVA upload
are in their own router.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import Field

from pvc.adapters.ceph import Storage
from pvc.api.auth import require_auth
from pvc.api.common import get_storage, get_zk, ok, responses
from pvc.api.errors import message
from pvc.api.models import Doc, Message
from pvc.api.params import Bool, Inputs, inputs
from pvc.cluster import provisioner as prov
from pvc.core.errors import NotFound
from pvc.core.vocabulary import MIGRATION_METHODS, SELECTOR_CHOICES
from pvc.core.zk import ZK

router = APIRouter(prefix="/provisioner", tags=["provisioner"], dependencies=[Depends(require_auth)])

NOT_FOUND = (404,)
ProfileType = Literal["provisioner", "ova"]
LIMIT_HELP = "A regex on the name; fuzzy unless anchored with ^ or $"
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
USERDATA_HELP = ("Raw userdata document: #cloud-config (a YAML mapping), a script (#!), another cloud-init "
                 "format, or a MIME document (e.g. multipart/mixed)")
SCRIPT_HELP = "Raw Python script document; it must define class VMBuilderScript(VMBuilder)"
PROFILE_HELP = {
    "profile_type": "Profile type: provisioner or ova",
    "system_template": "System template name",
    "network_template": "Network template name (required for provisioner profiles)",
    "storage_template": "Storage template name (required for provisioner profiles)",
    "userdata": "Userdata document name",
    "script": "Script name",
    "ova": "OVA image source (required for ova profiles)",
    "arg": "Script install() function keyword argument in 'arg=data' format; may be specified multiple times",
}
CLEAR = "; an empty value removes it"


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


class Userdata(Doc):
    id: int
    name: str
    userdata: str


class Script(Doc):
    id: int
    name: str
    script: str


class Profile(Doc):
    id: int
    name: str
    type: ProfileType
    system_template: str = Field(description="Name, or N/A")
    network_template: str = Field(description="Name, or N/A")
    storage_template: str = Field(description="Name, or N/A")
    userdata: str = Field(description="Name, or N/A")
    script: str = Field(description="Name, or N/A")
    ova: str = Field(description="Name, or N/A")
    arguments: list[str] = Field(description="Script arguments in 'arg=data' format")


class OvaVolume(Doc):
    pool: str
    volume_name: str
    volume_format: str
    disk_id: str
    disk_size_gb: int


class Ova(Doc):
    id: int
    name: str
    volumes: list[OvaVolume]


# -- inputs ------------------------------------------------------------------------------------------

class LimitInputs(Inputs):
    limit: str | None = Field(None, description=LIMIT_HELP)


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


class UserdataElementInputs(Inputs):
    data: str = Field(description=USERDATA_HELP)


class UserdataAddInputs(UserdataElementInputs):
    name: str = Field(description="Userdata name")


class ScriptElementInputs(Inputs):
    data: str = Field(description=SCRIPT_HELP)


class ScriptAddInputs(ScriptElementInputs):
    name: str = Field(description="Script name")


class ProfileElementAddInputs(Inputs):
    profile_type: ProfileType = Field(description=PROFILE_HELP["profile_type"])
    script: str = Field(description=PROFILE_HELP["script"])
    system_template: str = Field(description=PROFILE_HELP["system_template"])
    network_template: str | None = Field(None, description=PROFILE_HELP["network_template"])
    storage_template: str | None = Field(None, description=PROFILE_HELP["storage_template"])
    userdata: str | None = Field(None, description=PROFILE_HELP["userdata"])
    ova: str | None = Field(None, description=PROFILE_HELP["ova"])
    arg: list[str] = Field(default_factory=list, description=PROFILE_HELP["arg"])


class ProfileAddInputs(ProfileElementAddInputs):
    name: str = Field(description="Profile name")


class ProfileModifyInputs(Inputs):
    profile_type: ProfileType | None = Field(None, description=PROFILE_HELP["profile_type"])
    script: str | None = Field(None, description=PROFILE_HELP["script"])
    system_template: str | None = Field(None, description=PROFILE_HELP["system_template"])
    network_template: str | None = Field(None, description=PROFILE_HELP["network_template"] + CLEAR)
    storage_template: str | None = Field(None, description=PROFILE_HELP["storage_template"] + CLEAR)
    userdata: str | None = Field(None, description=PROFILE_HELP["userdata"] + CLEAR)
    ova: str | None = Field(None, description=PROFILE_HELP["ova"] + CLEAR)
    arg: list[str] = Field(default_factory=list, description=PROFILE_HELP["arg"] + "; replaces all previous "
                                                                                 "ones (one empty value "
                                                                                 "removes them)")


def _listing(items: list[dict[str, Any]], what: str) -> JSONResponse:
    if not items:
        raise NotFound(f"No {what} found.")
    return ok(items)


# -- placeholder and all templates ---------------------------------------------------------------------

@router.get("", summary="Provisioner root (a placeholder: null)", responses=responses({"type": "null"}, 200))
def provisioner_root() -> JSONResponse:
    return ok(None)


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
    return _listing(prov.list_system_templates(zk, params.limit), "system templates")


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
    return _listing(prov.list_network_templates(zk, params.limit), "network templates")


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
    return _listing(prov.list_template_networks(zk, template), "network template networks")


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
    return _listing(prov.list_storage_templates(zk, params.limit), "storage templates")


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
    return _listing(prov.list_template_disks(zk, template), "storage template disks")


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


# -- userdata --------------------------------------------------------------------------------------

@router.get("/userdata", summary="Return a list of userdata documents",
            responses=responses(list[Userdata], 200, *NOT_FOUND))
def userdata_list(params: LimitInputs = inputs(LimitInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _listing(prov.list_userdata(zk, params.limit), "userdata documents")


@router.post("/userdata", summary="Create a new userdata document", responses=responses(Message, 200))
def userdata_add(params: UserdataAddInputs = inputs(UserdataAddInputs), zk: ZK = Depends(get_zk)
                 ) -> JSONResponse:
    return message(prov.add_userdata(zk, params.name, params.data))


@router.get("/userdata/{userdata}", summary="Return information about userdata document {userdata} (a "
                                           "one-element array)",
            responses=responses(list[Userdata], 200, *NOT_FOUND))
def userdata_get(userdata: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok([prov.userdata_item(zk, userdata)])


@router.post("/userdata/{userdata}", summary="Create a new userdata document {userdata}",
             responses=responses(Message, 200))
def userdata_add_named(userdata: str, params: UserdataElementInputs = inputs(UserdataElementInputs),
                       zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(prov.add_userdata(zk, userdata, params.data))


@router.put("/userdata/{userdata}", summary="Update userdata document {userdata}",
            responses=responses(Message, 200, *NOT_FOUND))
def userdata_modify(userdata: str, params: UserdataElementInputs = inputs(UserdataElementInputs),
                    zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(prov.modify_userdata(zk, userdata, params.data))


@router.delete("/userdata/{userdata}", summary="Remove userdata document {userdata} (not 'empty', nor while "
                                              "a profile uses it)",
               responses=responses(Message, 200, 400, *NOT_FOUND))
def userdata_remove(userdata: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(prov.remove_userdata(zk, userdata))


# -- scripts ---------------------------------------------------------------------------------------

@router.get("/script", summary="Return a list of scripts", responses=responses(list[Script], 200, *NOT_FOUND))
def script_list(params: LimitInputs = inputs(LimitInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _listing(prov.list_scripts(zk, params.limit), "scripts")


@router.post("/script", summary="Create a new script", responses=responses(Message, 200))
def script_add(params: ScriptAddInputs = inputs(ScriptAddInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(prov.add_script(zk, params.name, params.data))


@router.get("/script/{script}", summary="Return information about script {script} (a one-element array)",
            responses=responses(list[Script], 200, *NOT_FOUND))
def script_get(script: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok([prov.script_item(zk, script)])


@router.post("/script/{script}", summary="Create a new script {script}", responses=responses(Message, 200))
def script_add_named(script: str, params: ScriptElementInputs = inputs(ScriptElementInputs),
                     zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(prov.add_script(zk, script, params.data))


@router.put("/script/{script}", summary="Update script {script}",
            responses=responses(Message, 200, *NOT_FOUND))
def script_modify(script: str, params: ScriptElementInputs = inputs(ScriptElementInputs),
                  zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(prov.modify_script(zk, script, params.data))


@router.delete("/script/{script}", summary="Remove script {script} (not while a profile uses it)",
               responses=responses(Message, 200, 400, *NOT_FOUND))
def script_remove(script: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(prov.remove_script(zk, script))


# -- profiles --------------------------------------------------------------------------------------

def _profile_add(zk: ZK, name: str, params: ProfileElementAddInputs) -> str:
    return prov.add_profile(zk, name, params.profile_type, params.system_template,
                            network_template=params.network_template,
                            storage_template=params.storage_template, userdata=params.userdata,
                            script=params.script, ova=params.ova, arguments=params.arg)


@router.get("/profile", summary="Return a list of profiles",
            responses=responses(list[Profile], 200, *NOT_FOUND))
def profile_list(params: LimitInputs = inputs(LimitInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _listing(prov.list_profiles(zk, params.limit), "profiles")


@router.post("/profile", summary="Create a new profile", responses=responses(Message, 200))
def profile_add(params: ProfileAddInputs = inputs(ProfileAddInputs), zk: ZK = Depends(get_zk)
                ) -> JSONResponse:
    return message(_profile_add(zk, params.name, params))


@router.get("/profile/{profile}", summary="Return information about profile {profile} (a one-element array)",
            responses=responses(list[Profile], 200, *NOT_FOUND))
def profile_get(profile: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok([prov.profile_item(zk, profile)])


@router.post("/profile/{profile}", summary="Create a new profile {profile}",
             responses=responses(Message, 200))
def profile_add_named(profile: str, params: ProfileElementAddInputs = inputs(ProfileElementAddInputs),
                      zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(_profile_add(zk, profile, params))


@router.put("/profile/{profile}", summary="Modify profile {profile}: only the given fields change",
            responses=responses(Message, 200, *NOT_FOUND))
def profile_modify(profile: str, params: ProfileModifyInputs = inputs(ProfileModifyInputs),
                   zk: ZK = Depends(get_zk)) -> JSONResponse:
    changes = {name: getattr(params, name) for name in ProfileModifyInputs.model_fields if name != "arg"}
    return message(prov.modify_profile(zk, profile, **changes, arguments=params.arg or None))


@router.delete("/profile/{profile}", summary="Remove profile {profile}",
               responses=responses(Message, 200, 400, *NOT_FOUND))
def profile_remove(profile: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return message(prov.remove_profile(zk, profile))


# -- OVA images (upload: the provisioner jobs router) --------------------------------------------------

@router.get("/ova", summary="Return a list of OVA sources", responses=responses(list[Ova], 200, *NOT_FOUND))
def ova_list(params: LimitInputs = inputs(LimitInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _listing(prov.list_ovas(zk, params.limit), "OVAs")


@router.get("/ova/{ova}", summary="Return information about OVA image {ova} (a one-element array)",
            responses=responses(list[Ova], 200, *NOT_FOUND))
def ova_get(ova: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok([prov.ova_item(zk, ova)])


@router.delete("/ova/{ova}", summary="Remove OVA image {ova} with its volumes, profile and system template",
               responses=responses(Message, 200, 400, *NOT_FOUND))
def ova_remove(ova: str, zk: ZK = Depends(get_zk), storage: Storage = Depends(get_storage)) -> JSONResponse:
    return message(prov.remove_ova(zk, ova, storage))
