"""Userdata and script routes: `/provisioner/userdata[/{userdata}]`, `/provisioner/script[/{script}]`.

Both kinds are named text documents (pvc.cluster.provisioner.documents) with the same six routes:
list, create (name in the inputs or in the path), get (a one-element array), update, remove. One
function declares them for a kind; only the words, the help of `data` and the shapes differ.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse
from pydantic import Field

from pvc.api.common import get_zk, ok, responses
from pvc.api.errors import message
from pvc.api.models import Doc, Message
from pvc.api.params import Inputs, inputs
from pvc.api.routers.provisioner.common import NOT_FOUND, LimitInputs, listing
from pvc.cluster import provisioner as prov
from pvc.core.zk import ZK

router = APIRouter()

USERDATA_HELP = ("Raw userdata document: #cloud-config (a YAML mapping), a script (#!), another cloud-init "
                 "format, or a MIME document (e.g. multipart/mixed)")
SCRIPT_HELP = "Raw Python script document; it must define class VMBuilderScript(VMBuilder)"


# -- response shapes ---------------------------------------------------------------------------------

class Userdata(Doc):
    id: int
    name: str
    userdata: str


class Script(Doc):
    id: int
    name: str
    script: str


# -- inputs: each kind describes `data` (and `name`) in its own words ----------------------------------

class DocumentInputs(Inputs):
    data: str


class DocumentAddInputs(DocumentInputs):
    name: str


class UserdataElementInputs(DocumentInputs):
    data: str = Field(description=USERDATA_HELP)


class UserdataAddInputs(DocumentAddInputs):
    data: str = Field(description=USERDATA_HELP)
    name: str = Field(description="Userdata name")


class ScriptElementInputs(DocumentInputs):
    data: str = Field(description=SCRIPT_HELP)


class ScriptAddInputs(DocumentAddInputs):
    data: str = Field(description=SCRIPT_HELP)
    name: str = Field(description="Script name")


# -- routes ------------------------------------------------------------------------------------------

def document_routes(docs: prov.TextDocuments, shape: type[Doc], element_inputs: type[DocumentInputs],
                    add_inputs: type[DocumentAddInputs], what: str, plural: str, remove_note: str) -> None:
    """Declare the routes of `docs` (its kind is the path and the path parameter's name): `what`
    and `plural` name the documents in summaries and in the 404 of an empty list."""
    kind = docs.kind
    one = f"/{kind}/{{{kind}}}"

    @router.get(f"/{kind}", name=f"{kind}_list", summary=f"Return a list of {plural}",
                responses=responses(list[shape], 200, *NOT_FOUND))
    def list_(params: LimitInputs = inputs(LimitInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
        return listing(docs.list_all(zk, params.limit), plural)

    @router.post(f"/{kind}", name=f"{kind}_add", summary=f"Create a new {what}",
                 responses=responses(Message, 200))
    def add(params: DocumentAddInputs = inputs(add_inputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
        return message(docs.add(zk, params.name, params.data))

    @router.get(one, name=f"{kind}_get", summary=f"Return information about {what} {{{kind}}} (a one-element "
                                                 f"array)",
                responses=responses(list[shape], 200, *NOT_FOUND))
    def get(name: str = Path(alias=kind), zk: ZK = Depends(get_zk)) -> JSONResponse:
        return ok([docs.item(zk, name)])

    @router.post(one, name=f"{kind}_add_named", summary=f"Create a new {what} {{{kind}}}",
                 responses=responses(Message, 200))
    def add_named(name: str = Path(alias=kind), params: DocumentInputs = inputs(element_inputs),
                  zk: ZK = Depends(get_zk)) -> JSONResponse:
        return message(docs.add(zk, name, params.data))

    @router.put(one, name=f"{kind}_modify", summary=f"Update {what} {{{kind}}}",
                responses=responses(Message, 200, *NOT_FOUND))
    def modify(name: str = Path(alias=kind), params: DocumentInputs = inputs(element_inputs),
               zk: ZK = Depends(get_zk)) -> JSONResponse:
        return message(docs.modify(zk, name, params.data))

    @router.delete(one, name=f"{kind}_remove", summary=f"Remove {what} {{{kind}}} ({remove_note})",
                   responses=responses(Message, 200, 400, *NOT_FOUND))
    def remove(name: str = Path(alias=kind), zk: ZK = Depends(get_zk)) -> JSONResponse:
        return message(docs.remove(zk, name))


document_routes(prov.USERDATA, Userdata, UserdataElementInputs, UserdataAddInputs, "userdata document",
                "userdata documents", "not 'empty', nor while a profile uses it")
document_routes(prov.SCRIPTS, Script, ScriptElementInputs, ScriptAddInputs, "script", "scripts",
                "not while a profile uses it")
