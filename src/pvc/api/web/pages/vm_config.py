"""A VM's configuration from its page: vCPUs, memory, NICs and volumes (edits of its libvirt XML),
tags and metadata.

The XML edits are the pure functions of `pvc.core.domainxml` that `pvc vm vcpu/memory/network/
volume` use, written back with `vms.modify` (the function behind `PUT /api/v1/vm/<vm>`: the domain
XML policy, size checks, compare-and-set against the version read here), and for a running VM the
one device added or removed is hot-plugged with `vms.device_task` (`POST/DELETE /api/v1/vm/<vm>/
device`), as the CLI does. Tags and metadata are `vms.modify_tag` and `vms.set_meta`.

Each form answers in its own message area (htmx) or on the page after a redirect (no JavaScript).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from pvc.api.web.guard import UIUser, ui_router, ui_user
from pvc.api.web.pages.common import action_done, form_field, next_path, zk_of
from pvc.api.web.pages.vms import NIC_MODELS, domain_policy
from pvc.cluster import networks as networks_mod
from pvc.cluster import vms as vms_mod
from pvc.cluster.storage import volumes as volumes_mod
from pvc.core import domainxml, vocabulary
from pvc.core.errors import InvalidInput, NotFound, PVCError
from pvc.core.units import parse_size
from pvc.core.zk import ZK

router = ui_router()

MIB = 1024 * 1024
RUNNING_STATE = "start"           # only a VM settled in start is offered a restart or a hot-plug
TAG_ACTIONS = ("add", "remove")
# (old XML, new XML) -> (attach?, the one device's XML), or None when nothing is to be hot-plugged
Hotplug = Callable[[str, str], tuple[bool, str] | None]


def edit(zk: ZK, vm: str, change: Callable[[str], str], restart: bool,
         policy: domainxml.DomainPolicy, hotplug: Hotplug | None = None) -> str:
    """Apply `change` to the VM's XML and write it back as `PUT /vm/<vm>` does, based on the
    version read here (a concurrent change is refused, not overwritten); restart a running VM if
    asked, else hot-plug the device for it if there is one. The answer says what happened."""
    entry = vms_mod.get_entry(zk, vm)
    record = entry.record
    old = record.xml
    new = change(old)
    running = record.state == RUNNING_STATE
    text = vms_mod.modify(zk, record.uuid, new, restart and running, expected_version=entry.version,
                          policy=policy, strict=True)
    if not running or restart:
        return text
    device = hotplug(old, new) if hotplug is not None else None
    if device is None:
        return f"{text} Changes will be applied on next VM start/restart."
    attach, device_xml = device
    try:
        task = vms_mod.device_task(zk, record.uuid, device_xml, attach=attach, policy=policy)
    except PVCError as exc:
        verb = "attach" if attach else "detach"
        raise type(exc)(f"{text} Live {verb} failed: {exc.message}; the change applies at the next "
                        f"restart.") from None
    return f"{text} Live {'attach' if attach else 'detach'} queued on {record.node} (task {task.id})."


async def text_field(request: Request, name: str, limit: int = 4096) -> str:
    """An optional text field ("" when absent), stripped, at most `limit` characters."""
    form = await request.form()
    value = form.get(name)
    text = value.strip() if isinstance(value, str) else ""
    if len(text) > limit:
        raise InvalidInput(f"{name}: longer than {limit} characters")
    return text


async def flag(request: Request, name: str) -> bool:
    form = await request.form()
    return str(form.get(name) or "").lower() in ("on", "true", "1", "yes")


def positive(text: str, name: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"{name}: '{text}' is not a whole number of at least 1")
    return int(text)


def memory_mib(text: str) -> int:
    """MiB from '2048', '2048M', '4G', '1.5GiB' (a plain number is MiB, as `pvc vm memory set`)."""
    mib = int(text) if text.isdigit() else parse_size(text, "memory") // MIB
    if mib < 1:
        raise InvalidInput(f"memory: '{text}' is less than 1 MiB")
    return mib


def topology(text: str, vcpus: int) -> domainxml.Topology | None:
    """`sockets,cores,threads` (their product must be the vCPUs), or None when not given."""
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise InvalidInput(f"topology: '{text}' is not sockets,cores,threads (e.g. 1,4,1)")
    found = domainxml.Topology(int(parts[0]), int(parts[1]), int(parts[2]))
    if found.vcpus != vcpus:
        raise InvalidInput(f"topology: '{text}' gives {found.vcpus} vCPUs, not {vcpus}")
    return found


def bridge_of(zk: ZK, net: str) -> str:
    """A PVC network's VNI becomes its bridge vmbr<VNI> (the network must exist, or no node would
    make the bridge); anything else is taken as a bridge name, as `pvc vm network add` does."""
    if not net:
        raise InvalidInput("network: required (a network's VNI or a bridge name)")
    if net.isdigit():
        try:
            networks_mod.network_item(zk, net)
        except NotFound:
            raise InvalidInput(f"network: network {net} does not exist; add it first") from None
        return f"vmbr{net}"
    return net


def _macs(xml: str) -> list[str]:
    return list(domainxml.parse(xml).macs)


def nic_added(old: str, new: str) -> tuple[bool, str] | None:
    added = [m for m in _macs(new) if m not in set(_macs(old))]
    return (True, domainxml.device_xml(new, mac=added[0])) if len(added) == 1 else None


def nic_removed(old: str, new: str) -> tuple[bool, str] | None:
    removed = [m for m in _macs(old) if m not in set(_macs(new))]
    return (False, domainxml.device_xml(old, mac=removed[0])) if len(removed) == 1 else None


VOLUME_RE = re.compile(r"^[^/\s]+/[^/\s]+$")


# -- routes ------------------------------------------------------------------------------------------

@router.post("/vms/{vm}/vcpu")
async def vm_vcpu(request: Request, vm: str, user: UIUser = Depends(ui_user)) -> Response:
    vcpus = positive(await form_field(request, "vcpus"), "vcpus")
    topo = topology(await text_field(request, "topology", 64), vcpus)
    restart = await flag(request, "restart")
    text = await run_in_threadpool(edit, zk_of(request), vm,
                                   lambda xml: domainxml.set_vcpus(xml, vcpus, topo), restart,
                                   domain_policy(request))
    return action_done(request, user, text, await next_path(request, f"/vms/{vm}"))


@router.post("/vms/{vm}/memory")
async def vm_memory(request: Request, vm: str, user: UIUser = Depends(ui_user)) -> Response:
    mib = memory_mib(await form_field(request, "memory"))
    restart = await flag(request, "restart")
    text = await run_in_threadpool(edit, zk_of(request), vm, lambda xml: domainxml.set_memory(xml, mib),
                                   restart, domain_policy(request))
    return action_done(request, user, text, await next_path(request, f"/vms/{vm}"))


@router.post("/vms/{vm}/tags")
async def vm_tag(request: Request, vm: str, user: UIUser = Depends(ui_user)) -> Response:
    """Add or remove a tag (`POST /api/v1/vm/<vm>/tags`)."""
    action = await form_field(request, "action", TAG_ACTIONS)
    tag = await form_field(request, "tag")
    protected = await flag(request, "protected")
    text = await run_in_threadpool(vms_mod.modify_tag, zk_of(request), vm, action, tag, protected)
    return action_done(request, user, text, await next_path(request, f"/vms/{vm}"))


@router.post("/vms/{vm}/meta")
async def vm_meta(request: Request, vm: str, user: UIUser = Depends(ui_user)) -> Response:
    """Node limit, selector, autostart, migration method and downtime (`POST /api/v1/vm/<vm>/meta`,
    strict: a limit naming nodes the cluster lacks is refused). No node ticked clears the limit."""
    form = await request.form()
    limit = [str(v) for v in form.getlist("limit")]
    selector = await form_field(request, "selector", vocabulary.SELECTOR_CHOICES)
    method = await form_field(request, "migration_method", vocabulary.MIGRATION_METHODS)
    downtime = positive(await form_field(request, "migration_max_downtime"), "migration_max_downtime")
    autostart = await flag(request, "autostart")
    text = await run_in_threadpool(lambda: vms_mod.set_meta(
        zk_of(request), vm, limit=limit, selector=selector, autostart=autostart, migration_method=method,
        migration_max_downtime=downtime, strict=True))
    return action_done(request, user, text, await next_path(request, f"/vms/{vm}"))


@router.post("/vms/{vm}/nics/add")
async def vm_nic_add(request: Request, vm: str, user: UIUser = Depends(ui_user)) -> Response:
    zk = zk_of(request)
    net = await text_field(request, "network", 64)
    model = await form_field(request, "model", NIC_MODELS)
    mac = await text_field(request, "mac", 64) or None
    restart = await flag(request, "restart")

    def run() -> str:
        bridge = bridge_of(zk, net)
        return edit(zk, vm, lambda xml: domainxml.add_interface(xml, bridge, mac=mac, model=model), restart,
                    domain_policy(request), nic_added)

    text = await run_in_threadpool(run)
    return action_done(request, user, text, await next_path(request, f"/vms/{vm}"))


@router.post("/vms/{vm}/nics/remove")
async def vm_nic_remove(request: Request, vm: str, user: UIUser = Depends(ui_user)) -> Response:
    mac = await form_field(request, "mac")
    text = await run_in_threadpool(edit, zk_of(request), vm,
                                   lambda xml: domainxml.remove_interface(xml, mac=mac), False,
                                   domain_policy(request), nic_removed)
    return action_done(request, user, text, await next_path(request, f"/vms/{vm}"))


@router.post("/vms/{vm}/volumes/add")
async def vm_volume_add(request: Request, vm: str, user: UIUser = Depends(ui_user)) -> Response:
    """Attach an existing RBD volume (pool/volume); the node fills in the Ceph monitors and its
    secret when it starts or hot-plugs the disk, as for `pvc vm volume add`."""
    zk = zk_of(request)
    volume = await form_field(request, "volume")
    bus = await form_field(request, "bus", vocabulary.DISK_BUSES)
    target = await text_field(request, "target", 16) or None
    restart = await flag(request, "restart")
    if not VOLUME_RE.match(volume):
        raise InvalidInput(f"volume: '{volume}' is not in the form pool/volume")
    pool, name = volume.split("/", 1)

    def run() -> str:
        volumes_mod.get_volume(zk, pool, name)          # it must exist (NotFound names it)
        return edit(zk, vm, lambda xml: domainxml.add_rbd_disk(xml, pool, name, [], None, user="admin",
                                                               target=target, bus=bus),
                    restart, domain_policy(request),
                    lambda _old, new: (True, domainxml.device_xml(new, source=volume)))

    text = await run_in_threadpool(run)
    return action_done(request, user, text, await next_path(request, f"/vms/{vm}"))


@router.post("/vms/{vm}/volumes/remove")
async def vm_volume_remove(request: Request, vm: str, user: UIUser = Depends(ui_user)) -> Response:
    """Detach a disk by target (sdb) or source (pool/volume); its volume stays in the cluster."""
    key = await form_field(request, "volume")
    where = {"target": key} if re.fullmatch(r"[a-z]+", key) else {"source": key}
    text = await run_in_threadpool(
        edit, zk_of(request), vm, lambda xml: domainxml.remove_disk(xml, key), False, domain_policy(request),
        lambda old, _new: (False, domainxml.device_xml(old, **where)))
    return action_done(request, user, text, await next_path(request, f"/vms/{vm}"))
