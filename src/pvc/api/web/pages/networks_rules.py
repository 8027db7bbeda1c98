"""A network's DHCP reservations and firewall rules from its page (pages/networks.py shows them):
add and remove, through the functions behind `POST/DELETE /api/v1/network/<vni>/lease` and
`.../acl` (pvc.cluster.networks: `add_reservation`, `remove_lease`, `add_acl`, `remove_acl`).

A new rule is checked by the real `nft --check` through the API's own `get_nft` dependency, so
the UI refuses exactly what the API refuses. Each form answers in its own message area (htmx) or
on the page after a redirect (no JavaScript); the tables follow live.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from pvc.adapters.network import Nftables
from pvc.api.routers.networks import get_nft
from pvc.api.web.guard import UIUser, ui_router, ui_user
from pvc.api.web.pages.common import action_done, next_path, zk_of
from pvc.api.web.pages.networks import canonical_vni, refused_back
from pvc.cluster import networks as nets
from pvc.core.errors import InvalidInput, NotFound, PVCError
from pvc.core.zk import ZK

router = ui_router()

TEXT_LIMIT = 4096


async def text(request: Request, name: str) -> str:
    """An optional text field ("" when absent), stripped and bounded."""
    form = await request.form()
    value = form.get(name)
    found = value.strip() if isinstance(value, str) else ""
    if len(found) > TEXT_LIMIT:
        raise InvalidInput(f"{name}: longer than {TEXT_LIMIT} characters")
    return found


async def act(request: Request, user: UIUser, vni: int, work: Callable[..., str], *args: Any) -> Response:
    """Run `work(*args)` in a worker thread and answer with its message, or with its refusal."""
    back = await next_path(request, f"/networks/{vni}")
    try:
        done = await run_in_threadpool(work, *args)
    except PVCError as exc:
        return refused_back(request, user, exc, back)
    return action_done(request, user, done, back)


def remove_reservation(zk: ZK, vni: int, mac: str) -> str:
    """Remove the reservation of `mac` (`DELETE /network/<vni>/lease/<mac>`), refusing when `mac`
    is no reservation: the API's removal falls back to a dynamic lease, which this button is not for."""
    key = nets.normalize_mac(mac, "mac")
    if not any(item["mac_address"] == key for item in nets.list_leases(zk, str(vni), static=True)):
        raise NotFound(f'No DHCP reservation exists for "{key}" in network {vni}.')
    return nets.remove_lease(zk, str(vni), key)


@router.post("/networks/{net}/reservations/add")
async def reservation_add(request: Request, net: str, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    vni = await run_in_threadpool(canonical_vni, zk, net)
    return await act(request, user, vni, nets.add_reservation, zk, str(vni),
                     await text(request, "macaddress"), await text(request, "ipaddress"),
                     await text(request, "hostname") or None)


@router.post("/networks/{net}/reservations/remove")
async def reservation_remove(request: Request, net: str, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    vni = await run_in_threadpool(canonical_vni, zk, net)
    return await act(request, user, vni, remove_reservation, zk, vni, await text(request, "mac"))


@router.post("/networks/{net}/acls/add")
async def acl_add(request: Request, net: str, user: UIUser = Depends(ui_user),
                  nft: Nftables = Depends(get_nft)) -> Response:
    zk = zk_of(request)
    vni = await run_in_threadpool(canonical_vni, zk, net)
    return await act(request, user, vni, nets.add_acl, zk, str(vni), await text(request, "description"),
                     await text(request, "rule"), nft, await text(request, "direction"),
                     await text(request, "order") or None)


@router.post("/networks/{net}/acls/remove")
async def acl_remove(request: Request, net: str, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    vni = await run_in_threadpool(canonical_vni, zk, net)
    return await act(request, user, vni, nets.remove_acl, zk, str(vni), await text(request, "description"))
