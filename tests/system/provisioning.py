"""Provisioner set-up shared by the system tests and bench/provision: a managed network, a system,
network and storage template (a clone of the lab's base image), userdata, the shipped clone
script and a profile `labclone` using them all."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import httpx

from pvc.lab.plan import LabPlan
from tests.system.helpers import call, vm_exists, wait

VNI = 1100
SUBNET = "10.210.11"
EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "pvc" / "worker" / "provisioner" / "examples"
USERDATA = "#!/bin/sh\necho PVC-PROVISIONED-USERDATA $(hostname)\n"


def set_up(lab: LabPlan, api: httpx.Client, scripts: Mapping[str, str] | None = None,
           profiles: Mapping[str, str] | None = None) -> None:
    """Everything profile `labclone` needs; `scripts` {name: text} and `profiles` {name: script}
    add more profiles on the same templates."""
    files = lab.extra["guest_files"]
    assert isinstance(files, dict)
    call(api, "POST", "/network", params={
        "vni": VNI, "description": "provtest", "nettype": "managed", "domain": "prov.test",
        "ip4_network": f"{SUBNET}.0/24", "ip4_gateway": f"{SUBNET}.1", "dhcp4": True,
        "dhcp4_start": f"{SUBNET}.100", "dhcp4_end": f"{SUBNET}.199"})
    call(api, "POST", "/provisioner/template/system", params={
        "name": "tiny", "vcpus": 1, "vram": 128, "serial": True, "vnc": False})
    call(api, "POST", "/provisioner/template/network", params={
        "name": "provnet", "mac_template": "{prefix}:00:11:{vmid}{netid}"})
    call(api, "POST", "/provisioner/template/network/provnet/net", params={"vni": VNI})
    call(api, "POST", "/provisioner/template/storage", params={"name": "clone"})
    call(api, "POST", "/provisioner/template/storage/clone/disk", params={
        "disk_id": "vda", "pool": "vms", "source_volume": "pvc-lab-guest"})
    call(api, "POST", "/provisioner/userdata", params={"name": "provud", "data": USERDATA})
    clone = (EXAMPLES / "2-clone.py").read_text()
    for name, text in {"clone": clone, **(scripts or {})}.items():
        call(api, "POST", "/provisioner/script", params={"name": name, "data": text})
    args = [f"kernel={files['kernel']}", f"initrd={files['initrd']}"]
    for name, script in {"labclone": "clone", **(profiles or {})}.items():
        call(api, "POST", "/provisioner/profile", params={
            "name": name, "profile_type": "provisioner", "system_template": "tiny",
            "network_template": "provnet", "storage_template": "clone", "userdata": "provud",
            "script": script, "arg": args})


def tear_down(api: httpx.Client, vms: Iterable[str], profiles: Iterable[str] = (),
              scripts: Iterable[str] = (), everything: bool = True) -> None:
    """Remove the VMs (with their disks) and, with `everything`, all that set_up made."""
    vms = [name for name in vms if vm_exists(api, name)]
    for name in vms:
        api.post(f"/vm/{name}/state", params={"state": "stop"})
    for name in vms:
        wait(f"{name} stopped", lambda name=name: call(api, "GET", f"/vm/{name}")[0]["state"] == "stop", 60)
        api.delete(f"/vm/{name}", params={"delete_disks": "true"})
    if not everything:
        return
    paths = [f"/provisioner/profile/{p}" for p in ("labclone", *profiles)]
    paths += [f"/provisioner/script/{s}" for s in ("clone", *scripts)]
    paths += ["/provisioner/userdata/provud", "/provisioner/template/storage/clone",
              "/provisioner/template/network/provnet", "/provisioner/template/system/tiny", f"/network/{VNI}"]
    for path in paths:
        api.delete(path)
