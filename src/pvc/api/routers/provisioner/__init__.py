"""Provisioner data routes (pvc-facts §8.3 "Provisioner"): templates, userdata, scripts, profiles, OVAs.

Decisions and writes live in pvc.cluster.provisioner; these routes parse inputs, call it and shape
answers as PVC clients expect: element GETs of templates, userdata, scripts, profiles and OVAs are
one-element arrays, those of a template's network or disk the object itself; an empty list is a
404 with upstream's message. Creating VMs (`POST /provisioner/create`), job status and OVA upload
are in their own routers (provisioner_jobs, provisioner_ova).

One module per document kind, as pvc.cluster.provisioner: templates (system, network, storage),
documents (userdata, scripts), profiles (and OVA images); common holds what they share. Their
routes are relative to this router's prefix, /provisioner, and share its authentication.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from pvc.api.auth import require_auth
from pvc.api.common import responses
from pvc.api.errors import HTTP_MESSAGES
from pvc.api.models import Message
from pvc.api.routers.provisioner import documents, profiles, templates
from pvc.core.errors import NotFound

router = APIRouter(prefix="/provisioner", tags=["provisioner"], dependencies=[Depends(require_auth)])


@router.get("", summary="Provisioner root: nothing here (404, as upstream)",
            responses=responses(Message, 404))
def provisioner_root() -> JSONResponse:
    raise NotFound(HTTP_MESSAGES[404])


for _part in (templates, documents, profiles):
    router.include_router(_part.router)
