"""Storage on the lab's real Ceph, through the API as administrators use it.

pool add -> volume add/resize/rename/clone -> data written by upload, snapshot, overwritten,
rolled back (checked with `rbd export`) -> snapshot rename/remove -> bad input refused with nothing
changed -> a qcow2 image uploaded and the tiny guest booted from it on RBD -> live migration ->
a node change keeps the disk's data -> remove with disks -> pool remove. Then an OSD outage
(I/O goes on, status says degraded; health returns), a PVC-added OSD, and the benchmark.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from pvc.adapters.hypervisor import LibvirtHypervisor
from pvc.lab import ceph, guest, proc
from pvc.lab.plan import LabPlan
from tests.system.helpers import (
    call,
    console,
    guest_xml,
    heartbeats,
    qemu_pids,
    storage_in,
    vm_exists,
    wait,
    wait_task,
    where,
)

pytestmark = pytest.mark.system
POOL = "tstpool"
MIB = 1 << 20


def volumes(api: httpx.Client, pool: str = POOL) -> dict[str, dict[str, Any]]:
    response = api.get("/storage/ceph/volume", params={"pool": pool})
    assert response.status_code in (200, 404), response.text
    return {v["name"]: v for v in response.json()} if response.status_code == 200 else {}


def snapshots(api: httpx.Client, volume: str) -> list[str]:
    response = api.get("/storage/ceph/snapshot", params={"pool": POOL, "volume": volume})
    assert response.status_code in (200, 404), response.text
    return sorted(s["snapshot"] for s in response.json()) if response.status_code == 200 else []


def upload(api: httpx.Client, volume: str, path: Path, image_format: str) -> Any:
    with path.open("rb") as handle:
        return call(
            api,
            "POST",
            f"/storage/ceph/volume/{POOL}/{volume}/upload",
            params={"image_format": image_format},
            files={"file": (path.name, handle)},
        )


def rbd_md5(lab: LabPlan, image: str) -> str:
    out = lab.state_dir / "export.raw"
    out.unlink(missing_ok=True)
    ceph.rbd(lab, "export", "--no-progress", image, str(out))
    digest = hashlib.md5(out.read_bytes()).hexdigest()
    out.unlink()
    return digest


def status_text(api: httpx.Client) -> str:
    return str(call(api, "GET", "/storage/ceph/status")["ceph_data"])


def refused(response: httpx.Response, *words: str) -> None:
    """A clear 4xx whose message names the problem."""
    assert 400 <= response.status_code < 500, f"{response.status_code} {response.text}"
    text = response.text.lower()
    assert all(w.lower() in text for w in words), response.text


@pytest.fixture(scope="module")
def pool(lab: LabPlan, api: httpx.Client) -> Any:
    call(
        api, "POST", "/storage/ceph/pool", params={"pool": POOL, "pgs": 8, "replcfg": "copies=3,mincopies=2"}
    )
    yield POOL
    if api.get(f"/storage/ceph/pool/{POOL}").status_code == 200:
        api.delete(f"/storage/ceph/pool/{POOL}", params={"yes-i-really-mean-it": "yes"})


def test_pool_volume_and_snapshot_operations(lab: LabPlan, api: httpx.Client, pool: str) -> None:
    info = call(api, "GET", f"/storage/ceph/pool/{POOL}")[0]
    assert info["name"] == POOL and info["pgs"] == 8

    call(api, "POST", "/storage/ceph/volume", params={"pool": POOL, "volume": "vol1", "size": "8M"})
    assert volumes(api)["vol1"]["stats"]["size"] == "8M"  # human-readable, as upstream
    assert ceph.rbd(lab, "info", f"{POOL}/vol1", json_out=True)["size"] == 8 * MIB
    call(api, "PUT", f"/storage/ceph/volume/{POOL}/vol1", params={"new_size": "16M"})
    assert volumes(api)["vol1"]["stats"]["size"] == "16M"
    assert ceph.rbd(lab, "info", f"{POOL}/vol1", json_out=True)["size"] == 16 * MIB
    call(api, "PUT", f"/storage/ceph/volume/{POOL}/vol1", params={"new_name": "vol2"})
    call(api, "POST", f"/storage/ceph/volume/{POOL}/vol2/clone", params={"new_volume": "vol3"})
    assert sorted(volumes(api)) == ["vol2", "vol3"]
    assert sorted(ceph.rbd(lab, "ls", POOL, json_out=True)) == ["vol2", "vol3"]

    # data A, snapshot, data B, rollback: A again (checked on Ceph itself)
    work = lab.state_dir / "stor-test"
    work.mkdir(exist_ok=True)
    data_a, data_b = work / "a.raw", work / "b.raw"
    data_a.write_bytes(os.urandom(16 * MIB))
    data_b.write_bytes(os.urandom(16 * MIB))
    upload(api, "vol2", data_a, "raw")
    md5_a = hashlib.md5(data_a.read_bytes()).hexdigest()
    assert rbd_md5(lab, f"{POOL}/vol2") == md5_a
    call(api, "POST", "/storage/ceph/snapshot", params={"pool": POOL, "volume": "vol2", "snapshot": "snap1"})
    upload(api, "vol2", data_b, "raw")
    assert rbd_md5(lab, f"{POOL}/vol2") == hashlib.md5(data_b.read_bytes()).hexdigest()
    call(api, "POST", f"/storage/ceph/snapshot/{POOL}/vol2/snap1/rollback")
    assert rbd_md5(lab, f"{POOL}/vol2") == md5_a
    call(api, "PUT", f"/storage/ceph/snapshot/{POOL}/vol2/snap1", params={"new_name": "snap2"})
    assert snapshots(api, "vol2") == ["snap2"]
    call(api, "DELETE", f"/storage/ceph/snapshot/{POOL}/vol2/snap2")
    assert snapshots(api, "vol2") == []

    # bad input: a clear error, nothing changed
    before = sorted(volumes(api))
    for size, words in (("G", ["size"]), ("-1G", ["size"]), ("0", ["size"]), ("100T", ["free"])):
        refused(
            api.post("/storage/ceph/volume", params={"pool": POOL, "volume": "bad", "size": size}), *words
        )
    for name in ("a b", "a@b"):
        refused(api.post("/storage/ceph/volume", params={"pool": POOL, "volume": name, "size": "1M"}), name)
    refused(
        api.post("/storage/ceph/volume", params={"pool": "nosuchpool", "volume": "x", "size": "1M"}),
        "nosuchpool",
    )
    refused(api.delete(f"/storage/ceph/volume/{POOL}/nosuchvol"), "nosuchvol")
    refused(api.put(f"/storage/ceph/volume/{POOL}/vol2", params={"new_size": "lots"}), "size")
    refused(upload_response(api, "vol3", data_a, "nosuchformat"), "format")
    assert sorted(volumes(api)) == before
    assert sorted(ceph.rbd(lab, "ls", POOL, json_out=True)) == before

    call(api, "DELETE", f"/storage/ceph/volume/{POOL}/vol2")
    call(api, "DELETE", f"/storage/ceph/volume/{POOL}/vol3")
    assert volumes(api) == {}
    data_a.unlink()
    data_b.unlink()


def cut_short(storage: Any, volume: str, snapshot: str) -> None:
    """What librbd's snapshot removal does first, and all a client that dies next leaves: the
    snapshot moved into librbd's trash namespace under a random UUID (cls_rbd snapshot_trash_add)."""
    import rbd

    with storage._ioctx(POOL) as ioctx, rbd.Image(ioctx, volume, read_only=True) as image:
        image_id = image.id()
        snap_id = next(s["id"] for s in image.list_snaps() if s["name"] == snapshot)
        ioctx.execute(f"rbd_header.{image_id}", "rbd", "snapshot_trash_add", struct.pack("<Q", snap_id))


def test_a_snapshot_removal_cut_short_is_finished(lab: LabPlan, api: httpx.Client, pool: str) -> None:
    """A removal cut short leaves the snapshot in librbd's trash, where no remove by name finds it:
    the snapshot list does not show it, a repeat of the removal and a volume removal clear it."""
    storage = storage_in(lab)
    call(api, "POST", "/storage/ceph/volume", params={"pool": POOL, "volume": "cut", "size": "4M"})
    for name in ("s1", "s2"):
        call(api, "POST", "/storage/ceph/snapshot", params={"pool": POOL, "volume": "cut", "snapshot": name})
    cut_short(storage, "cut", "s1")
    listed = ceph.rbd(lab, "snap", "ls", "--all", f"{POOL}/cut", json_out=True)
    assert sorted(s["namespace"]["type"] for s in listed) == ["trash", "user"], listed
    assert storage.list_snapshots(POOL, "cut") == ["s2"]
    assert storage.volume_info(POOL, "cut")["snapshot_count"] == 1

    call(api, "DELETE", f"/storage/ceph/snapshot/{POOL}/cut/s1")      # the administrator's repeat
    assert snapshots(api, "cut") == ["s2"]
    assert [s["name"] for s in ceph.rbd(lab, "snap", "ls", "--all", f"{POOL}/cut", json_out=True)] == ["s2"]

    cut_short(storage, "cut", "s2")
    call(api, "DELETE", f"/storage/ceph/volume/{POOL}/cut")
    assert "cut" not in volumes(api)
    assert "cut" not in ceph.rbd(lab, "ls", POOL, json_out=True)
    storage.close()


def upload_response(api: httpx.Client, volume: str, path: Path, image_format: str) -> httpx.Response:
    with path.open("rb") as handle:
        return api.post(
            f"/storage/ceph/volume/{POOL}/{volume}/upload",
            params={"image_format": image_format},
            files={"file": (path.name, handle)},
        )


def test_vm_on_rbd_boots_migrates_and_keeps_its_data(lab: LabPlan, api: httpx.Client, pool: str) -> None:
    name, volume = "stvm1", "stvm1_root"
    qcow2 = lab.state_dir / "guest.qcow2"
    disk_raw = str(lab.extra["guest_files"]["disk_raw"])  # type: ignore[index]
    proc.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", disk_raw, str(qcow2)])
    call(
        api,
        "POST",
        "/storage/ceph/volume",
        params={"pool": POOL, "volume": volume, "size": f"{guest.DISK_SIZE_MIB}M"},
    )
    upload(api, volume, qcow2, "qcow2")
    qcow2.unlink()
    disk = (
        f"<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none' event_idx='off'/>"
        f"<source protocol='rbd' name='{POOL}/{volume}'/><target dev='vda' bus='virtio'/></disk>"
    )
    uuid = str(uuidlib.uuid4())
    hvs = {n.name: LibvirtHypervisor(n.libvirt_uri) for n in lab.nodes}
    try:
        call(
            api,
            "POST",
            "/vm",
            data={"xml": guest_xml(lab, name, uuid, disk, "vmroot=/dev/vda"), "node": "hv1"},
        )
        call(api, "POST", f"/vm/{name}/state", params={"state": "start"})
        wait(
            "the guest's root on the RBD disk",
            lambda: "PVC-GUEST-ROOT dev=/dev/vda boots=1" in console(api, name),
            120,
        )
        assert where(hvs, uuid) == ["hv1"]

        # in use: the volume cannot be removed or renamed
        refused(api.delete(f"/storage/ceph/volume/{POOL}/{volume}"), name)
        refused(api.put(f"/storage/ceph/volume/{POOL}/{volume}", params={"new_name": "other"}), name)
        assert volume in volumes(api)

        # live migration: the counter carries on, no reboot
        wait("heartbeats", lambda: len(heartbeats(console(api, name))) >= 2, 30)
        before = max(heartbeats(console(api, name)))
        call(api, "POST", f"/vm/{name}/node", params={"action": "migrate", "node": "hv2", "wait": "true"})
        wait("running on hv2", lambda: where(hvs, uuid) == ["hv2"], 60)
        wait("heartbeats after migrating", lambda: max(heartbeats(console(api, name))) > before + 1, 30)
        assert "PVC-GUEST-ROOT" not in console(api, name).split(f"n={before} ")[-1]

        # live grow of the running VM's disk
        call(
            api,
            "PUT",
            f"/storage/ceph/volume/{POOL}/{volume}",
            params={"new_size": f"{guest.DISK_SIZE_MIB * 2}M"},
        )
        wait(
            "the running disk grown",
            lambda: _disk_capacity(hvs["hv2"], uuid) == guest.DISK_SIZE_MIB * 2 * MIB,
            30,
        )

        # a second volume hot-plugged through the CLI (the node adds monitors and auth), then out
        call(
            api, "POST", "/storage/ceph/volume", params={"pool": POOL, "volume": f"{name}_data", "size": "8M"}
        )
        pvc = [sys.executable, "-m", "pvc.cli", "-c", f"lab-{lab.name}", "-q"]
        added = subprocess.run(
            [*pvc, "vm", "volume", "add", name, f"{POOL}/{name}_data", "-b", "virtio", "-y"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert added.returncode == 0, added.stdout + added.stderr
        wait("the data disk in the live XML", lambda: f"{name}_data" in hvs["hv2"].live_xml(uuid), 30)
        refused(api.delete(f"/storage/ceph/volume/{POOL}/{name}_data"), name)
        removed = subprocess.run(
            [*pvc, "vm", "volume", "remove", name, f"{POOL}/{name}_data", "-y"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert removed.returncode == 0, removed.stdout + removed.stderr
        wait(
            "the data disk gone from the live XML",
            lambda: f"{name}_data" not in hvs["hv2"].live_xml(uuid),
            60,
        )
        call(api, "DELETE", f"/storage/ceph/volume/{POOL}/{name}_data")

        # a node change: stop, move to hv3, start -> the boot count on the disk says 2
        call(api, "POST", f"/vm/{name}/state", params={"state": "stop", "wait": "true"})
        wait("stopped", lambda: not qemu_pids(name), 30)
        call(api, "POST", f"/vm/{name}/node", params={"action": "move", "node": "hv3"})
        call(api, "POST", f"/vm/{name}/state", params={"state": "start"})
        wait("booted again from the same disk", lambda: "boots=2" in console(api, name), 120)
        assert where(hvs, uuid) == ["hv3"]

        call(api, "POST", f"/vm/{name}/state", params={"state": "stop", "wait": "true"})
        wait("stopped", lambda: not qemu_pids(name), 30)
        call(api, "DELETE", f"/vm/{name}", params={"delete_disks": "true"})
        assert not vm_exists(api, name)
        assert volume not in volumes(api)
        assert volume not in ceph.rbd(lab, "ls", POOL, json_out=True)
    finally:
        if vm_exists(api, name):
            call(api, "POST", f"/vm/{name}/state", params={"state": "stop"})
            wait("stopped", lambda: not qemu_pids(name), 30)
            call(api, "DELETE", f"/vm/{name}")
        for hv in hvs.values():
            hv.close()


def _disk_capacity(hv: LibvirtHypervisor, uuid: str) -> int:
    conn = hv._connection()
    return int(conn.lookupByUUIDString(uuid).blockInfo("vda")[0])


def test_pool_remove(api: httpx.Client, pool: str) -> None:
    refused(api.delete(f"/storage/ceph/pool/{POOL}"), "yes-i-really-mean-it")
    call(api, "DELETE", f"/storage/ceph/pool/{POOL}", params={"yes-i-really-mean-it": "yes"})
    assert api.get(f"/storage/ceph/pool/{POOL}").status_code == 404


def test_osd_outage_keeps_io_going(lab: LabPlan, api: httpx.Client) -> None:
    # maintenance as an administrator does it: noout first, so Ceph does not rebalance meanwhile
    call(api, "POST", "/storage/ceph/option", params={"option": "noout", "action": "set"})
    wait("the noout flag in the status", lambda: "noout flag(s) set" in status_text(api), 30)
    node = lab.node("hv3")
    ceph.stop_osd(lab, node)
    try:
        wait(
            "status to show the OSD down",
            lambda: "osds: 3 osds: 2 up" in status_text(api) or "1 osds down" in status_text(api),
            60,
        )
        # I/O continues, degraded: create, write and read a volume in the 3-copy pool
        call(api, "POST", "/storage/ceph/volume", params={"pool": "vms", "volume": "degraded1", "size": "4M"})
        data = lab.state_dir / "degraded.raw"
        data.write_bytes(os.urandom(4 * MIB))
        with data.open("rb") as handle:
            call(
                api,
                "POST",
                "/storage/ceph/volume/vms/degraded1/upload",
                params={"image_format": "raw"},
                files={"file": ("d.raw", handle)},
            )
        assert rbd_md5(lab, "vms/degraded1") == hashlib.md5(data.read_bytes()).hexdigest()
        data.unlink()
        assert "HEALTH_WARN" in status_text(api)
        # raised by the primary's cluster checks, once per monitoring interval
        wait("a Ceph fault", lambda: any("HEALTH_WARN" in f["message"]
                                         for f in call(api, "GET", "/faults")), 60)
    finally:
        ceph.start_osd(lab, node)
        call(api, "POST", "/storage/ceph/option", params={"option": "noout", "action": "unset"})
    status = call(api, "GET", "/status")
    assert status["osds"]["total"] == 3 and status["pools"] >= 1 and status["resources"]["disk"]["total"] > 0
    wait("HEALTH_OK again", lambda: "HEALTH_OK" in status_text(api), 120)
    call(api, "DELETE", "/storage/ceph/volume/vms/degraded1")
    util = call(api, "GET", "/storage/ceph/utilization")
    assert util["type"] == "utilization" and "POOLS" in util["ceph_data"]


def test_pvc_added_osd(lab: LabPlan, api: httpx.Client) -> None:
    """An OSD added by PVC (file-backed in the lab) joins, shows in the list, and is removed."""
    before = {o["id"] for o in call(api, "GET", "/storage/ceph/osd")}
    # a relative path lands in the node's storage.osd_data_directory (nothing outside it is taken)
    device = "file:osd-extra.img:1G"
    result = wait_task(
        api,
        call(api, "POST", "/storage/ceph/osd", params={"node": "hv3", "device": device, "weight": 0.001}),
        240,
    )
    assert result["state"] == "SUCCESS", result
    new = wait(
        "the new OSD listed", lambda: {o["id"] for o in call(api, "GET", "/storage/ceph/osd")} - before, 60
    )
    (osd_id,) = new
    # its figures come with the primary's next stats pass
    wait(
        "the OSD's stats",
        lambda: call(api, "GET", f"/storage/ceph/osd/{osd_id}")[0]["stats"].get("node") == "hv3",
        30,
    )
    wait(
        "the OSD up and in",
        lambda: call(api, "GET", f"/storage/ceph/osd/{osd_id}/state") == {"id": osd_id, "up": 1, "in": 1},
        60,
    )
    result = wait_task(
        api,
        call(
            api,
            "DELETE",
            f"/storage/ceph/osd/{osd_id}",
            params={"force": "true", "yes-i-really-mean-it": "yes"},
        ),
        240,
    )
    assert result["state"] == "SUCCESS", result
    wait("the OSD gone", lambda: osd_id not in {o["id"] for o in call(api, "GET", "/storage/ceph/osd")}, 60)
    wait("HEALTH_OK after the removal", lambda: "HEALTH_OK" in status_text(api), 120)


def test_benchmark_and_cli(lab: LabPlan, api: httpx.Client) -> None:
    pvc = [sys.executable, "-m", "pvc.cli", "-c", f"lab-{lab.name}"]
    t0 = time.monotonic()
    run = subprocess.run(
        [*pvc, "storage", "benchmark", "run", "--wait", "-y", "vms"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    print(f"\nbenchmark task: {time.monotonic() - t0:.1f}s")
    jobs = call(api, "GET", "/storage/ceph/benchmark")
    assert jobs and isinstance(jobs[0]["benchmark_result"], dict)
    assert "seq_read" in jobs[0]["benchmark_result"]
    info = subprocess.run(
        [*pvc, "storage", "benchmark", "info", jobs[0]["job"]], capture_output=True, text=True, timeout=60
    )
    assert info.returncode == 0 and "seq_read" in info.stdout.lower().replace(" ", "_"), (
        info.stdout + info.stderr
    )
    status = subprocess.run([*pvc, "storage", "status"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "HEALTH" in status.stdout, status.stdout + status.stderr
    assert "pvcbenchmark" not in ceph.rbd(lab, "ls", "vms", json_out=True)
