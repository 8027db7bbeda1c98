"""High-availability helpers shared by tests/system/test_ha.py and bench/failover.py: guests whose
root lives on RBD (so a restart elsewhere is the same disk), where they run, fencing records,
and bringing a fenced lab node back into service."""

from __future__ import annotations

import contextlib
import re
import time
import uuid as uuidlib
from typing import Any

import httpx

from pvc.adapters.hypervisor import HypervisorError, LibvirtHypervisor
from pvc.lab import main as labmain
from pvc.lab import netns
from pvc.lab.plan import LabPlan
from tests.system.helpers import call, console, guest_xml, wait

POOL, BASE = labmain.BASE_POOL, labmain.BASE_IMAGE


def rbd_guest(lab: LabPlan, api: httpx.Client, name: str, node: str, boot: bool = True) -> str:
    """A tiny guest on `node` with its root on a clone of the lab's guest disk; its UUID."""
    volume = f"{name}_vda"
    call(api, "POST", f"/storage/ceph/volume/{POOL}/{BASE}/clone", params={"new_volume": volume})
    disk = (f"<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none'/>"
            f"<source protocol='rbd' name='{POOL}/{volume}'/><target dev='vda' bus='virtio'/></disk>")
    uuid = str(uuidlib.uuid4())
    call(api, "POST", "/vm", data={"xml": guest_xml(lab, name, uuid, disk, "vmroot=/dev/vda"), "node": node})
    call(api, "POST", f"/vm/{name}/state", params={"state": "start"})
    if boot:
        wait(f"{name} booted from its RBD root", lambda: boots(api, name) >= 1, 180)
    return uuid


def boots(api: httpx.Client, name: str) -> int:
    """How many times the guest booted from its disk (the guest counts boots on the disk itself)."""
    counts = [int(n) for n in re.findall(r"PVC-GUEST-ROOT dev=/dev/vda boots=(\d+)", console(api, name))]
    return max(counts, default=0)


def remove_guest(api: httpx.Client, name: str) -> None:
    with contextlib.suppress(Exception):
        api.post(f"/vm/{name}/state", params={"state": "stop"})
        api.delete(f"/vm/{name}", params={"delete_disks": "true"})


def running_on(lab: LabPlan, uuid: str) -> list[str]:
    """Every node whose libvirtd runs the domain; nodes whose libvirtd is gone count as not."""
    found = []
    for node in lab.nodes:
        try:
            hv = LibvirtHypervisor(node.libvirt_uri)
            try:
                domains = hv.list_domains()
            finally:
                hv.close()
        except HypervisorError:
            continue
        if uuid in domains and domains[uuid].running:
            found.append(node.name)
    return found


def fencing(api: httpx.Client, node: str) -> dict[str, Any]:
    return dict(call(api, "GET", f"/node/{node}")[0].get("fencing") or {})


def event_times(record: dict[str, Any]) -> dict[str, float]:
    """The first time of each phase of a fencing chain."""
    out: dict[str, float] = {}
    for event in record.get("events") or []:
        out.setdefault(str(event["phase"]), float(event["time"]))
    return out


def other_than(api: httpx.Client, lab: LabPlan, avoid: str) -> str:
    """Make sure `avoid` is not the primary (hand over if it is); the primary's name."""
    current = str(call(api, "GET", "/status")["primary_node"])
    if current != avoid:
        return current
    target = next(n.name for n in lab.coordinators if n.name != avoid)
    call(api, "POST", f"/node/{target}/coordinator-state", params={"state": "primary"})
    wait(f"{target} primary", lambda: call(api, "GET", "/status")["primary_node"] == target, 60)
    return target


def restore(lab: LabPlan, api: httpx.Client, name: str) -> None:
    """Cable a fenced node back in, start its services, ready it; until it is in service."""
    node = lab.node(name)
    netns.rejoin(lab, node)
    labmain.node_start(lab, node)

    def back() -> bool:
        doc = call(api, "GET", f"/node/{name}")[0]
        return doc["daemon_state"] in ("run", "fenced", "dead") and time.time() - doc["keepalive"] < 15

    wait(f"{name}'s daemon back", back, 180)
    if call(api, "GET", f"/node/{name}")[0]["daemon_state"] in ("dead", "fenced"):
        wait(f"{name} readied", lambda: api.post(f"/node/{name}/domain-state",
                                                 params={"state": "ready"}).status_code == 200, 60)
    wait(f"{name} in service", lambda: call(api, "GET", f"/node/{name}")[0]["daemon_state"] == "run"
         and call(api, "GET", f"/node/{name}")[0]["domain_state"] == "ready", 300)
