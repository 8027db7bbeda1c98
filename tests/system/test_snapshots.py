"""VM snapshots on the lab's real Ceph and libvirt, through the API as administrators use it.

A running VM with two RBD disks, each holding data of known checksum (written into the volumes
while the VM was stopped, through the upload route) -> snapshot (the VM is paused around the RBD
snapshots: consistency `paused`) -> the snapshot's RBD snapshots are refused to the storage routes
-> a rollback of the running VM is refused -> stop -> the data is changed -> rollback -> the data
equals the snapshot's (checked with `rbd export`) and the VM boots. Then the refusals: a VM without
RBD disks, names with '@' or '/', a duplicate.
"""

from __future__ import annotations

import hashlib
import os
import uuid as uuidlib
from typing import Any

import httpx
import pytest

from pvc.lab import ceph
from pvc.lab.plan import LabPlan
from tests.system.helpers import call, console, guest_xml, wait, wait_task

pytestmark = pytest.mark.system
POOL = "vms"
VM = "snapvm1"
DISKS = [f"{VM}_sda", f"{VM}_sdb"]
SIZE = 4 << 20


def rbd_md5(lab: LabPlan, image: str) -> str:
    out = lab.state_dir / "snapexport.raw"
    out.unlink(missing_ok=True)
    ceph.rbd(lab, "export", "--no-progress", image, str(out))
    digest = hashlib.md5(out.read_bytes()).hexdigest()
    out.unlink()
    return digest


def fill(lab: LabPlan, api: httpx.Client, volume: str) -> str:
    """Write random bytes over the whole volume (upload route); their md5."""
    data = os.urandom(SIZE)
    path = lab.state_dir / f"{volume}.raw"
    path.write_bytes(data)
    with path.open("rb") as handle:
        call(api, "POST", f"/storage/ceph/volume/{POOL}/{volume}/upload", params={"image_format": "raw"},
             files={"file": (path.name, handle)})
    path.unlink()
    return hashlib.md5(data).hexdigest()


def refused(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    text = str(response.json().get("message"))
    for word in words:
        assert word in text, text
    return text


def task(api: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    done = wait_task(api, response.json(), timeout=180)
    assert done["state"] == "SUCCESS", done
    return done


def boots(api: httpx.Client) -> int:
    return console(api, VM).count("PVC-GUEST-BOOT-OK")


def disk_xml(index: int, volume: str) -> str:
    return ("<disk type='network' device='disk'>"
            "<driver name='qemu' type='raw' cache='none' event_idx='off'/>"
            f"<source protocol='rbd' name='{POOL}/{volume}'/><target dev='vd{chr(97 + index)}' bus='virtio'/>"
            f"</disk>")


def test_snapshot_rollback_of_a_running_two_disk_vm(lab: LabPlan, api: httpx.Client) -> None:
    for volume in DISKS:
        call(api, "POST", "/storage/ceph/volume", params={"pool": POOL, "volume": volume, "size": "4M"})
    try:
        _scenario(lab, api)
    finally:
        if api.get(f"/vm/{VM}").status_code == 200:
            api.delete(f"/vm/{VM}", params={"delete_disks": "true"})
        for volume in DISKS:
            if api.get(f"/storage/ceph/volume/{POOL}/{volume}").status_code == 200:
                for snap in ceph.rbd(lab, "snap", "ls", f"{POOL}/{volume}", json_out=True):
                    ceph.rbd(lab, "snap", "rm", f"{POOL}/{volume}@{snap['name']}")
                api.delete(f"/storage/ceph/volume/{POOL}/{volume}")
        api.delete("/vm/snapnodisk")


def _scenario(lab: LabPlan, api: httpx.Client) -> None:
    before = {volume: fill(lab, api, volume) for volume in DISKS}
    assert {v: rbd_md5(lab, f"{POOL}/{v}") for v in DISKS} == before
    uuid = str(uuidlib.uuid4())
    disks = "".join(disk_xml(i, v) for i, v in enumerate(DISKS))
    call(api, "POST", "/vm", data={"xml": guest_xml(lab, VM, uuid, disks), "node": "hv1"})
    call(api, "POST", f"/vm/{VM}/state", params={"state": "start"})
    wait("the guest to boot", lambda: boots(api) >= 1, 120)

    # a snapshot of the running VM: paused around its RBD snapshots
    done = task(api, api.post(f"/vm/{VM}/snapshot", params={"snapshot_name": "before"}))
    assert done["result"]["consistency"] == "paused", done
    assert done["result"]["rbd_snapshots"] == [f"{POOL}/{v}@before" for v in DISKS]
    print(f"snapshot of a running 2-disk VM: paused {done['result']['pause_ms']:.1f} ms")
    [snap] = call(api, "GET", f"/vm/{VM}")[0]["snapshots"]
    assert snap["name"] == "before" and snap["rbd_snapshots"] == [f"{POOL}/{v}@before" for v in DISKS]
    for volume in DISKS:
        assert "before" in [s["name"] for s in ceph.rbd(lab, "snap", "ls", f"{POOL}/{volume}", json_out=True)]
    assert call(api, "GET", f"/vm/{VM}/state")["state"] == "start"    # it runs on after the pause

    # owned by the VM snapshot: the storage routes refuse its RBD snapshots
    refused(api.delete(f"/storage/ceph/snapshot/{POOL}/{DISKS[0]}/before"), 409, VM, "before")
    refused(api.put(f"/storage/ceph/snapshot/{POOL}/{DISKS[1]}/before", params={"new_name": "x"}), 409, VM)
    # a running VM is not rolled back
    refused(api.post(f"/vm/{VM}/snapshot/rollback", params={"snapshot_name": "before"}), 400, VM, "Stop it")

    call(api, "POST", f"/vm/{VM}/state", params={"state": "stop", "wait": "true"})
    wait("the VM to stop", lambda: not call(api, "GET", f"/vm/{VM}")[0]["running"], 60)
    changed = {volume: fill(lab, api, volume) for volume in DISKS}
    assert changed != before and {v: rbd_md5(lab, f"{POOL}/{v}") for v in DISKS} == changed

    task(api, api.post(f"/vm/{VM}/snapshot/rollback", params={"snapshot_name": "before"}))
    assert {v: rbd_md5(lab, f"{POOL}/{v}") for v in DISKS} == before
    booted = boots(api)
    call(api, "POST", f"/vm/{VM}/state", params={"state": "start"})
    wait("the guest to boot after the rollback", lambda: boots(api) > booted, 120)

    # refusals, nothing queued
    nodisk = guest_xml(lab, "snapnodisk", str(uuidlib.uuid4()))
    call(api, "POST", "/vm", data={"xml": nodisk, "node": "hv2"})
    refused(api.post("/vm/snapnodisk/snapshot"), 400, "snapnodisk", "no RBD disks")
    refused(api.post(f"/vm/{VM}/snapshot", params={"snapshot_name": "a@b"}), 400, "snapshot_name", "'@'")
    refused(api.post(f"/vm/{VM}/snapshot", params={"snapshot_name": "a/b"}), 400, "snapshot_name", "'/'")
    refused(api.post(f"/vm/{VM}/snapshot", params={"snapshot_name": "before"}), 400, "already exists")

    task(api, api.delete(f"/vm/{VM}/snapshot", params={"snapshot_name": "before"}))
    assert call(api, "GET", f"/vm/{VM}")[0]["snapshots"] == []
    for volume in DISKS:
        assert ceph.rbd(lab, "snap", "ls", f"{POOL}/{volume}", json_out=True) == []

