"""What every router shares: the ZooKeeper session and settings, JSON answers, response docs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from pvc.adapters.ceph import Storage, storage_from_settings
from pvc.api.models import Message
from pvc.core.config import Settings
from pvc.core.errors import InvalidInput
from pvc.core.zk import ZK

PREFIX = "/api/v1"

DESCRIPTIONS = {
    200: "OK",
    202: "Accepted: a task was queued; follow the Location header",
    204: "No content",
    302: "Authentication is disabled; redirect to the API root",
    400: "Bad request: the message names the field and what is wrong; nothing was changed",
    401: "Authentication required or failed",
    404: "Not found",
    412: "Precondition failed: If-Match names a version the object no longer has; nothing was changed",
    503: "ZooKeeper is unavailable",
}
STORAGE_503 = "ZooKeeper or Ceph is unavailable (or Ceph is not configured on this node)"
_STORAGE_LOCK = threading.Lock()


async def get_zk(request: Request) -> ZK:
    """Dependency: the daemon's ZooKeeper session (routes using it may answer 503)."""
    return request.app.state.zk


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_storage(request: Request) -> Storage:
    """Dependency: the Ceph storage adapter (routes using it may answer 503).

    Created on first use from settings.storage; CephStorage connects lazily, so a node without
    Ceph serves every other route, and storage routes answer 503 with the reason only when they
    actually need Ceph (after validating their input and ZooKeeper state). Tests inject a
    FakeStorage through create_app(storage=...).
    """
    state = request.app.state
    storage: Storage | None = getattr(state, "storage", None)
    if storage is None:
        with _STORAGE_LOCK:
            storage = getattr(state, "storage", None)
            if storage is None:
                storage = state.storage = storage_from_settings(state.settings)
    return storage


def ok(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    """Answer JSON directly: the data is already in PVC's shape, so skip FastAPI's re-encoding."""
    return JSONResponse(data, status_code=status, headers=headers)


def task_accepted(body: dict[str, str]) -> JSONResponse:
    """202 + Location, as PVC clients expect for a queued task."""
    return ok(body, 202, headers={"Location": f"{PREFIX}/tasks/{body['task_id']}"})


def responses(ok_model: Any = Message, ok_status: int = 200, *errors: int,
              ok_description: str | None = None, etag: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses: the success shape plus the error statuses this route itself returns.

    400 for routes with inputs, 401 for authenticated routes and 503 for routes that use
    ZooKeeper are added by the OpenAPI hook in app.py, from the route's dependencies.
    """
    out: dict[int | str, dict[str, Any]] = {}
    success: dict[str, Any] = {"description": ok_description or DESCRIPTIONS.get(ok_status, "OK")}
    if isinstance(ok_model, dict):
        success["content"] = {"application/json": {"schema": ok_model}}
    elif ok_model is not None:
        success["model"] = ok_model
    if ok_status == 202:
        success["headers"] = {"Location": {"description": "The task's status URL, /api/v1/tasks/<id>",
                                           "schema": {"type": "string"}}}
    if etag:
        success["headers"] = {"ETag": {"description": "The object's version, for If-Match on its edits",
                                       "schema": {"type": "string"}}}
    out[ok_status] = success
    for code in errors:
        out[code] = {"description": DESCRIPTIONS.get(code, "Error"), "model": Message}
    return out


WAIT_TIMEOUT = 600.0      # upstream leaves `wait=true` unbounded; a node that never acts must not hang us
WAIT_INTERVAL = 0.25


async def wait_async(request: Request, predicate: Callable[[], bool], timeout: float = WAIT_TIMEOUT,
                     interval: float = WAIT_INTERVAL) -> bool:
    """Poll predicate (run in the thread pool) until it holds, the client goes away or timeout
    passes; True when it held. A waiting request holds no worker thread while it sleeps."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not await request.is_disconnected():
        if await run_in_threadpool(predicate):
            return True
        await asyncio.sleep(interval)
    return False


def etag(version: int | None) -> dict[str, str]:
    """The ETag header of an object read at `version` (its znode version), for If-Match edits."""
    return {} if version is None else {"ETag": f'"{version}"'}


IfMatch = Annotated[str | None, Header(
    alias="If-Match", description="Only apply the edit if the object is still at this version (its "
                                  "ETag); otherwise 412 and nothing changes")]


def if_match(value: str | None) -> int | None:
    """The version an edit is based on, from If-Match; None when absent or `*` (edit whatever is
    stored, as upstream clients do). A value that is no version of ours is a 400."""
    if value is None or value.strip() in ("", "*"):
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise InvalidInput(f"If-Match: '{value[:40]}' is not an ETag of this API (a quoted version "
                           f'number such as "3", as sent in the ETag header)')
    return int(text)
