"""VM snapshot export and import on the lab's real Ceph, through the API as administrators use it.

A VM with two RBD disks (the tiny guest's root, which counts its boots, and a data disk changed
with `rbd bench` between snapshots) -> a full export and two incrementals -> the VM and its
volumes removed -> import of the newest -> every volume's data at each snapshot equals what it
was, and the VM boots from it. Then a tree in upstream PVC's format, built here from the documented
layout with real `rbd export --export-format 2` output and a snapshot.json without checksums,
imports and boots; and a corrupted file is found by verify and by import, which changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pvc.core import domainxml
from pvc.lab import ceph, guest, proc
from pvc.lab.plan import LabPlan
from tests.system.helpers import call, console, guest_xml, qemu_pids, vm_exists, wait, wait_task

pytestmark = pytest.mark.system
POOL = ceph.POOL
NAME = "bkvm1"
ROOT = Path("/tmp/pvc-test-exports")


def rbd_md5(lab: LabPlan, image: str) -> str:
    out = lab.state_dir / "bk-export.raw"
    out.unlink(missing_ok=True)
    ceph.rbd(lab, "export", "--no-progress", image, str(out))
    digest = hashlib.md5(out.read_bytes()).hexdigest()
    out.unlink()
    return digest


def task(api: httpx.Client, method: str, path: str, **params: Any) -> dict[str, Any]:
    accepted = call(api, method, path, params=params)
    return {**wait_task(api, accepted, 600), "task_id": accepted["task_id"]}


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert result["state"] == "SUCCESS", result
    return result


def stop(api: httpx.Client, name: str) -> None:
    call(api, "POST", f"/vm/{name}/state", params={"state": "stop", "wait": "true"})
    wait(f"{name} stopped", lambda: not qemu_pids(name), 60)


def remove(api: httpx.Client, name: str) -> None:
    if vm_exists(api, name):
        stop(api, name)
        call(api, "DELETE", f"/vm/{name}", params={"delete_disks": "true"})


def snapshot(api: httpx.Client, name: str, snap: str) -> None:
    ok(task(api, "POST", f"/vm/{name}/snapshot", snapshot_name=snap))


@pytest.fixture(scope="module")
def vm(lab: LabPlan, api: httpx.Client) -> Iterator[dict[str, Any]]:
    """bkvm1: root (the guest's disk) and data (16 MiB) on RBD, booted once, stopped."""
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    qcow2 = lab.state_dir / "bk-guest.qcow2"
    disk_raw = str(lab.extra["guest_files"]["disk_raw"])  # type: ignore[index]
    proc.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", disk_raw, str(qcow2)])
    call(api, "POST", "/storage/ceph/volume", params={"pool": POOL, "volume": f"{NAME}_root",
                                                     "size": f"{guest.DISK_SIZE_MIB}M"})
    with qcow2.open("rb") as handle:
        call(api, "POST", f"/storage/ceph/volume/{POOL}/{NAME}_root/upload", params={"image_format": "qcow2"},
             files={"file": (qcow2.name, handle)})
    qcow2.unlink()
    call(api, "POST", "/storage/ceph/volume", params={"pool": POOL, "volume": f"{NAME}_data", "size": "16M"})
    disks = "".join(
        f"<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none'/>"
        f"<source protocol='rbd' name='{POOL}/{NAME}_{part}'/><target dev='{dev}' bus='virtio'/></disk>"
        for part, dev in (("root", "vda"), ("data", "vdb")))
    uuid = str(uuidlib.uuid4())
    xml = guest_xml(lab, NAME, uuid, disks, "vmroot=/dev/vda")
    call(api, "POST", "/vm", data={"xml": xml, "node": "hv1"})
    call(api, "POST", f"/vm/{NAME}/state", params={"state": "start"})
    wait("the guest booted from RBD", lambda: "boots=1" in console(api, NAME), 180)
    stop(api, NAME)
    try:
        yield {"uuid": uuid}
    finally:
        for name in (NAME, "bkup1", "bkvm2"):
            remove(api, name)
        shutil.rmtree(ROOT, ignore_errors=True)


def change_data(lab: LabPlan, seed: int) -> None:
    ceph.rbd(lab, "bench", "--io-type", "write", "--io-size", "64K", "--io-total", f"{2 + seed}M",
             "--io-pattern", "rand", f"{POOL}/{NAME}_data")


def test_export_chain_remove_import_boots_with_equal_data(lab: LabPlan, api: httpx.Client,
                                                          vm: dict[str, Any]) -> None:
    change_data(lab, 1)
    snapshot(api, NAME, "s1")
    ok(task(api, "POST", f"/vm/{NAME}/snapshot/export", snapshot_name="s1", export_path=str(ROOT)))
    change_data(lab, 2)
    snapshot(api, NAME, "s2")
    ok(task(api, "POST", f"/vm/{NAME}/snapshot/export", snapshot_name="s2", export_path=str(ROOT),
            incremental_parent="s1"))
    call(api, "POST", f"/vm/{NAME}/state", params={"state": "start"})        # the guest writes boots=2
    wait("the second boot", lambda: "boots=2" in console(api, NAME), 180)
    stop(api, NAME)
    change_data(lab, 3)
    snapshot(api, NAME, "s3")
    ok(task(api, "POST", f"/vm/{NAME}/snapshot/export", snapshot_name="s3", export_path=str(ROOT),
            incremental_parent="s2"))

    tree = ROOT / NAME
    assert (tree / "s1/images" / f"{POOL}.{NAME}_root.rbdimg").is_file()
    assert (tree / "s3/images" / f"{POOL}.{NAME}_data.rbddiff").is_file()
    doc = json.loads((tree / "s3/snapshot.json").read_text())
    assert doc["type"] == "incremental" and doc["incremental_parent"] == "s2"
    assert doc["pvc_chain"] == ["s1", "s2"] and all(len(f["sha256"]) == 64 for f in doc["pvc_files"])
    catalogue = call(api, "GET", f"/vm/{NAME}/backup")
    assert {(c["snapshot"], c["type"], c["result"]) for c in catalogue} == {
        ("s1", "full", True), ("s2", "incremental", True), ("s3", "incremental", True)}
    full = (tree / "s1/images" / f"{POOL}.{NAME}_root.rbdimg").stat().st_size
    assert full < guest.DISK_SIZE_MIB << 20           # sparse: the unallocated part is not in the file

    sums = {(part, snap): rbd_md5(lab, f"{POOL}/{NAME}_{part}@{snap}")
            for part in ("root", "data") for snap in ("s1", "s2", "s3")}
    assert sums[("data", "s1")] != sums[("data", "s3")] and sums[("root", "s1")] != sums[("root", "s3")]

    ok(task(api, "POST", f"/vm/{NAME}/snapshot/import", snapshot_name="s3", import_path=str(ROOT),
            verify="true"))
    stop(api, NAME)
    call(api, "DELETE", f"/vm/{NAME}", params={"delete_disks": "true"})
    assert not vm_exists(api, NAME)
    assert f"{NAME}_root" not in ceph.rbd(lab, "ls", POOL, json_out=True)

    result = ok(task(api, "POST", f"/vm/{NAME}/snapshot/import", snapshot_name="s3", import_path=str(ROOT)))
    assert result["result"]["chain"] == ["s1", "s2", "s3"] and result["result"]["uuid"] == vm["uuid"]
    for (part, snap), digest in sums.items():
        assert rbd_md5(lab, f"{POOL}/{NAME}_{part}@{snap}") == digest, (part, snap)
    assert rbd_md5(lab, f"{POOL}/{NAME}_data") == sums[("data", "s3")]
    item = call(api, "GET", f"/vm/{NAME}")[0]
    assert item["uuid"] == vm["uuid"]
    assert {s["name"] for s in item["snapshots"]} >= {"s1", "s2", "s3"}
    wait("the imported VM boots (third boot of its disk)", lambda: "boots=3" in console(api, NAME), 180)
    stop(api, NAME)


def test_corrupted_file_is_found_by_verify_and_import(lab: LabPlan, api: httpx.Client,
                                                      vm: dict[str, Any]) -> None:
    path = ROOT / NAME / "s2/images" / f"{POOL}.{NAME}_data.rbddiff"
    saved = path.read_bytes()
    data = bytearray(saved)
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    try:
        result = task(api, "POST", f"/vm/{NAME}/snapshot/import", snapshot_name="s3", import_path=str(ROOT),
                      verify="true")
        assert result["state"] == "FAILURE", result
        assert "s2/images" in result["status"] and "sha256" in result["status"]
        volumes = ceph.rbd(lab, "ls", POOL, json_out=True)
        result = task(api, "POST", f"/vm/{NAME}/snapshot/import", snapshot_name="s3", import_path=str(ROOT),
                      new_name="bkvm2")
        assert result["state"] == "FAILURE" and "nothing was imported" in result["status"]
        assert not vm_exists(api, "bkvm2")
        assert ceph.rbd(lab, "ls", POOL, json_out=True) == volumes
    finally:
        path.write_bytes(saved)


def test_upstream_format_tree_imports(lab: LabPlan, api: httpx.Client, vm: dict[str, Any]) -> None:
    """Built from the documented layout: images/<pool>.<volume>.rbdimg by `rbd export --export-format 2`
    and snapshot.json with upstream's keys only (no checksums), for a VM bkup1 with its own UUID."""
    item = call(api, "GET", f"/vm/{NAME}")[0]
    name, uuid, snap = "bkup1", str(uuidlib.uuid4()), "20250101120000"
    directory = ROOT / name / snap
    (directory / "images").mkdir(parents=True)
    files = []
    for part in ("root", "data"):
        rel = f"images/{POOL}.{name}_{part}.rbdimg"
        ceph.rbd(lab, "export", "--no-progress", "--export-format", "2", f"{POOL}/{NAME}_{part}@s3",
                 str(directory / rel))
        size = ceph.rbd(lab, "info", f"{POOL}/{NAME}_{part}", json_out=True)["size"]
        files.append([rel, size])                 # upstream records the volume's size here
    xml = domainxml.rename(item["xml"], name).replace(vm["uuid"], uuid)
    detail = {**item, "name": name, "uuid": uuid, "xml": xml, "snapshots": [],
              "disks": [{**d, "name": d["name"].replace(NAME, name)} for d in item["disks"]]}
    (directory / "snapshot.json").write_text(json.dumps({
        "type": "full", "snapshot_name": snap, "incremental_parent": None, "vm_detail": detail,
        "export_files": files,
        "export_size_bytes": sum((directory / rel).stat().st_size for rel, _ in files)}))

    result = ok(task(api, "POST", f"/vm/{name}/snapshot/import", snapshot_name=snap, import_path=str(ROOT),
                     retain_snapshot="false"))
    assert result["result"]["checksums"] is False
    log = call(api, "GET", f"/tasks/{result['task_id']}/log")
    assert "no checksums recorded" in json.dumps(log)
    assert rbd_md5(lab, f"{POOL}/{name}_data") == rbd_md5(lab, f"{POOL}/{NAME}_data@s3")
    assert call(api, "GET", f"/vm/{name}")[0]["uuid"] == uuid
    wait("the upstream-format import boots", lambda: "PVC-GUEST-ROOT" in console(api, name), 180)
    stop(api, name)


def test_legacy_backup_create_and_remove(lab: LabPlan, api: httpx.Client, vm: dict[str, Any]) -> None:
    """The deprecated routes: 200 with upstream's message once the snapshot tasks are done."""
    target = ROOT / "legacy"
    target.mkdir(exist_ok=True)
    response = api.post(f"/vm/{NAME}/backup", params={"backup_path": str(target), "retain_snapshot": "true"})
    assert response.status_code == 200, response.text
    text = response.json()["message"]
    assert text.startswith(f"Successfully backed up VM '{NAME}' (full@") and "snapshots retained" in text
    datestring = text.split("full@", 1)[1].split(",", 1)[0]
    doc = json.loads((target / NAME / datestring / "pvcbackup.json").read_text())
    assert doc["type"] == "full" and doc["result"] is True and doc["datestring"] == datestring
    assert (target / NAME / datestring / "pvcdisks" / f"{POOL}.{NAME}_data.rbdimg").is_file()
    snaps = {s["name"] for s in call(api, "GET", f"/vm/{NAME}")[0]["snapshots"]}
    assert f"backup_{datestring}" in snaps
    response = api.delete(f"/vm/{NAME}/backup", params={"backup_path": str(target),
                                                        "backup_datestring": datestring})
    assert response.status_code == 200, response.text
    assert response.json()["message"].startswith(f"Removed VM backup {datestring} for '{NAME}'")
    assert not (target / NAME / datestring).exists()
    snaps = {s["name"] for s in call(api, "GET", f"/vm/{NAME}")[0]["snapshots"]}
    assert f"backup_{datestring}" not in snaps


def test_legacy_restore(lab: LabPlan, api: httpx.Client, vm: dict[str, Any]) -> None:
    """backup (not retained) -> the VM removed with its disks -> restore: it is back, running its data."""
    target = ROOT / "legacy"
    target.mkdir(exist_ok=True)
    response = api.post(f"/vm/{NAME}/backup", params={"backup_path": str(target)})
    assert response.status_code == 200, response.text
    datestring = response.json()["message"].split("full@", 1)[1].split(")", 1)[0]
    data = rbd_md5(lab, f"{POOL}/{NAME}_data")
    stop(api, NAME)
    call(api, "DELETE", f"/vm/{NAME}", params={"delete_disks": "true"})
    response = api.post(f"/vm/{NAME}/restore", params={"backup_path": str(target),
                                                       "backup_datestring": datestring})
    assert response.status_code == 200, response.text
    assert response.json()["message"].startswith(f"Successfully restored VM backup {datestring} for '{NAME}'")
    assert call(api, "GET", f"/vm/{NAME}")[0]["uuid"] == vm["uuid"]
    assert rbd_md5(lab, f"{POOL}/{NAME}_data") == data
    wait("the restored VM runs its disk", lambda: "PVC-GUEST-ROOT" in console(api, NAME), 180)
    response = api.post(f"/vm/{NAME}/restore", params={"backup_path": str(target),
                                                       "backup_datestring": datestring})
    assert response.status_code == 400 and "already exists" in response.json()["message"]
    response = api.delete(f"/vm/{NAME}/backup", params={"backup_path": str(target),
                                                        "backup_datestring": datestring})
    assert response.status_code == 200, response.text
    stop(api, NAME)
