"""Storage volumes: the list (per pool, searched), one volume with its snapshots, their actions,
and an image upload into a new volume.

Reads and writes are the functions behind the API's volume and snapshot routes
(pvc.api.routers.storage): `list_volumes`, `volume_item`, `list_snapshots`, `volume_users` (which
VMs use a volume), `add_volume`, `resize_volume`, `rename_volume`, `clone_volume`,
`remove_volume`, `add_snapshot`, `rollback_snapshot`, `remove_snapshot`.

An upload is two steps, both the API's: this page creates the volume (`add_volume`, a UI action
with the CSRF token), then the browser sends the file to the API's own upload route
(`POST /api/v1/storage/ceph/volume/<pool>/<volume>/upload`) with the session cookie, showing its
progress (static/js/storage-upload.js). That route streams the body to a spooled file (never held
in memory), is capped by `api.max_upload_size`, and checks the image before anything is written.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from pvc.api.common import get_storage
from pvc.api.web import live, render
from pvc.api.web.guard import UIUser, ui_router, ui_user
from pvc.api.web.pages.common import action_done, form_field, next_path, zk_of
from pvc.api.web.pages.storage import (
    checked,
    confirm_name,
    pool_path,
    quoted,
    redirect_with,
    text_input,
    volume_path,
    volume_rows,
)
from pvc.api.web.pages.vms import vm_path
from pvc.cluster import storage as st
from pvc.core import schema
from pvc.core.errors import InvalidInput, NotFound
from pvc.core.zk import ZK

router = ui_router()

MAX_SEARCH = 100
LIST_FRAGMENTS = {"volumes-table": "storage/_volumes.html"}
DETAIL_FRAGMENTS = {
    "volume-figures": "storage/_volume_figures.html",
    "volume-snapshots": "storage/_snapshots.html",
}
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,1024}")
API_UPLOAD = "/api/v1/storage/ceph/volume/{pool}/{volume}/upload"


@contextmanager
def named_in_inputs() -> Iterator[None]:
    """A pool named in the form that does not exist is bad input (400), as the API answers it."""
    try:
        yield
    except NotFound as exc:
        raise InvalidInput(exc.message) from None


# -- the list -----------------------------------------------------------------------------------------

def list_query(params: Mapping[str, str]) -> dict[str, str]:
    """{pool, q}: the pool shown ("" for all) and the search text (a part of the name, any case)."""
    return {"pool": str(params.get("pool") or "").strip()[:st.MAX_NAME],
            "q": str(params.get("q") or "").strip()[:MAX_SEARCH]}


def list_url(query: Mapping[str, str]) -> str:
    params = {k: v for k, v in query.items() if v}
    return "/storage/volumes" + ("?" + urllib.parse.urlencode(params) if params else "")


def token(query: Mapping[str, str]) -> str:
    """The view in one path segment (the live stream's channel is keyed by its path)."""
    encoded = urllib.parse.urlencode(sorted((k, v) for k, v in query.items() if v))
    return base64.urlsafe_b64encode(encoded.encode()).decode().rstrip("=") if encoded else "all"


def from_token(value: str) -> dict[str, str]:
    if value == "all":
        return list_query({})
    if not TOKEN_RE.fullmatch(value):
        raise InvalidInput("view: not a volume list view")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("view: not a volume list view") from None
    return list_query(dict(urllib.parse.parse_qsl(raw)))


def list_data(zk: ZK, query: Mapping[str, str]) -> dict[str, Any]:
    return {"query": query, **volume_rows(zk, query["pool"], query["q"]),
            "pool_names": [p["name"] for p in st.list_pools(zk)]}


@router.get("/storage/volumes")
def volume_list(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    query = list_query(request.query_params)
    context = {**list_data(zk_of(request), query), "formats": st.IMAGE_FORMATS,
               "upload_script": render.static_url("js/storage-upload.js")}
    return render.page(request, "storage/volumes.html", context, user=user, active="storage",
                       live=f"/events/storage/volume-list/{token(query)}")


@router.get("/events/storage/volume-list/{view}")
async def volume_list_events(request: Request, view: str, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    query = from_token(view)
    await run_in_threadpool(list_data, zk, query)          # an unknown pool is a 400 here, not a dead stream
    return live.stream(request, user, live.View(lambda: list_data(zk, query), LIST_FRAGMENTS))


# -- one volume ---------------------------------------------------------------------------------------

def size_text(stats: Mapping[str, Any]) -> str:
    """A size from `rbd info` (bytes) as PVC shows sizes ("20G")."""
    size = stats.get("size")
    return st.human_size(size) if isinstance(size, int) and size >= 0 else str(size or "")


def detail_data(zk: ZK, pool: str, volume: str) -> dict[str, Any]:
    """`GET /storage/ceph/volume/<pool>/<volume>` and its snapshots (`GET /storage/ceph/snapshot`)."""
    item = st.volume_item(zk, pool, volume)
    users = st.volume_users(zk).get(f"{pool}/{volume}", [])
    href = volume_path(pool, volume)
    snapshots = [{**s, "href": f"{href}/snapshots/{quoted(s['snapshot'])}", "size": size_text(s["stats"])}
                 for s in st.list_snapshots(zk, pool, volume)]
    return {"volume": item, "pool": pool, "name": volume, "href": href, "pool_href": pool_path(pool),
            "stats": item.get("stats") or {}, "snapshots": snapshots,
            "users": [{"name": e.record.name, "href": vm_path(e.record.name, e.record.uuid),
                       "state": e.record.state} for e in users]}


@router.get("/storage/volumes/{pool}/{volume}")
def volume_detail(request: Request, pool: str, volume: str, user: UIUser = Depends(ui_user)) -> Response:
    context = detail_data(zk_of(request), pool, volume)
    return render.page(request, "storage/volume.html", context, user=user, active="storage",
                       live=f"/events/storage/volumes/{quoted(pool, volume)}")


@router.get("/events/storage/volumes/{pool}/{volume}")
async def volume_detail_events(request: Request, pool: str, volume: str,
                               user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    await run_in_threadpool(st.volume_item, zk, pool, volume)     # 404 for a volume that is not there
    view = live.View(lambda: detail_data(zk, pool, volume), DETAIL_FRAGMENTS,
                     watch=(schema.volume(pool, volume),))
    return live.stream(request, user, view)


# -- volume actions -------------------------------------------------------------------------------------

@router.post("/storage/volumes/add")
async def volume_add(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    """`POST /api/v1/storage/ceph/volume`: refused beyond the pool's free space (80 % without force)."""
    pool = await text_input(request, "pool")
    name = await text_input(request, "volume")
    size = await text_input(request, "size", 32)
    force = await checked(request, "force")
    storage = await get_storage(request)
    with named_in_inputs():
        text = await run_in_threadpool(st.add_volume, zk_of(request), storage, pool, name, size, force)
    return action_done(request, user, text, await next_path(request, "/storage/volumes"))


@router.post("/storage/volumes/{pool}/{volume}/resize")
async def volume_resize(request: Request, pool: str, volume: str,
                  user: UIUser = Depends(ui_user)) -> Response:
    size = await text_input(request, "new_size", 32)
    force = await checked(request, "force")
    storage = await get_storage(request)
    text = await run_in_threadpool(st.resize_volume, zk_of(request), storage, pool, volume, size, force)
    return action_done(request, user, text, await next_path(request, volume_path(pool, volume)))


@router.post("/storage/volumes/{pool}/{volume}/rename")
async def volume_rename(request: Request, pool: str, volume: str,
                  user: UIUser = Depends(ui_user)) -> Response:
    """Rename (not while a VM uses it); the page moves to the new name."""
    new_name = await text_input(request, "new_name")
    storage = await get_storage(request)
    text = await run_in_threadpool(st.rename_volume, zk_of(request), storage, pool, volume, new_name)
    return redirect_with(request, user, text, volume_path(pool, new_name))


@router.post("/storage/volumes/{pool}/{volume}/clone")
async def volume_clone(request: Request, pool: str, volume: str,
                  user: UIUser = Depends(ui_user)) -> Response:
    new_name = await text_input(request, "new_volume")
    force = await checked(request, "force")
    storage = await get_storage(request)
    text = await run_in_threadpool(st.clone_volume, zk_of(request), storage, pool, volume, new_name, force)
    return action_done(request, user, text, await next_path(request, volume_path(pool, volume)))


@router.post("/storage/volumes/{pool}/{volume}/remove")
async def volume_remove(request: Request, pool: str, volume: str,
                  user: UIUser = Depends(ui_user)) -> Response:
    """Remove with its snapshots once its name was typed again; refused while a VM uses it."""
    zk = zk_of(request)
    await run_in_threadpool(st.get_volume, zk, pool, volume)
    await confirm_name(request, volume, "volume")
    storage = await get_storage(request)
    text = await run_in_threadpool(st.remove_volume, zk, storage, pool, volume)
    return redirect_with(request, user, text, pool_path(pool))


# -- snapshots ----------------------------------------------------------------------------------------

@router.post("/storage/volumes/{pool}/{volume}/snapshots/add")
async def snapshot_add(request: Request, pool: str, volume: str, user: UIUser = Depends(ui_user)) -> Response:
    name = await text_input(request, "snapshot")
    storage = await get_storage(request)
    text = await run_in_threadpool(st.add_snapshot, zk_of(request), storage, pool, volume, name)
    return action_done(request, user, text, await next_path(request, volume_path(pool, volume)))


@router.post("/storage/volumes/{pool}/{volume}/snapshots/{snapshot}/rollback")
async def snapshot_rollback(request: Request, pool: str, volume: str, snapshot: str,
                            user: UIUser = Depends(ui_user)) -> Response:
    """Roll the volume back (its VMs stopped, nobody has it open), as the API does."""
    storage = await get_storage(request)
    text = await run_in_threadpool(st.rollback_snapshot, zk_of(request), storage, pool, volume, snapshot)
    return action_done(request, user, text, await next_path(request, volume_path(pool, volume)))


@router.post("/storage/volumes/{pool}/{volume}/snapshots/{snapshot}/remove")
async def snapshot_remove(request: Request, pool: str, volume: str, snapshot: str,
                          user: UIUser = Depends(ui_user)) -> Response:
    storage = await get_storage(request)
    text = await run_in_threadpool(st.remove_snapshot, zk_of(request), storage, pool, volume, snapshot)
    return action_done(request, user, text, await next_path(request, volume_path(pool, volume)))


# -- upload -------------------------------------------------------------------------------------------

@router.post("/storage/upload/volume")
async def upload_volume(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    """Step one of an upload (the page's script): create the new volume, as `add_volume` does,
    and answer where the browser sends the file (the API's upload route) and the volume's page.
    A raw image's volume is exactly the file's size (the script sends it in bytes)."""
    image_format = await form_field(request, "image_format", st.IMAGE_FORMATS)
    pool = await text_input(request, "pool")
    name = await text_input(request, "volume")
    size = await text_input(request, "size", 32)
    force = await checked(request, "force")
    storage = await get_storage(request)
    with named_in_inputs():
        text = await run_in_threadpool(st.add_volume, zk_of(request), storage, pool, name, size, force)
    target = API_UPLOAD.format(pool=quoted(pool), volume=quoted(name))
    return JSONResponse({"message": text, "volume": volume_path(pool, name),
                         "upload": f"{target}?{urllib.parse.urlencode({'image_format': image_format})}"})
