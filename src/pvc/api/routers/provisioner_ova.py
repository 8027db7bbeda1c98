"""OVA upload (pvc-facts §7.2 "OVA flow", §8.3): `POST /provisioner/ova[/<name>]`.

The OVA comes as a multipart part named `file` (starlette spools it to a temporary file, so it is
never held whole in memory); pool, name and ova_size come in the query string or form, as
upstream's client sends them. The upload is synchronous, as upstream's: pvc.cluster.ova parses the
archive, writes each VMDK into a volume `ova_<name>_sdX` and stores the OVA, its system template
and its profile; any error leaves nothing behind. Listing and removal are in routers.provisioner.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import Field, WithJsonSchema
from starlette.datastructures import UploadFile

from pvc.adapters.ceph import Storage
from pvc.api.auth import require_auth
from pvc.api.common import get_storage, get_zk, responses
from pvc.api.errors import ArgumentError, message
from pvc.api.models import Message
from pvc.api.params import Inputs, inputs
from pvc.cluster import ova as ova_mod
from pvc.core.zk import ZK

router = APIRouter(prefix="/provisioner", tags=["provisioner"], dependencies=[Depends(require_auth)])

UploadField = Annotated[Any, WithJsonSchema({"type": "string", "format": "binary"})]
DESCRIPTION = ("The API client is responsible for determining and setting the ova_size value, as this value "
               "cannot be determined dynamically before the upload proceeds. The OVA's disks become volumes "
               "ova_<name>_sdX (VMDK, converted at deploy time); a system template and a profile of type "
               "ova named like the OVA are created. The OVA provisioner script must be stored as script "
               "'ova' (or 'default_ova') first.")


class OvaElementUploadInputs(Inputs):
    pool: str = Field(description="Storage pool name")
    ova_size: int = Field(ge=0, description="Size of the OVA file in bytes (accepted for compatibility; the "
                                            "uploaded file's own size is used)")
    file: UploadField = Field(None, description="The OVA file, as a multipart/form-data part named 'file'")


class OvaUploadInputs(OvaElementUploadInputs):
    name: str = Field(description="OVA name on the cluster (usually identical to the OVA file name)")


def _upload(zk: ZK, storage: Storage, name: str, pool: str, upload: Any) -> JSONResponse:
    if not isinstance(upload, UploadFile):
        raise ArgumentError({"file": "an OVA file is required, sent as a multipart/form-data part named "
                                     "'file'"})
    return message(ova_mod.upload_ova(zk, storage, name, pool, upload.file))


@router.post("/ova", summary="Upload an OVA image to the cluster", description=DESCRIPTION,
             responses=responses(Message, 200, 400))
async def ova_upload(params: OvaUploadInputs = inputs(OvaUploadInputs), zk: ZK = Depends(get_zk),
                     storage: Storage = Depends(get_storage)) -> JSONResponse:
    return await run_in_threadpool(_upload, zk, storage, params.name, params.pool, params.file)


@router.post("/ova/{ova}", summary="Upload an OVA image {ova} to the cluster", description=DESCRIPTION,
             responses=responses(Message, 200, 400))
async def ova_upload_named(ova: str, params: OvaElementUploadInputs = inputs(OvaElementUploadInputs),
                           zk: ZK = Depends(get_zk), storage: Storage = Depends(get_storage)) -> JSONResponse:
    return await run_in_threadpool(_upload, zk, storage, ova, params.pool, params.file)
