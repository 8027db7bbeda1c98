"""Send, mirror and receive routes (upstream PVC 1.0.3's surface, issue #15).

Sending side: `POST /vm/<vm>/snapshot/send`, `/mirror/create`, `/mirror/promote` validate the
VM, snapshot and destination synchronously, keep the destination (with its key sealed) in
/transfers and queue a task whose arguments carry only the transfer id (pvc.cluster.transfers).
Task names: vm.send_snapshot, vm.create_mirror, vm.promote_mirror.

Receiving side (synchronous here, as upstream): `POST /vm/<vm>/snapshot/receive/config`,
`POST|PUT|PATCH /vm/<vm>/snapshot/receive/block`, byte-compatible with an upstream sender, plus
our extension `GET /vm/<vm>/snapshot/receive/status` (resume and checksums; pvc.cluster.receive).
Block bodies are read as they arrive (a raw stream or multipart batches), never spooled whole.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pvc.adapters.ceph import Storage
from pvc.api.auth import require_auth
from pvc.api.common import get_settings, get_storage, get_zk, ok, responses, task_accepted
from pvc.api.errors import message
from pvc.api.models import Message, TaskAccepted
from pvc.api.params import Bool, Inputs, inputs
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import receive, transfers
from pvc.cluster import tasks as tasks_mod
from pvc.core import blockstream as bs
from pvc.core.config import Settings
from pvc.core.errors import InvalidInput
from pvc.core.zk import ZK

router = APIRouter(prefix="/vm", tags=["vm"], dependencies=[Depends(require_auth)])

RECEIVE_CHUNK = 4 << 20          # bytes gathered before a write is handed to a worker thread


class DestinationInputs(Inputs):
    destination_api_uri: str = Field(description="The destination cluster's API base URI, e.g. "
                                                 "https://pvc2.example:7370/api/v1")
    destination_api_key: str = Field(description="The destination cluster's API key (give it as a form "
                                                 "field; it is sealed and never stored in the task)")
    destination_api_verify_ssl: Bool = Field(True, description="Check the destination's TLS certificate")
    destination_storage_pool: str | None = Field(None, description="Write the volumes into this pool on the "
                                                                   "destination (the XML follows)")
    destination_api_ca: str | None = Field(None, description="Our extension: the CA (PEM text) the "
                                                             "destination's TLS certificate must be signed "
                                                             "by, instead of the system's CAs")

    def destination(self) -> transfers.Destination:
        return transfers.Destination(uri=self.destination_api_uri, key=self.destination_api_key,
                                     verify_ssl=self.destination_api_verify_ssl,
                                     pool=self.destination_storage_pool or None,
                                     ca=self.destination_api_ca or None)


class SendInputs(DestinationInputs):
    snapshot_name: str = Field(description="The snapshot to send")
    incremental_parent: str | None = Field(None, description="Send only the changes since this snapshot "
                                                             "(which the destination must have)")


class PromoteInputs(DestinationInputs):
    remove_on_source: Bool = Field(False, description="Remove the VM from this cluster afterwards "
                                                      "(a move); else it becomes a mirror here")
    dry_run: Bool = Field(False, description="Check destination, version, pool and space; change nothing")


def _queued(zk: ZK, task: Any) -> JSONResponse:
    return task_accepted(tasks_mod.accepted(task, nodes_mod.primary_node(zk)))


@router.post("/{vm}/snapshot/send", summary="Send a snapshot of VM {vm} to another PVC cluster",
             responses=responses(TaskAccepted, 202, 404))
def vm_snapshot_send(vm: str, params: SendInputs = inputs(SendInputs), zk: ZK = Depends(get_zk),
                     settings: Settings = Depends(get_settings)) -> JSONResponse:
    task = transfers.submit_send(zk, settings, vm, params.snapshot_name, params.destination(),
                                 params.incremental_parent or None)
    return _queued(zk, task)


@router.post("/{vm}/mirror/create", summary="Snapshot VM {vm} and send it to another PVC cluster as a mirror",
             responses=responses(TaskAccepted, 202, 404))
def vm_mirror_create(vm: str, params: DestinationInputs = inputs(DestinationInputs), zk: ZK = Depends(get_zk),
                     settings: Settings = Depends(get_settings)) -> JSONResponse:
    return _queued(zk, transfers.submit_mirror(zk, settings, vm, params.destination(), promote=False))


@router.post("/{vm}/mirror/promote", summary="Move VM {vm} to its mirror on another PVC cluster",
             responses=responses(TaskAccepted, 202, 404))
def vm_mirror_promote(vm: str, params: PromoteInputs = inputs(PromoteInputs), zk: ZK = Depends(get_zk),
                      settings: Settings = Depends(get_settings)) -> JSONResponse:
    return _queued(zk, transfers.submit_mirror(zk, settings, vm, params.destination(), promote=True,
                                               remove_on_source=params.remove_on_source,
                                               dry_run=params.dry_run))


# -- receiving ------------------------------------------------------------------------------------------

class _Query(BaseModel):
    """Receive parameters come in the query string only (the body is data)."""

    model_config = ConfigDict(extra="ignore")


class ConfigQuery(_Query):
    snapshot: str = Field(description="The snapshot being received")
    source_snapshot: str | None = Field(None, description="Its incremental parent (which this cluster has)")


class FinishQuery(_Query):
    pool: str = Field(description="The volume's pool on this cluster")
    volume: str = Field(description="The volume")
    snapshot: str = Field(description="The snapshot being received")


class BlockQuery(FinishQuery):
    size: int | None = Field(None, ge=1, description="The volume's size in bytes (a full volume)")
    source_snapshot: str | None = Field(None, description="The incremental parent (a batch of changed "
                                                          "extents)")
    batch: int | None = Field(None, ge=0, description="Our extension: the batch's sequence number "
                                                      "(order check, resume)")


class StatusQuery(_Query):
    snapshot: str = Field(description="The snapshot")


class ReceiveStatus(BaseModel):
    """GET receive/status: what this cluster holds of a snapshot being received."""

    extensions: list[str]
    vm: str
    snapshot: str
    state: Literal["absent", "pending", "present"]
    volumes: dict[str, dict[str, Any]] = Field(description="Per pool/volume: mode, parent, acknowledged "
                                                           "batches, digest chain, bytes, complete")


def _doc(model: type[_Query], body: dict[str, Any] | None = None) -> dict[str, Any]:
    """The route's OpenAPI parameters (its query model) and body: these routes read both
    themselves (the body is data), so FastAPI cannot describe them."""
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        clean = {k: v for k, v in prop.items() if k not in ("title", "description", "default")}
        if "anyOf" in clean:            # Optional[X]: X (the parameter is simply left out)
            clean = next(p for p in clean.pop("anyOf") if p.get("type") != "null")
        params.append({"name": name, "in": "query", "required": name in required, "schema": clean,
                       "description": prop.get("description", "")})
    extra: dict[str, Any] = {"parameters": params}
    if body is not None:
        extra["requestBody"] = body
    return extra


BINARY = {"type": "string", "format": "binary"}
CONFIG_BODY = {"required": True, "description": "The sending VM's details (its GET /vm item with the "
                                                "snapshots' xml_diff_lines)",
               "content": {"application/json": {"schema": {"type": "object"}}}}
FULL_BODY = {"required": False, "description": "The whole volume, written at increasing offsets (empty: "
                                               "only create the image)",
             "content": {"application/octet-stream": {"schema": BINARY}}}
BATCH_BODY = {"required": True, "description": "Parts object_<i> (8-byte offset, 8-byte length, data) "
                                               "and, our extension, discard_<i> (offset, length)",
              "content": {"multipart/form-data": {"schema": {"type": "object",
                                                             "additionalProperties": BINARY}}}}


def _query(model: type[_Query], request: Request) -> Any:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(problems) from None


@router.post("/{vm}/snapshot/receive/config", summary="Receive the configuration of a snapshot of VM {vm}",
             responses=responses(Message, 200, 400, 404), openapi_extra=_doc(ConfigQuery, CONFIG_BODY))
async def vm_receive_config(vm: str, request: Request, zk: ZK = Depends(get_zk),
                            storage: Storage = Depends(get_storage),
                            settings: Settings = Depends(get_settings)) -> JSONResponse:
    query = _query(ConfigQuery, request)
    try:
        detail = await request.json()
    except ValueError:
        raise InvalidInput("the request body must be the sending VM's details as JSON") from None
    text = await run_in_threadpool(receive.receive_config, zk, storage, settings, vm, query.snapshot,
                                   query.source_snapshot or None, detail)
    return message(text)


@router.post("/{vm}/snapshot/receive/block", summary="Receive a whole volume of a snapshot of VM {vm}",
             responses=responses(Message, 200, 400, 404), openapi_extra=_doc(BlockQuery, FULL_BODY))
async def vm_receive_full(vm: str, request: Request, zk: ZK = Depends(get_zk),
                          storage: Storage = Depends(get_storage)) -> JSONResponse:
    query = _query(BlockQuery, request)
    if not query.size:
        raise InvalidInput("size: required for a full volume")
    writer = await run_in_threadpool(receive.FullReceiver, zk, storage, vm, query.pool, query.volume,
                                     query.snapshot, query.size)
    try:
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) >= RECEIVE_CHUNK:
                data, buf = bytes(buf), bytearray()
                await run_in_threadpool(writer.feed, data)
        if buf:
            await run_in_threadpool(writer.feed, bytes(buf))
        text = await run_in_threadpool(writer.finish)
    finally:
        await run_in_threadpool(writer.close)
    return message(text)


@router.put("/{vm}/snapshot/receive/block", summary="Receive a batch of extents of a snapshot of VM {vm}",
            responses=responses(Message, 200, 400, 404), openapi_extra=_doc(BlockQuery, BATCH_BODY))
async def vm_receive_batch(vm: str, request: Request, zk: ZK = Depends(get_zk),
                           storage: Storage = Depends(get_storage)) -> JSONResponse:
    query = _query(BlockQuery, request)
    try:
        reader = bs.MultipartReader(bs.boundary_of(request.headers.get("content-type", "")))
    except bs.StreamError as exc:
        raise InvalidInput(str(exc)) from None
    writer = await run_in_threadpool(receive.BatchReceiver, zk, storage, vm, query.pool, query.volume,
                                     query.snapshot, query.source_snapshot or None, query.size, query.batch)

    def parts(found: list[tuple[str, bytes]]) -> None:
        for name, body in found:
            writer.part(name, body)

    try:
        try:
            async for chunk in request.stream():
                found = reader.feed(chunk)
                if found:
                    await run_in_threadpool(parts, found)
            reader.finish()
        except bs.StreamError as exc:
            raise InvalidInput(str(exc)) from None
        text = await run_in_threadpool(writer.finish)
    finally:
        await run_in_threadpool(writer.close)
    return message(text)


@router.patch("/{vm}/snapshot/receive/block", summary="Finish a volume of a received snapshot of VM {vm}",
              responses=responses(Message, 200, 400, 404), openapi_extra=_doc(FinishQuery))
def vm_receive_snapshot(vm: str, request: Request, zk: ZK = Depends(get_zk),
                        storage: Storage = Depends(get_storage)) -> JSONResponse:
    query = _query(FinishQuery, request)
    return message(receive.receive_snapshot(zk, storage, vm, query.pool, query.volume, query.snapshot))


@router.get("/{vm}/snapshot/receive/status", summary="What this cluster holds of a snapshot being received "
                                                      "(our extension: resume and checksums)",
            responses=responses(ReceiveStatus, 200, 400), openapi_extra=_doc(StatusQuery))
def vm_receive_status(vm: str, request: Request, zk: ZK = Depends(get_zk)) -> JSONResponse:
    query = _query(StatusQuery, request)
    return ok(receive.receive_status(zk, vm, query.snapshot))
