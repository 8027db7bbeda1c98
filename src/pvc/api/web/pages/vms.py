"""VMs: the list (server-side paging, search, filters, live states), one VM's detail (followed live),
define from XML with the refusal shown beside the field, power and placement actions, and remove.

Everything reads and writes through the functions behind the API's VM routes (pvc.api.routers.vms):
the list is `vms.list_vms` over the API's watch caches (the same sorted snapshot `GET /api/v1/vm`
serves at 10,000 VMs), a VM is `vms.get_entry` + `vms.item_json` (what `GET /api/v1/vm/<vm>`
returns), and actions are `set_state`, `change_node`, `define`, `undefine` and
`vm_storage.remove_with_disks`. Configuration edits (vCPUs, memory, tags, metadata, NICs, volumes)
are in pages/vm_config.py.

A list page's live stream depends on its filters and page, while `live.stream` keys its shared
channel on the URL path: so the list's stream carries its view in the path
(`/events/vms/list/<view>`, the canonical query base64url-encoded), one channel per distinct view.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import threading
import urllib.parse
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from pvc.api.common import get_storage
from pvc.api.web import flashes, live, render
from pvc.api.web.guard import UIUser, ui_router, ui_user
from pvc.api.web.pages.common import action_done, form_field, next_path, zk_of
from pvc.api.web.uierrors import is_htmx
from pvc.cluster import networks as networks_mod
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import vm_storage
from pvc.cluster import vms as vms_mod
from pvc.core import domainxml, schema, vocabulary
from pvc.core.errors import Conflict, InvalidInput, PVCError
from pvc.core.zk import ZK

router = ui_router()

PER_PAGE = 50
PER_PAGE_CHOICES = (25, 50, 100, 200)
MAX_SEARCH = 255
LIST_FRAGMENTS = {"vms-table": "vms/_table.html"}
DETAIL_FRAGMENTS = {
    "vm-states": "vms/_states.html",
    "vm-overview": "vms/_overview.html",
    "vm-migration": "vms/_migration.html",
    "vm-unmigrate": "vms/_unmigrate.html",
    "vm-disks": "vms/_disks.html",
    "vm-nics": "vms/_nics.html",
    "vm-snapshots": "vms/_snapshots.html",
    "vm-tags": "vms/_tags.html",
}
STATE_ACTIONS: tuple[str, ...] = vocabulary.VM_SETTABLE_STATES       # start shutdown stop restart disable
NODE_ACTIONS: tuple[str, ...] = vocabulary.VM_NODE_ACTIONS           # migrate unmigrate move
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,8192}")   # a view: the canonical query, base64url
NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139")
# Paths under /vms/ that are pages, not VMs: a VM so named is linked by its UUID instead.
RESERVED = frozenset({"define"})
DEFINE_FIELDS = ("xml", "node", "limit", "selector", "autostart", "migration_method", "user_tags",
                 "protected_tags")


def vm_path(name: str, uuid: str) -> str:
    """The detail page of a VM: by name (readable), by UUID when the name is one of our pages."""
    return f"/vms/{urllib.parse.quote(uuid if name in RESERVED else name, safe='')}"


def domain_policy(request: Request) -> domainxml.DomainPolicy:
    """This pvcapid's domain XML policy (D14), as the API's define/modify routes use it."""
    return domainxml.DomainPolicy.from_settings(request.app.state.settings)


# -- the list -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ListQuery:
    """What a list page shows: search text, filters, page. Parsed leniently (a bad page number
    is page 1); the filters themselves are checked by `vms.list_vms` as the API checks them."""

    q: str = ""
    state: str = ""
    node: str = ""
    tag: str = ""
    page: int = 1
    per: int = PER_PAGE

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> ListQuery:
        def text(name: str, limit: int = MAX_SEARCH) -> str:
            return str(params.get(name) or "").strip()[:limit]

        def number(name: str, default: int) -> int:
            try:
                return int(str(params.get(name) or default))
            except ValueError:
                return default

        per = number("per", PER_PAGE)
        return cls(q=text("q"), state=text("state", 32), node=text("node", 64), tag=text("tag", 128),
                   page=max(1, number("page", 1)), per=per if per in PER_PAGE_CHOICES else PER_PAGE)

    def params(self, **changes: Any) -> dict[str, str]:
        """The query's non-default parts (what a link or the view token carries)."""
        query = replace(self, **changes)
        defaults = ListQuery()
        return {k: str(getattr(query, k)) for k in ("q", "state", "node", "tag", "page", "per")
                if getattr(query, k) != getattr(defaults, k)}

    def url(self, **changes: Any) -> str:
        params = self.params(**changes)
        return "/vms" + ("?" + urllib.parse.urlencode(params) if params else "")

    def token(self) -> str:
        """The view in a path segment (base64url of the canonical query; "all" for the default)."""
        encoded = urllib.parse.urlencode(sorted(self.params().items()))
        return base64.urlsafe_b64encode(encoded.encode()).decode().rstrip("=") if encoded else "all"

    @classmethod
    def from_token(cls, token: str) -> ListQuery:
        if token == "all":
            return cls()
        if not TOKEN_RE.fullmatch(token):
            raise InvalidInput("view: not a VM list view")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidInput("view: not a VM list view") from None
        return cls.parse(dict(urllib.parse.parse_qsl(raw)))


@dataclass
class _Facets:
    """What the filter controls offer, from the whole list (kept while the list object stands)."""

    source: Sequence[vms_mod.VMEntry] | None = None
    total: int = 0
    states: dict[str, int] | None = None
    tags: list[tuple[str, int]] | None = None


_FACETS: dict[int, _Facets] = {}
_FACETS_LOCK = threading.Lock()


def facets(zk: ZK, everything: Sequence[vms_mod.VMEntry]) -> _Facets:
    """Counts by state and by tag over every VM; recomputed only when the cached list changed
    (list_vms returns the same object while the watch cache's generation stands still)."""
    with _FACETS_LOCK:
        known = _FACETS.get(id(zk))
        if known is not None and known.source is everything:
            return known
    states: Counter[str] = Counter()
    tags: Counter[str] = Counter()
    for entry in everything:
        states[entry.record.state] += 1
        tags.update({t.name for t in entry.record.tags})
    made = _Facets(everything, len(everything), dict(states), sorted(tags.items()))
    with _FACETS_LOCK:
        if len(_FACETS) > 16:
            _FACETS.clear()
        _FACETS[id(zk)] = made
    return made


def row(entry: vms_mod.VMEntry) -> dict[str, Any]:
    """One line of the list: the record's fields and its XML summary (stored with it; no parse)."""
    record, status = entry.record, entry.status
    summary = vms_mod.record_summary(record)
    description = str(summary.get("description", record.description or ""))
    return {
        "name": record.name, "uuid": record.uuid, "href": vm_path(record.name, record.uuid),
        "state": record.state, "node": record.node, "last_node": record.last_node,
        "running": bool(status and status.running),
        "failed_reason": status.failed_reason if status else "",
        "vcpu": summary.get("vcpu", 0), "memory": summary.get("memory", 0),
        "tags": [t.doc() for t in record.tags],
        "description": "" if description == "N/A" else description,
    }


def matches(entry: vms_mod.VMEntry, needle: str, uuid: str | None) -> bool:
    return needle in entry.record.name.lower() or (uuid is not None and entry.record.uuid == uuid)


def list_data(zk: ZK, query: ListQuery) -> dict[str, Any]:
    """One page of the list. Filters by state, node and tag are the API's (`vms.list_vms`);
    the search is a case-insensitive part of the name, or a whole UUID."""
    everything = vms_mod.list_vms(zk)
    entries = everything
    if query.state or query.node or query.tag:
        entries = vms_mod.list_vms(zk, node=query.node or None, state=query.state or None,
                                   tag=query.tag or None)
    if query.q:
        needle, uuid = query.q.lower(), vms_mod.canonical_uuid(query.q)
        entries = [e for e in entries if matches(e, needle, uuid)]
    counts = facets(zk, everything)
    total = len(entries)
    pages = max(1, math.ceil(total / query.per))
    page = min(query.page, pages)
    first = (page - 1) * query.per
    shown = [row(e) for e in entries[first:first + query.per]]
    return {
        "query": query, "vms": shown, "total": total, "all_total": counts.total, "page": page,
        "pages": pages, "first": first + 1 if shown else 0, "last": first + len(shown),
        "filtered": bool(query.q or query.state or query.node or query.tag),
        "state_counts": counts.states or {}, "tag_counts": counts.tags or [],
        "node_names": [n.name for n in nodes_mod.load_nodes(zk)],
        "list_states": vocabulary.VM_LIST_STATES, "per_choices": PER_PAGE_CHOICES,
    }


@router.get("/vms")
def vm_list(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    query = ListQuery.parse(request.query_params)
    canonical = query.url()
    if request.url.query and canonical != f"{request.url.path}?{request.url.query}":
        # the filter form sends every field, empty ones too: one tidy address per view
        return RedirectResponse(canonical, status_code=303)
    context = list_data(zk_of(request), query)
    return render.page(request, "vms/list.html", context, user=user, active="vms",
                       live=f"/events/vms/list/{replace(query, page=context['page']).token()}")


@router.get("/events/vms/list/{view}")
async def vm_list_events(request: Request, view: str, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    query = ListQuery.from_token(view)
    await run_in_threadpool(list_data, zk, query)          # a bad filter is a 400 here, not a dead stream
    return live.stream(request, user, live.View(lambda: list_data(zk, query), LIST_FRAGMENTS))


# -- define ---------------------------------------------------------------------------------------

def define_context(zk: ZK, values: Mapping[str, Any], error: str | None = None,
                   field: str | None = None) -> dict[str, Any]:
    return {"values": values, "error": error, "error_field": field,
            "node_names": [n.name for n in nodes_mod.load_nodes(zk)],
            "selectors": vocabulary.SELECTOR_CHOICES, "methods": vocabulary.MIGRATION_METHODS,
            "example": EXAMPLE_XML}


EXAMPLE_XML = """<domain type="kvm">
  <name>web1</name>
  <uuid>...</uuid>
  <memory unit="MiB">2048</memory>
  <vcpu>2</vcpu>
  <os><type arch="x86_64" machine="pc">hvm</type></os>
  <devices>
    <disk type="network" device="disk">...</disk>
    <interface type="bridge"><source bridge="vmbr100"/><model type="virtio"/></interface>
  </devices>
</domain>"""


def lines(text: str) -> list[str]:
    """Tags typed one per line (a tag may hold a comma)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def error_field(message: str) -> str | None:
    """The form field a refusal names ("xml: no <uuid>" -> xml), to show it beside that field."""
    prefix = message.split(":", 1)[0].strip()
    return prefix if prefix in DEFINE_FIELDS else None


@router.get("/vms/define")
def vm_define_form(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    context = define_context(zk_of(request), {"selector": "none", "migration_method": "none"})
    return render.page(request, "vms/define.html", context, user=user, active="vms")


@router.post("/vms/define")
async def vm_define(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    """Define a VM as `POST /api/v1/vm` does (strict: the domain XML policy, node limit and size
    checks); a refusal re-renders the form with what was typed and the API's message beside the
    field it names."""
    form = await request.form()
    values = {name: str(form.get(name) or "") for name in
              ("xml", "node", "selector", "migration_method", "user_tags", "protected_tags")}
    values["limit"] = [str(v) for v in form.getlist("limit")]
    values["autostart"] = bool(form.get("autostart"))
    values["start"] = bool(form.get("start"))
    zk = zk_of(request)
    try:
        text, href = await run_in_threadpool(_define, zk, values, domain_policy(request))
    except PVCError as exc:
        if exc.status >= 500:
            raise
        # a name or UUID already taken is the XML's doing: shown beside it
        context = define_context(zk, values, exc.message, error_field(exc.message) or
                                 ("xml" if isinstance(exc, Conflict) else None))
        return render.page(request, "vms/define.html", context, status=exc.status, user=user, active="vms")
    return redirect_with(request, user, text, href)


def _define(zk: ZK, values: Mapping[str, Any], policy: domainxml.DomainPolicy) -> tuple[str, str]:
    record = vms_mod.define(
        zk, values["xml"], node=values["node"] or None, limit=values["limit"] or None,
        selector=values["selector"] or "none", autostart=values["autostart"],
        migration_method=values["migration_method"] or "none", user_tags=lines(values["user_tags"]),
        protected_tags=lines(values["protected_tags"]), policy=policy, strict=True)
    text = f'Added new VM with Name "{record.name}" and UUID "{record.uuid}" to database.'
    if values.get("start"):
        try:
            text += " " + vms_mod.set_state(zk, record.uuid, "start").plan.message
        except PVCError as exc:
            text += f" It was not started: {exc.message}"
    return text, vm_path(record.name, record.uuid)


def redirect_with(request: Request, user: UIUser, text: str, target: str, kind: str = "ok") -> Response:
    """Go to another page with a message there (htmx: HX-Redirect; a plain form: 303)."""
    flashes.put(request, user, kind, text)
    if is_htmx(request):
        return HTMLResponse("", headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


# -- one VM ---------------------------------------------------------------------------------------

def detail_data(zk: ZK, vm: str) -> dict[str, Any]:
    """One VM as `GET /api/v1/vm/<vm>` shows it (fresh from ZooKeeper), plus what its node adds
    to its status (the last migration error) and the nodes it may go to."""
    entry = vms_mod.get_entry(zk, vm)
    item = json.loads(vms_mod.item_json(zk, entry))
    record = entry.record
    raw_status = zk.get(schema.vm_status(record.uuid), None)
    extra = raw_status if isinstance(raw_status, dict) else {}
    return {
        "vm": item, "record": record, "href": vm_path(record.name, record.uuid),
        "last_migration": item.get("last_migration") or {},
        "migration_error": extra.get("last_migration_error") or {},
        "node_names": [n.name for n in nodes_mod.load_nodes(zk)],
        "memory_stats": item.get("memory_stats") or {},
        "vcpu_stats": item.get("vcpu_stats") or {},
    }


def detail_context(zk: ZK, vm: str) -> dict[str, Any]:
    """The page's context: detail_data plus what only the page's forms need (they are not live:
    a re-render must never replace what someone is typing)."""
    data = detail_data(zk, vm)
    record = data["record"]
    summary = vms_mod.record_summary(record)
    return {
        **data, "state_actions": STATE_ACTIONS, "selectors": vocabulary.SELECTOR_CHOICES,
        "methods": vocabulary.MIGRATION_METHODS, "disk_buses": vocabulary.DISK_BUSES,
        "nic_models": NIC_MODELS, "networks": networks_mod.list_networks(zk),
        "vcpu_now": summary.get("vcpu", 0), "memory_now": summary.get("memory", 0),
        "topology_now": summary.get("vcpu_topology", ""),
    }


@router.get("/vms/{vm}")
def vm_detail(request: Request, vm: str, user: UIUser = Depends(ui_user)) -> Response:
    context = detail_context(zk_of(request), vm)
    return render.page(request, "vms/detail.html", context, user=user, active="vms",
                       live=f"/events/vms/{urllib.parse.quote(context['record'].uuid)}")


@router.get("/events/vms/{vm}")
async def vm_detail_events(request: Request, vm: str, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    entry = await run_in_threadpool(vms_mod.get_entry, zk, vm)       # 404 for a VM that is not there
    uuid = entry.record.uuid
    view = live.View(lambda: detail_data(zk, uuid), DETAIL_FRAGMENTS, watch=(schema.vm_status(uuid),))
    return live.stream(request, user, view)


# -- power and placement ----------------------------------------------------------------------------

@router.post("/vms/{vm}/state")
async def vm_state(request: Request, vm: str, user: UIUser = Depends(ui_user)) -> Response:
    """start, shutdown, stop, restart, disable: `POST /api/v1/vm/<vm>/state` without waiting (the
    page follows the VM live); disabling a running VM waits until it is down, as the API does."""
    state = await form_field(request, "state", STATE_ACTIONS)
    done = await run_in_threadpool(vms_mod.set_state, zk_of(request), vm, state)
    return action_done(request, user, done.plan.message, await next_path(request, f"/vms/{vm}"))


@router.post("/vms/{vm}/node")
async def vm_node(request: Request, vm: str, user: UIUser = Depends(ui_user)) -> Response:
    """migrate, move, unmigrate: `POST /api/v1/vm/<vm>/node`; no target node = the VM's selector."""
    action = await form_field(request, "action", NODE_ACTIONS)
    form = await request.form()
    node = str(form.get("node") or "") or None
    force_live = bool(form.get("force_live"))
    done = await run_in_threadpool(vms_mod.change_node, zk_of(request), vm, action,
                                   None if action == "unmigrate" else node, False, force_live)
    return action_done(request, user, done.change.message, await next_path(request, f"/vms/{vm}"))


@router.post("/vms/{vm}/remove")
async def vm_remove(request: Request, vm: str, user: UIUser = Depends(ui_user)) -> Response:
    """Remove a VM (`DELETE /api/v1/vm/<vm>`, with `delete_disks` its volumes too) once its name
    was typed again: a confirmation that works without JavaScript."""
    zk = zk_of(request)
    form = await request.form()
    record = await run_in_threadpool(vms_mod.get_vm, zk, vm)
    typed = str(form.get("confirm_name") or "").strip()
    if typed != record.name:
        raise InvalidInput(f'Refused to remove VM "{record.name}": type its name to confirm'
                           + (f' (got "{typed}").' if typed else "."))
    if form.get("delete_disks"):
        storage = await get_storage(request)          # the API's Ceph adapter, made on first use
        text = await run_in_threadpool(vm_storage.remove_with_disks, zk, storage, record.uuid)
    else:
        text = await run_in_threadpool(vms_mod.undefine, zk, record.uuid)
    return redirect_with(request, user, text, "/vms")


