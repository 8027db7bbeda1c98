"""Provisioner templates: system templates (add, modify, remove), network templates with their
networks and storage templates with their disks (add, remove; the API has no modify for these).

The same functions as the API's template routes (pvc.api.routers.provisioner.templates):
`prov.add_system_template`, `modify_system_template`, `add_network_template`,
`add_template_network`, `add_storage_template`, `add_template_disk`, the removals and the views.
Refusals come back on the form that was sent, beside the field their message names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from pvc.api.web.guard import UIUser, ui_router, ui_user
from pvc.api.web.pages.common import zk_of
from pvc.api.web.pages.provisioner import BASE, attempt, form_page, form_values, q, redirect_with, refusal
from pvc.cluster import networks as networks_mod
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import provisioner as prov
from pvc.core import schema, vocabulary
from pvc.core.zk import ZK

router = ui_router()

SYSTEM_TEXT = ("name", "vcpus", "vram", "vnc_bind", "node_limit", "node_selector", "migration_method",
               "migration_max_downtime")
SYSTEM_CHECKS = ("serial", "vnc", "node_autostart")
SYSTEM_FORM = SYSTEM_TEXT + SYSTEM_CHECKS
NETWORK_FORM = ("name", "mac_template")
NET_FORM = ("vni", "permit_duplicate")
STORAGE_FORM = ("name",)
DISK_FORM = ("disk_id", "pool", "source_volume", "disk_size", "filesystem", "filesystem_arg", "mountpoint")


# -- system templates ------------------------------------------------------------------------------

def system_choices(zk: ZK) -> dict[str, Any]:
    return {"selectors": vocabulary.SELECTOR_CHOICES, "methods": vocabulary.MIGRATION_METHODS,
            "node_names": [n.name for n in nodes_mod.load_nodes(zk)], "vcpu_max": prov.VCPU_MAX,
            "vram_min": prov.VRAM_MIN, "vram_max": prov.VRAM_MAX, "downtime_max": prov.DOWNTIME_MAX,
            "downtime_default": prov.DOWNTIME_DEFAULT}


def systems_context(zk: ZK, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    templates = prov.list_system_templates(zk)
    users = {t["name"]: prov.profiles_using(zk, "system_template", t["name"]) for t in templates}
    defaults = {"vcpus": "1", "vram": "1024", "serial": True, "vnc": False, "node_selector": "none",
                "migration_method": "", "migration_max_downtime": str(prov.DOWNTIME_DEFAULT)}
    return {"templates": templates, "users": users, "values": values or defaults, **system_choices(zk)}


def system_values(item: Mapping[str, Any]) -> dict[str, Any]:
    """A stored template as the edit form's values."""
    return {"vcpus": str(item["vcpu_count"]), "vram": str(item["vram_mb"]), "serial": item["serial"],
            "vnc": item["vnc"], "vnc_bind": item["vnc_bind"] or "", "node_limit": item["node_limit"] or "",
            "node_selector": item["node_selector"] or "none", "node_autostart": item["node_autostart"],
            "migration_method": item["migration_method"] or "",
            "migration_max_downtime": str(item["migration_max_downtime"])}


def system_context(zk: ZK, name: str, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    item = prov.system_template_item(zk, name)
    return {"template": item, "values": values or system_values(item),
            "users": prov.profiles_using(zk, "system_template", item["name"]), **system_choices(zk)}


def _flags(values: Mapping[str, Any]) -> dict[str, str]:
    return {name: "true" if values[name] else "false" for name in SYSTEM_CHECKS}


def _system_add(zk: ZK, values: Mapping[str, Any]) -> str:
    flags = _flags(values)
    return prov.add_system_template(
        zk, values["name"], values["vcpus"], values["vram"], flags["serial"], flags["vnc"],
        vnc_bind=values["vnc_bind"], node_limit=values["node_limit"], node_selector=values["node_selector"],
        node_autostart=flags["node_autostart"], migration_method=values["migration_method"],
        migration_max_downtime=values["migration_max_downtime"])


def _system_modify(zk: ZK, name: str, values: Mapping[str, Any]) -> str:
    """Every field as the form shows it ("" clears vnc_bind, node_limit and migration_method, as in
    `PUT /provisioner/template/system/<t>`)."""
    changes = {field: values[field] for field in prov.SYSTEM_FIELDS if field in SYSTEM_TEXT}
    return prov.modify_system_template(zk, name, **changes, **_flags(values))


@router.get(f"{BASE}/system")
def system_list(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    return form_page(request, user, "provisioner/systems.html", systems_context(zk_of(request)))


@router.post(f"{BASE}/system")
async def system_add(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    values = await form_values(request, SYSTEM_TEXT, SYSTEM_CHECKS)
    zk = zk_of(request)
    text, exc = await attempt(_system_add, zk, values)
    if exc is not None:
        context = await run_in_threadpool(systems_context, zk, values)
        return form_page(request, user, "provisioner/systems.html", context, exc, SYSTEM_FORM, "add")
    return redirect_with(request, user, text or "", f"{BASE}/system/{q(values['name'])}")


@router.get(BASE + "/system/{name}")
def system_detail(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
    return form_page(request, user, "provisioner/system.html", system_context(zk_of(request), name))


@router.post(BASE + "/system/{name}")
async def system_modify(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
    values = await form_values(request, SYSTEM_TEXT, SYSTEM_CHECKS)
    zk = zk_of(request)
    text, exc = await attempt(_system_modify, zk, name, values)
    if exc is not None:
        context = await run_in_threadpool(system_context, zk, name, values)
        return form_page(request, user, "provisioner/system.html", context, exc, SYSTEM_FORM, "modify")
    return redirect_with(request, user, text or "", f"{BASE}/system/{q(name)}")


@router.post(BASE + "/system/{name}/remove")
async def system_remove(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
    text, exc = await attempt(prov.remove_system_template, zk_of(request), name)
    if exc is not None:
        return refusal(request, user, exc, f"{BASE}/system/{q(name)}")
    return redirect_with(request, user, text or "", f"{BASE}/system")


# -- network templates -----------------------------------------------------------------------------

def network_choices(zk: ZK) -> dict[str, Any]:
    return {"networks": networks_mod.list_networks(zk), "special": prov.SPECIAL_NETWORKS,
            "mac_prefix": prov.MAC_PREFIX}


def networks_context(zk: ZK, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    templates = prov.list_network_templates(zk)
    users = {t["name"]: prov.profiles_using(zk, "network_template", t["name"]) for t in templates}
    return {"templates": templates, "users": users, "values": values or {}, **network_choices(zk)}


def network_context(zk: ZK, name: str, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    item = prov.network_template_item(zk, name)
    return {"template": item, "values": values or {},
            "users": prov.profiles_using(zk, "network_template", item["name"]), **network_choices(zk)}


@router.get(f"{BASE}/network")
def network_list(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    return form_page(request, user, "provisioner/networks.html", networks_context(zk_of(request)))


@router.post(f"{BASE}/network")
async def network_add(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    values = await form_values(request, NETWORK_FORM)
    zk = zk_of(request)
    text, exc = await attempt(prov.add_network_template, zk, values["name"], values["mac_template"])
    if exc is not None:
        context = await run_in_threadpool(networks_context, zk, values)
        return form_page(request, user, "provisioner/networks.html", context, exc, NETWORK_FORM, "add")
    return redirect_with(request, user, text or "", f"{BASE}/network/{q(values['name'])}")


@router.get(BASE + "/network/{name}")
def network_detail(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
    return form_page(request, user, "provisioner/network.html", network_context(zk_of(request), name))


@router.post(BASE + "/network/{name}/remove")
async def network_remove(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
    text, exc = await attempt(prov.remove_network_template, zk_of(request), name)
    if exc is not None:
        return refusal(request, user, exc, f"{BASE}/network/{q(name)}")
    return redirect_with(request, user, text or "", f"{BASE}/network")


@router.post(BASE + "/network/{name}/net")
async def network_net_add(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
    values = await form_values(request, ("vni",), ("permit_duplicate",))
    zk = zk_of(request)
    text, exc = await attempt(prov.add_template_network, zk, name, values["vni"],
                              "true" if values["permit_duplicate"] else "false")
    if exc is not None:
        context = await run_in_threadpool(network_context, zk, name, values)
        return form_page(request, user, "provisioner/network.html", context, exc, NET_FORM, "net")
    return redirect_with(request, user, text or "", f"{BASE}/network/{q(name)}")


@router.post(BASE + "/network/{name}/net/remove")
async def network_net_remove(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
    values = await form_values(request, ("vni",))
    back = f"{BASE}/network/{q(name)}"
    text, exc = await attempt(prov.remove_template_network, zk_of(request), name, values["vni"])
    if exc is not None:
        return refusal(request, user, exc, back)
    return redirect_with(request, user, text or "", back)


# -- storage templates -----------------------------------------------------------------------------

def storage_choices(zk: ZK) -> dict[str, Any]:
    return {"pools": sorted(zk.children(schema.CEPH_POOLS)), "filesystems": list(prov.FILESYSTEMS),
            "disk_max": prov.DISK_MAX_GB}


def storages_context(zk: ZK, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    templates = prov.list_storage_templates(zk)
    users = {t["name"]: prov.profiles_using(zk, "storage_template", t["name"]) for t in templates}
    return {"templates": templates, "users": users, "values": values or {}}


def storage_context(zk: ZK, name: str, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    item = prov.storage_template_item(zk, name)
    taken = {d["disk_id"] for d in item["disks"]}
    free = next((f"sd{c}" for c in "abcdefghijklmnopqrstuvwxyz" if f"sd{c}" not in taken), "")
    return {"template": item, "values": values or {"disk_id": free},
            "users": prov.profiles_using(zk, "storage_template", item["name"]), **storage_choices(zk)}


def _disk_add(zk: ZK, name: str, values: Mapping[str, Any]) -> str:
    return prov.add_template_disk(zk, name, values["disk_id"], values["pool"],
                                  source_volume=values["source_volume"], disk_size=values["disk_size"],
                                  filesystem=values["filesystem"],
                                  filesystem_args=values["filesystem_arg"].split(),
                                  mountpoint=values["mountpoint"])


@router.get(f"{BASE}/storage")
def storage_list(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    return form_page(request, user, "provisioner/storages.html", storages_context(zk_of(request)))


@router.post(f"{BASE}/storage")
async def storage_add(request: Request, user: UIUser = Depends(ui_user)) -> Response:
    values = await form_values(request, STORAGE_FORM)
    zk = zk_of(request)
    text, exc = await attempt(prov.add_storage_template, zk, values["name"])
    if exc is not None:
        context = await run_in_threadpool(storages_context, zk, values)
        return form_page(request, user, "provisioner/storages.html", context, exc, STORAGE_FORM, "add")
    return redirect_with(request, user, text or "", f"{BASE}/storage/{q(values['name'])}")


@router.get(BASE + "/storage/{name}")
def storage_detail(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
    return form_page(request, user, "provisioner/storage.html", storage_context(zk_of(request), name))


@router.post(BASE + "/storage/{name}/remove")
async def storage_remove(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
    text, exc = await attempt(prov.remove_storage_template, zk_of(request), name)
    if exc is not None:
        return refusal(request, user, exc, f"{BASE}/storage/{q(name)}")
    return redirect_with(request, user, text or "", f"{BASE}/storage")


@router.post(BASE + "/storage/{name}/disk")
async def storage_disk_add(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
    values = await form_values(request, DISK_FORM)
    zk = zk_of(request)
    text, exc = await attempt(_disk_add, zk, name, values)
    if exc is not None:
        context = await run_in_threadpool(storage_context, zk, name, values)
        return form_page(request, user, "provisioner/storage.html", context, exc, DISK_FORM, "disk")
    return redirect_with(request, user, text or "", f"{BASE}/storage/{q(name)}")


@router.post(BASE + "/storage/{name}/disk/remove")
async def storage_disk_remove(request: Request, name: str, user: UIUser = Depends(ui_user)) -> Response:
    values = await form_values(request, ("disk_id",))
    back = f"{BASE}/storage/{q(name)}"
    text, exc = await attempt(prov.remove_template_disk, zk_of(request), name, values["disk_id"])
    if exc is not None:
        return refusal(request, user, exc, back)
    return redirect_with(request, user, text or "", back)
