"""Networks: the list (live), add and edit with the API's refusals shown beside their field, remove
after typing the VNI, and one network's page: its settings, the problems its nodes report, the VMs
with interfaces on it, its DHCP reservations and leases and its firewall rules, followed live.
Reservations and rules are added and removed in pages/networks_rules.py.

Everything reads and writes through the functions behind the API's network routes
(pvc.api.routers.networks): `list_networks`, `network_item`, `network_users`, `list_leases`,
`list_acls`, `add_network`, `modify_network` and `remove_network` of pvc.cluster.networks.

A network's state is what its nodes report: their network reconcilers raise a fault
`NETWORK_<STEP>-<VNI>_<NODE>` when building its bridge, gateway, dnsmasq or TFTP fails; the page
shows the active ones. Leases are written by the primary's dnsmasq hook as children of
/netleases/<vni>, which no data watch sees, so a detail stream adds a children watch there.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from pvc.api.web import live, render
from pvc.api.web.guard import UIUser, ui_router, ui_user
from pvc.api.web.pages.common import next_path, zk_of
from pvc.api.web.pages.vms import redirect_with, vm_path
from pvc.api.web.uierrors import is_htmx
from pvc.cluster import faults as faults_mod
from pvc.cluster import networks as nets
from pvc.cluster import vms as vms_mod
from pvc.core import schema
from pvc.core.errors import InvalidInput, PVCError
from pvc.core.records import FaultRecord
from pvc.core.zk import ZK

log = logging.getLogger(__name__)

router = ui_router()

LIST_FRAGMENTS = {"networks-table": "networks/_table.html"}
DETAIL_FRAGMENTS = {
    "network-settings": "networks/_settings.html",
    "network-problems": "networks/_problems.html",
    "network-vms": "networks/_vms.html",
    "network-reservations": "networks/_reservations.html",
    "network-leases": "networks/_leases.html",
    "network-acls": "networks/_acls.html",
}
# The form's text fields, named as the API's inputs; dhcp4 is a checkbox.
TEXT_FIELDS = ("vni", "description", "nettype", "mtu", "domain", "name_servers", "ip4_network", "ip4_gateway",
               "dhcp4_start", "dhcp4_end", "ip6_network", "ip6_gateway", "tftp_root", "dhcp_boot")
FORM_FIELDS = frozenset((*TEXT_FIELDS, "dhcp4"))
EDITABLE_BRIDGED = ("description", "mtu")          # a bridged network has nothing else to change
FIELD_LIMIT = 1024
# A node's network problem about one network (pvc.node.networks: `_problem(f"<step>-{vni}", ...)`).
PROBLEM_ID = re.compile(r"^NETWORK_[A-Z]+-([0-9]+)_")
NO_IP = (None, "", "None")


# -- reading --------------------------------------------------------------------------------------

def problems(zk: ZK) -> dict[int, list[FaultRecord]]:
    """Active network faults by the VNI they concern, newest first."""
    found: dict[int, list[FaultRecord]] = defaultdict(list)
    for fault in faults_mod.load_faults(zk):
        match = PROBLEM_ID.match(fault.id)
        if match:
            found[int(match.group(1))].append(fault)
    for items in found.values():
        items.sort(key=lambda f: f.last_reported, reverse=True)
    return found


def problem_state(found: list[FaultRecord]) -> dict[str, Any]:
    """A word for the network's state: ok, or how many problems (acknowledged ones count apart)."""
    counting = [f for f in found if faults_mod.counts(f)]
    if counting:
        return {"kind": "bad", "word": f"{len(counting)} problem{'s' if len(counting) > 1 else ''}"}
    if found:
        return {"kind": "warn", "word": f"{len(found)} acknowledged"}
    return {"kind": "ok", "word": "no problems"}


_USERS: dict[int, tuple[object, dict[int, int]]] = {}
_USERS_LOCK = threading.Lock()


def user_counts(zk: ZK, vnis: list[int]) -> dict[int, int]:
    """How many VMs use each network (`network_users`, what a removal checks), counted again only
    when the API's cached VM list changed (load_entries returns the same list object until then),
    so a list re-rendered every few seconds does not walk every VM once per network each time."""
    snapshot = vms_mod.load_entries(zk)
    with _USERS_LOCK:
        known = _USERS.get(id(zk))
        if known is not None and known[0] is snapshot and set(vnis) <= known[1].keys():
            return known[1]
    counts = {vni: len(nets.network_users(zk, vni)) for vni in vnis}
    with _USERS_LOCK:
        if len(_USERS) > 16:
            _USERS.clear()
        _USERS[id(zk)] = (snapshot, counts)
    return counts


def list_data(zk: ZK) -> dict[str, Any]:
    """Every network as `GET /api/v1/network` lists it, with its VM count and state."""
    found = problems(zk)
    items = nets.list_networks(zk)
    counts = user_counts(zk, [item["vni"] for item in items])
    rows = [{**item, "vm_count": counts.get(item["vni"], 0),
             "state": problem_state(found.get(item["vni"], []))} for item in items]
    return {"networks": rows, "no_ip": NO_IP}


def vm_rows(zk: ZK, vni: int, users: list[str], leases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The VMs `network_users` names (those a removal would strand), each with its interfaces on
    this network and the address its lease or reservation gives them."""
    by_mac = {lease["mac_address"]: lease["ip4_address"] for lease in reversed(leases)}   # reservations win
    wanted = set(users)
    out = []
    for entry in vms_mod.load_entries(zk):
        record = entry.record
        if record.name not in wanted:
            continue
        nics = [nic for nic in vms_mod.record_summary(record).get("networks", [])
                if nic.get("type") not in ("direct", "hostdev") and str(nic.get("vni")) == str(vni)]
        out.append({"name": record.name, "href": vm_path(record.name, record.uuid), "state": record.state,
                    "node": record.node, "running": bool(entry.status and entry.status.running),
                    "nics": [{"mac": n.get("mac") or "", "model": n.get("model") or "",
                              "ip4": by_mac.get(str(n.get("mac") or "").lower(), "")} for n in nics]})
    return sorted(out, key=lambda r: r["name"])


def detail_data(zk: ZK, vni: int) -> dict[str, Any]:
    """One network as `GET /api/v1/network/<vni>` shows it, with its leases, rules and users."""
    item = nets.network_item(zk, str(vni))
    leases = nets.list_leases(zk, str(vni))
    acls = nets.list_acls(zk, str(vni))
    users = nets.network_users(zk, vni)
    found = problems(zk).get(vni, [])
    return {
        "net": item, "href": f"/networks/{vni}", "managed": item["type"] == "managed", "no_ip": NO_IP,
        "reservations": [lease for lease in leases if lease["timestamp"] == nets.STATIC],
        "leases": [lease for lease in leases if lease["timestamp"] != nets.STATIC],
        "acls": {d: [a for a in acls if a["direction"] == d] for d in nets.DIRECTIONS},
        "users": users, "vms": vm_rows(zk, vni, users, leases),
        "problems": found, "health": problem_state(found),
    }


def canonical_vni(zk: ZK, net: str) -> int:
    """The VNI of the network named by VNI or description in a path (NotFound otherwise)."""
    return int(nets.network_item(zk, net)["vni"])


# -- leases followed live -------------------------------------------------------------------------

_LEASE_WATCHES: dict[tuple[int, int], Any] = {}
_LEASE_LOCK = threading.Lock()


def watch_leases(zk: ZK, hub: live.Hub, vni: int) -> None:
    """Wake the live pages when a lease of network `vni` comes or goes (the dnsmasq hook creates
    and deletes children of /netleases/<vni>). One watch per network and pvcapid; kazoo ends it
    when the network is removed, and the next stream for a network of that VNI sets it again."""
    key = (id(hub), vni)
    with _LEASE_LOCK:
        known = _LEASE_WATCHES.get(key)
        if known is not None and not getattr(known, "_stopped", False):
            return
        try:
            _LEASE_WATCHES[key] = zk.watch_children(schema.network_leases(vni),
                                                     lambda _children: hub.notify())
        except Exception as exc:
            _LEASE_WATCHES.pop(key, None)
            log.warning("live updates: no watch on the leases of network %s (%s); the page still refreshes "
                        "every %.0f s", vni, exc, live.PERIOD)


def refused_back(request: Request, user: UIUser, exc: PVCError, back: str) -> Response:
    """A refused action: htmx shows the message beside its form (the error handler, with the
    refusal's status); a plain form goes back to its page with the message there."""
    if is_htmx(request) or exc.status >= 500:
        raise exc
    return redirect_with(request, user, exc.message, back, kind="bad")


# -- the form (add and edit) ----------------------------------------------------------------------

def error_fields(message: str) -> list[str]:
    """The form fields a refusal names ("dhcp4_start, dhcp4_end: the range ..."), to show it there."""
    prefix = message.split(":", 1)[0]
    names = [part.strip() for part in prefix.split(",")]
    return names if names and all(n in FORM_FIELDS for n in names) else []


def form_context(values: Mapping[str, Any], mode: str, error: str | None = None,
                 vni: int | None = None) -> dict[str, Any]:
    fields = error_fields(error) if error else []
    return {"values": values, "mode": mode, "error": error, "error_fields": fields,
            "error_first": fields[0] if fields else None, "vni": vni, "nettypes": nets.NETWORK_TYPES,
            "limits": {"vni": (nets.VNI_MIN, nets.VNI_MAX), "vlan": (nets.VLAN_MIN, nets.VLAN_MAX),
                       "mtu": (nets.MTU_MIN, nets.MTU_MAX)}}


async def posted_values(request: Request) -> dict[str, Any]:
    """The form as typed (each text field stripped and bounded; dhcp4 a checkbox)."""
    form = await request.form()
    values: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        raw = form.get(name)
        text = raw.strip() if isinstance(raw, str) else ""
        if len(text) > FIELD_LIMIT:
            raise InvalidInput(f"{name}: longer than {FIELD_LIMIT} characters")
        values[name] = text
    values["dhcp4"] = str(form.get("dhcp4") or "").lower() in ("on", "true", "1", "yes")
    return values


def stored_values(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored network as the form shows it (unset values empty)."""
    values = nets.doc_values(doc)
    out: dict[str, Any] = {k: "" if v is None else str(v) for k, v in values.items()
                           if k not in ("name_servers", "dhcp4")}
    out["name_servers"] = ", ".join(values.get("name_servers") or [])
    out["dhcp4"] = bool(values.get("dhcp4"))
    return out


def _add(zk: ZK, values: Mapping[str, Any]) -> tuple[str, int]:
    """`POST /api/v1/network`: the same call its route makes, with the form's values."""
    text = nets.add_network(
        zk, values["vni"], values["description"], values["nettype"], mtu=values["mtu"],
        domain=values["domain"], name_servers=values["name_servers"], ip4_network=values["ip4_network"],
        ip4_gateway=values["ip4_gateway"], ip6_network=values["ip6_network"],
        ip6_gateway=values["ip6_gateway"], dhcp4=values["dhcp4"], dhcp4_start=values["dhcp4_start"],
        dhcp4_end=values["dhcp4_end"], tftp_root=values["tftp_root"], dhcp_boot=values["dhcp_boot"])
    return text, nets.parse_vni(values["vni"], values["nettype"])


def _modify(zk: ZK, vni: int, values: Mapping[str, Any]) -> str:
    """`PUT /api/v1/network/<vni>` with every field of the form: an empty field clears its value
    (the domain goes back to its default); a bridged network's form has only what it can change."""
    doc = nets.get_network(zk, vni)
    names = EDITABLE_BRIDGED if doc.get("type") == "bridged" else \
        [n for n in FORM_FIELDS if n not in ("vni", "nettype")]
    return nets.modify_network(zk, vni, **{name: values[name] for name in names})


# -- pages and streams ----------------------------------------------------------------------------

@router.get("/networks")
def network_list(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    return render.page(request, "networks/list.html", list_data(zk_of(request)), user=user, active="networks",
                       live="/events/networks")


@router.get("/events/networks")
async def network_list_events(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    return live.stream(request, user, live.View(lambda: list_data(zk), LIST_FRAGMENTS,
                                                watch=(schema.NETWORKS,)))


@router.get("/networks/add")
def network_add_form(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    values = {**{name: "" for name in TEXT_FIELDS}, "nettype": "managed", "dhcp4": False}
    return render.page(request, "networks/form.html", form_context(values, "add"), user=user,
                       active="networks")


@router.post("/networks/add")
async def network_add(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    """Add a network as `POST /api/v1/network` does; a refusal re-renders the form with what was
    typed and the API's message beside the field it names."""
    values = await posted_values(request)
    try:
        text, vni = await run_in_threadpool(_add, zk_of(request), values)
    except PVCError as exc:
        if exc.status >= 500:
            raise
        return render.page(request, "networks/form.html", form_context(values, "add", exc.message),
                           status=exc.status, user=user, active="networks")
    return redirect_with(request, user, text, f"/networks/{vni}")


@router.get("/networks/{net}")
def network_detail(request: Request, net: str, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    vni = canonical_vni(zk, net)
    context = {**detail_data(zk, vni), "directions": nets.DIRECTIONS}
    return render.page(request, "networks/detail.html", context, user=user, active="networks",
                       live=f"/events/networks/{vni}")


@router.get("/events/networks/{net}")
async def network_detail_events(request: Request, net: str, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    vni = await run_in_threadpool(canonical_vni, zk, net)        # 404 for a network that is not there
    await run_in_threadpool(watch_leases, zk, request.app.state.live, vni)
    view = live.View(lambda: detail_data(zk, vni), DETAIL_FRAGMENTS,
                     watch=(schema.network(vni), schema.network_acls(vni), schema.network_reservations(vni)))
    return live.stream(request, user, view)


@router.get("/networks/{net}/edit")
def network_edit_form(request: Request, net: str, user: UIUser = Depends(ui_user)) -> Response:
    doc = nets.get_network(zk_of(request), net)
    context = form_context(stored_values(doc), "edit", vni=int(doc["vni"]))
    return render.page(request, "networks/form.html", context, user=user, active="networks")


@router.post("/networks/{net}/edit")
async def network_edit(request: Request, net: str, user: UIUser = Depends(ui_user)) -> Response:
    """Change a network as `PUT /api/v1/network/<vni>` does; a refusal re-renders the form."""
    zk = zk_of(request)
    doc = await run_in_threadpool(nets.get_network, zk, net)
    vni = int(doc["vni"])
    values = {**await posted_values(request), "vni": str(vni), "nettype": str(doc.get("type"))}
    try:
        text = await run_in_threadpool(_modify, zk, vni, values)
    except PVCError as exc:
        if exc.status >= 500:
            raise
        return render.page(request, "networks/form.html", form_context(values, "edit", exc.message, vni),
                           status=exc.status, user=user, active="networks")
    return redirect_with(request, user, text, f"/networks/{vni}")


@router.post("/networks/{net}/remove")
async def network_remove(request: Request, net: str, user: UIUser = Depends(ui_user)) -> Response:
    """Remove a network (`DELETE /api/v1/network/<vni>`: refused while a VM uses it) once its VNI
    was typed again: a confirmation that works without JavaScript."""
    zk = zk_of(request)
    vni = await run_in_threadpool(canonical_vni, zk, net)
    form = await request.form()
    typed = str(form.get("confirm_vni") or "").strip()
    try:
        if typed != str(vni):
            raise InvalidInput(f"Refused to remove network {vni}: type its VNI to confirm"
                               + (f' (got "{typed[:40]}").' if typed else "."))
        text = await run_in_threadpool(nets.remove_network, zk, vni)
    except PVCError as exc:
        return refused_back(request, user, exc, await next_path(request, f"/networks/{vni}"))
    return redirect_with(request, user, text, "/networks")
