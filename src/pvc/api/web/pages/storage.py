"""Storage: the Ceph status, OSDs (set in/out) and pools (add, remove), followed live.

Everything reads and writes through the functions behind the API's storage routes
(pvc.api.routers.storage): the Ceph status is what the primary stores in `/ceph/status` (read as
`storage.ceph_report` reads it for `GET /storage/ceph/status`, the structured parts beside the
text), the capacity and OSD counts are `state.storage_summary` (as `GET /status`), OSDs are
`list_osds`, pools `list_pools`; actions are `set_osd_in`, `add_pool` and `remove_pool` with the
API's Ceph adapter (`get_storage`). Volumes, snapshots and uploads are in pages/storage_volumes.py.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from pvc.api.common import get_storage
from pvc.api.web import flashes, live, render
from pvc.api.web.guard import UIUser, ui_router, ui_user
from pvc.api.web.pages.common import action_done, form_field, next_path, zk_of
from pvc.api.web.pages.vms import vm_path
from pvc.api.web.uierrors import is_htmx
from pvc.cluster import state as state_mod
from pvc.cluster import storage as st
from pvc.cluster.storage.common import read_doc
from pvc.core import schema
from pvc.core.errors import InvalidInput
from pvc.core.zk import ZK

router = ui_router()

OVERVIEW_FRAGMENTS = {
    "storage-status": "storage/_status.html",
    "storage-osds": "storage/_osds.html",
    "storage-pools": "storage/_pools.html",
}
POOL_FRAGMENTS = {"pool-figures": "storage/_pool_figures.html", "volumes-table": "storage/_volumes.html"}
OSD_STATES = ("in", "out")
FLAG_ACTIONS = ("set", "unset")
HEALTH_KINDS = {"HEALTH_OK": "ok", "HEALTH_WARN": "warn", "HEALTH_ERR": "bad"}
MAX_VOLUME_ROWS = 500   # a volume list shows this many; a search narrows it
STALE_AFTER = 60.0      # seconds: the primary's cluster checks also stop trusting an older report


def quoted(*parts: str) -> str:
    """Path segments of a name that is user-chosen (escaped for a URL, never for HTML here)."""
    return "/".join(urllib.parse.quote(p, safe="") for p in parts)


def pool_path(pool: str) -> str:
    return f"/storage/pools/{quoted(pool)}"


def volume_path(pool: str, volume: str) -> str:
    return f"/storage/volumes/{quoted(pool, volume)}"


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _age(doc: Any) -> int | None:
    """Seconds since the report, when it is older than STALE_AFTER (else None)."""
    try:
        age = time.time() - float(doc.get("time"))
    except (AttributeError, TypeError, ValueError):
        return None
    return int(age) if age > STALE_AFTER else None


def ceph_status(zk: ZK) -> dict[str, Any]:
    """The Ceph status the primary last stored (the document `ceph_report` reads for the API's
    `GET /storage/ceph/status`): health with its checks, daemons, capacity and client I/O, and
    the `ceph status` text as the API returns it. `reported` is False before any report."""
    doc = read_doc(zk, schema.CEPH_STATUS)
    try:
        text = st.ceph_report(zk, "status")["ceph_data"]
    except st.StorageDown as exc:
        return {"reported": False, "message": exc.message}
    try:
        util_text = st.ceph_report(zk, "utilization")["ceph_data"]
    except st.StorageDown:
        util_text = ""
    status = doc.get("status") if isinstance(doc, dict) and isinstance(doc.get("status"), dict) else {}
    health = doc.get("health") if isinstance(doc, dict) and isinstance(doc.get("health"), dict) else {}
    if not health and isinstance(status.get("health"), dict):
        health = status["health"]
    word = str(health.get("status") or "unknown")
    checks = []
    for name, check in sorted((health.get("checks") or {}).items()):
        check = check if isinstance(check, dict) else {}
        severity = str(check.get("severity") or word)
        summary = check.get("summary") if isinstance(check.get("summary"), dict) else {}
        checks.append({"name": str(name), "severity": severity, "kind": HEALTH_KINDS.get(severity, "warn"),
                       "message": str(summary.get("message") or ""), "muted": bool(check.get("muted"))})
    monmap = status.get("monmap") if isinstance(status.get("monmap"), dict) else {}
    mgrmap = status.get("mgrmap") if isinstance(status.get("mgrmap"), dict) else {}
    osdmap = status.get("osdmap") if isinstance(status.get("osdmap"), dict) else {}
    if isinstance(osdmap.get("osdmap"), dict):        # older Ceph nests it once more
        osdmap = osdmap["osdmap"]
    pgmap = status.get("pgmap") if isinstance(status.get("pgmap"), dict) else {}
    quorum = [str(q) for q in status.get("quorum_names") or []]
    io_keys = ("read_bytes_sec", "write_bytes_sec", "read_op_per_sec", "write_op_per_sec")
    return {
        "reported": True, "health": word, "kind": HEALTH_KINDS.get(word, "idle"), "checks": checks,
        "node": doc.get("node", "") if isinstance(doc, dict) else "",
        "time": doc.get("time") if isinstance(doc, dict) else None, "age": _age(doc),
        "mons": _int(monmap.get("num_mons")) or len(quorum), "quorum": quorum,
        "mgr_available": bool(mgrmap.get("available")),
        "mgrs": (1 if mgrmap.get("available") else 0) + _int(mgrmap.get("num_standbys")),
        "osds": _int(osdmap.get("num_osds")), "osds_up": _int(osdmap.get("num_up_osds")),
        "osds_in": _int(osdmap.get("num_in_osds")),
        "pgs": _int(pgmap.get("num_pgs")), "objects": _int(pgmap.get("num_objects")),
        "pg_states": [(str(s.get("state_name")), _int(s.get("count")))
                      for s in pgmap.get("pgs_by_state") or [] if isinstance(s, dict)],
        "bytes_used": _int(pgmap.get("bytes_used")), "bytes_avail": _int(pgmap.get("bytes_avail")),
        "bytes_total": _int(pgmap.get("bytes_total")),
        "io": {key: _int(pgmap.get(key)) for key in io_keys},
        "text": text, "util_text": util_text,
    }


def osd_row(item: Mapping[str, Any]) -> dict[str, Any]:
    stats = item.get("stats") or {}

    def flag(key: str) -> bool:
        return stats.get(key) in (1, True, "1", "up", "in")

    return {**item, "up": "up" if flag("up") else "down", "in": "in" if flag("in") else "out",
            "has_stats": bool(stats), "weight": stats.get("weight", ""),
            "utilization": stats.get("utilization"),
            "kb": stats.get("kb", 0), "kb_used": stats.get("kb_used", 0), "pgs": stats.get("pgs", ""),
            "device_class": stats.get("class", ""),
            "rd_data": stats.get("rd_data", 0), "wr_data": stats.get("wr_data", 0),
            "rd_ops": stats.get("rd_ops", 0), "wr_ops": stats.get("wr_ops", 0)}


def pool_row(item: Mapping[str, Any]) -> dict[str, Any]:
    stats = item.get("stats") or {}
    stored, free = _int(stats.get("stored_bytes")), _int(stats.get("free_bytes"))
    return {**item, "href": pool_path(str(item["name"])), "stored": stored, "free": free,
            "used": _int(stats.get("used_bytes")), "objects": _int(stats.get("num_objects")),
            "share": render.ratio(stored, stored + free), "has_stats": bool(stats)}


def volume_rows(zk: ZK, pool: str | None, q: str = "") -> dict[str, Any]:
    """The API's volume list (of one pool; names containing `q` in any case), each with the VMs
    whose definition uses it: {"volumes": the first MAX_VOLUME_ROWS, "volumes_total": all found}."""
    needle = q.lower()
    found = [item for item in st.list_volumes(zk, pool or None)
             if not needle or needle in str(item["name"]).lower()]
    users = st.volume_users(zk) if found else {}
    rows = []
    for item in found[:MAX_VOLUME_ROWS]:
        stats = item.get("stats") or {}
        ref = f"{item['pool']}/{item['name']}"
        rows.append({**item, "href": volume_path(item["pool"], item["name"]),
                     "pool_href": pool_path(item["pool"]), "size": stats.get("size", ""),
                     "snapshots": stats.get("snapshot_count", ""),
                     "users": [{"name": e.record.name, "href": vm_path(e.record.name, e.record.uuid)}
                               for e in users.get(ref, [])]})
    return {"volumes": rows, "volumes_total": len(found)}


def overview_data(zk: ZK) -> dict[str, Any]:
    summary = state_mod.storage_summary(zk)
    return {"ceph": ceph_status(zk), "summary": summary,
            "osds": [osd_row(o) for o in st.list_osds(zk)],
            "pools": [pool_row(p) for p in st.list_pools(zk)]}


def pool_data(zk: ZK, pool: str) -> dict[str, Any]:
    return {"pool": pool_row(st.pool_item(zk, pool)), **volume_rows(zk, pool),
            "query": {"pool": pool, "q": ""}}


# -- pages --------------------------------------------------------------------------------------------

@router.get("/storage")
def storage_overview(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    context = {**overview_data(zk_of(request)), "tiers": st.TIERS, "max_copies": st.MAX_COPIES,
               "flags": st.OSD_FLAGS}
    return render.page(request, "storage/overview.html", context, user=user, active="storage",
                       live="/events/storage")


@router.get("/events/storage")
async def storage_overview_events(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    view = live.View(lambda: overview_data(zk), OVERVIEW_FRAGMENTS,
                     watch=(schema.CEPH_STATUS, schema.CEPH_POOLS))
    return live.stream(request, user, view)


@router.get("/storage/pools/{pool}")
def pool_detail(request: Request, pool: str, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    context = {**pool_data(zk, pool), "href": pool_path(pool)}
    return render.page(request, "storage/pool.html", context, user=user, active="storage",
                       live=f"/events/storage/pools/{quoted(pool)}")


@router.get("/events/storage/pools/{pool}")
async def pool_detail_events(request: Request, pool: str, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    await run_in_threadpool(st.pool_item, zk, pool)          # 404 for a pool that is not there
    view = live.View(lambda: pool_data(zk, pool), POOL_FRAGMENTS, watch=(schema.pool(pool),))
    return live.stream(request, user, view)


# -- actions --------------------------------------------------------------------------------------------

def redirect_with(request: Request, user: UIUser, text: str, target: str) -> Response:
    """Go to another page with the message there (htmx: HX-Redirect; a plain form: 303)."""
    flashes.put(request, user, "ok", text)
    if is_htmx(request):
        return HTMLResponse("", headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


async def text_input(request: Request, name: str, limit: int = 255) -> str:
    """An optional text field, stripped ("" when absent); longer than `limit` is refused."""
    form = await request.form()
    value = form.get(name)
    text = value.strip() if isinstance(value, str) else ""
    if len(text) > limit:
        raise InvalidInput(f"{name}: longer than {limit} characters")
    return text


async def whole_number(request: Request, name: str) -> int:
    text = await text_input(request, name, 32)
    if not text:
        raise InvalidInput(f"{name}: required")
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(f"{name}: '{text}' is not a whole number") from None


async def checked(request: Request, name: str) -> bool:
    form = await request.form()
    return bool(form.get(name))


async def confirm_name(request: Request, expected: str, what: str) -> None:
    """Refuse unless the object's name was typed again (a confirmation that needs no script)."""
    typed = await text_input(request, "confirm_name")
    if typed != expected:
        raise InvalidInput(f'Refused to remove {what} "{expected}": type its name to confirm'
                           + (f' (got "{typed}").' if typed else "."))


@router.post("/storage/osds/{osd}/state")
async def osd_set_state(request: Request, osd: str, user: UIUser = Depends(ui_user)) -> Response:
    """In or out, as `POST /api/v1/storage/ceph/osd/<id>/state`."""
    wanted = await form_field(request, "state", OSD_STATES)
    storage = await get_storage(request)
    text = await run_in_threadpool(st.set_osd_in, zk_of(request), storage, osd, wanted == "in")
    return action_done(request, user, text, await next_path(request, "/storage"))


@router.post("/storage/flags")
async def osd_flag(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    """Set or unset a cluster-wide OSD flag (noout, ...), as `POST /api/v1/storage/ceph/option`."""
    option = await form_field(request, "option", st.OSD_FLAGS)
    action = await form_field(request, "action", FLAG_ACTIONS)
    storage = await get_storage(request)
    text = await run_in_threadpool(st.set_flag, storage, option, action == "set")
    return action_done(request, user, text, await next_path(request, "/storage"))


@router.post("/storage/pools/add")
async def pool_add(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    """A replicated RBD pool, as `POST /api/v1/storage/ceph/pool`: the same refusals (a PG count
    that is not a power of two, more copies than failure domains unless forced, ...)."""
    name = await text_input(request, "pool")
    pgs = await whole_number(request, "pgs")
    copies = await whole_number(request, "copies")
    mincopies = await whole_number(request, "mincopies")
    tier = await form_field(request, "tier", st.TIERS, default="default")
    force = await checked(request, "force")
    zk = zk_of(request)
    storage = await get_storage(request)
    text = await run_in_threadpool(st.add_pool, zk, storage, name, pgs,
                                   f"copies={copies},mincopies={mincopies}", tier, force)
    return action_done(request, user, text, await next_path(request, "/storage"))


@router.post("/storage/pools/{pool}/remove")
async def pool_remove(request: Request, pool: str, user: UIUser = Depends(ui_user)) -> Response:
    """Remove a pool with all its volumes (`DELETE /api/v1/storage/ceph/pool/<pool>`) once its
    name was typed again; refused while VMs use its volumes."""
    zk = zk_of(request)
    doc = await run_in_threadpool(st.get_pool, zk, pool)
    await confirm_name(request, str(doc.get("name", pool)), "pool")
    storage = await get_storage(request)
    text = await run_in_threadpool(st.remove_pool, zk, storage, pool)
    return redirect_with(request, user, text, "/storage")
