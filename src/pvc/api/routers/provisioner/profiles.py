"""Profile and OVA image routes: `/provisioner/profile[/{profile}]`, `/provisioner/ova[/{ova}]`.

A profile names the templates, userdata and script (or the OVA) a job combines; OVA images are
listed and removed here, uploaded by routers.provisioner_ova.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import Field

from pvc.adapters.ceph import Storage
from pvc.api.common import get_storage, get_zk, ok, responses
from pvc.api.errors import message
from pvc.api.models import Doc, Message
from pvc.api.params import Inputs, inputs
from pvc.api.routers.provisioner.common import CLEAR, NOT_FOUND, LimitInputs, listing
from pvc.cluster import provisioner as prov
from pvc.core import vocabulary
from pvc.core.zk import ZK

router = APIRouter()

ProfileType = vocabulary.ProfileType
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


# -- response shapes ---------------------------------------------------------------------------------

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


# -- profiles --------------------------------------------------------------------------------------

def _profile_add(zk: ZK, name: str, params: ProfileElementAddInputs) -> str:
    return prov.add_profile(zk, name, params.profile_type, params.system_template,
                            network_template=params.network_template,
                            storage_template=params.storage_template, userdata=params.userdata,
                            script=params.script, ova=params.ova, arguments=params.arg)


@router.get("/profile", summary="Return a list of profiles",
            responses=responses(list[Profile], 200, *NOT_FOUND))
def profile_list(params: LimitInputs = inputs(LimitInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return listing(prov.list_profiles(zk, params.limit), "profiles")


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
    return listing(prov.list_ovas(zk, params.limit), "OVAs")


@router.get("/ova/{ova}", summary="Return information about OVA image {ova} (a one-element array)",
            responses=responses(list[Ova], 200, *NOT_FOUND))
def ova_get(ova: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok([prov.ova_item(zk, ova)])


@router.delete("/ova/{ova}", summary="Remove OVA image {ova} with its volumes, profile and system template",
               responses=responses(Message, 200, 400, *NOT_FOUND))
def ova_remove(ova: str, zk: ZK = Depends(get_zk), storage: Storage = Depends(get_storage)) -> JSONResponse:
    return message(prov.remove_ova(zk, ova, storage))
