"""Autobackup on the lab: real Ceph, real snapshots and exports, the lab's loop-mounted ext4 image as the
remote target, mounted and unmounted by the worker's mount commands (pvc.lab.pvcnodes).

Several simulated days (the task's `now`): full -> incrementals -> a new full -> retention removes the
oldest chain, at most full_retention `ab…` snapshots left in Ceph. Then failures: the target full,
the target unavailable, the worker killed mid-export, a primary change mid-run. None leaves a
half-written backup counted as good, an orphan snapshot unreported, or the target mounted. Last, the
VM is removed and its newest incremental imported from the tree: it boots.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pvc.cluster import tasks
from pvc.lab import ceph, guest, proc, pvcnodes
from pvc.lab.plan import LabPlan
from tests.system.helpers import call, console, guest_xml, qemu_pids, vm_exists, wait

pytestmark = pytest.mark.system
POOL = ceph.POOL
NAME = "abvm1"
DAY = 86400.0
T0 = time.mktime((2030, 1, 7, 1, 0, 0, 0, 0, -1))       # simulated days, well after any real backup
IMPORT_ROOT = Path("/tmp/pvc-test-abimport")


@pytest.fixture(scope="module")
def zk(lab: LabPlan) -> Iterator[Any]:
    session = pvcnodes.lab_zk(lab)
    yield session
    session.stop()


def stop(api: httpx.Client, name: str) -> None:
    call(api, "POST", f"/vm/{name}/state", params={"state": "stop", "wait": "true"})
    wait(f"{name} stopped", lambda: not qemu_pids(name), 60)


@pytest.fixture(scope="module")
def vm(lab: LabPlan, api: httpx.Client) -> Iterator[dict[str, Any]]:
    """abvm1: the guest's root disk and a 16 MiB data disk on RBD, tagged `autobackup`, booted once."""
    qcow2 = lab.state_dir / "ab-guest.qcow2"
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
    call(api, "POST", "/vm", data={"xml": guest_xml(lab, NAME, uuid, disks, "vmroot=/dev/vda"), "node": "hv1",
                                   "user_tags": "autobackup"})
    call(api, "POST", f"/vm/{NAME}/state", params={"state": "start"})
    wait("the guest booted from RBD", lambda: "boots=1" in console(api, NAME), 180)
    stop(api, NAME)
    try:
        yield {"uuid": uuid}
    finally:
        if vm_exists(api, NAME):
            with contextlib.suppress(Exception):
                stop(api, NAME)
            call(api, "DELETE", f"/vm/{NAME}", params={"delete_disks": "true"})
        shutil.rmtree(IMPORT_ROOT, ignore_errors=True)


# -- helpers ----------------------------------------------------------------------------------------

def run(lab: LabPlan, zk: Any, day: float, timeout: float = 600, **args: Any) -> tasks.TaskRecord:
    """One autobackup run on simulated day `day` (queued as the API does, with the clock given)."""
    task = tasks.submit(zk, "cluster.autobackup", {"now": T0 + day * DAY, **args})
    record = wait(f"autobackup day {day}", lambda: _finished(zk, task.id), timeout)
    assert_unmounted(lab)
    return record


def _finished(zk: Any, task_id: str) -> tasks.TaskRecord | None:
    record = tasks.get_task(zk, task_id)
    return record if record.state in ("SUCCESS", "FAILURE", "CANCELLED") else None


def assert_unmounted(lab: LabPlan) -> None:
    """No worker (nor the host) has the target mounted."""
    _image, point = pvcnodes.autobackup_target(lab)
    for node in lab.nodes:
        pid = proc.pid_of(pvcnodes.pidfile(lab, node, "pvcworkerd"))
        if pid is None:
            continue
        with contextlib.suppress(OSError):
            mounts = Path(f"/proc/{pid}/mounts").read_text()
            assert f" {point} " not in mounts, f"the target is still mounted in {node.name}'s worker"
    assert not os.path.ismount(point)


@contextlib.contextmanager
def target(lab: LabPlan, writable: bool = False) -> Iterator[Path]:
    """The target's filesystem mounted on the host (between runs: no worker has it then)."""
    image, _point = pvcnodes.autobackup_target(lab)
    where = Path(tempfile.mkdtemp(prefix="pvc-abtarget-"))
    subprocess.run(["mount", "-o", "loop" if writable else "loop,ro", str(image), str(where)], check=True)
    try:
        yield where / lab.name
    finally:
        subprocess.run(["umount", str(where)], check=True)
        where.rmdir()


def catalogue(api: httpx.Client) -> list[dict[str, Any]]:
    return [c for c in call(api, "GET", f"/vm/{NAME}/backup") if c["snapshot"].startswith("ab")]


def ab_snapshots(lab: LabPlan) -> dict[str, list[str]]:
    """`ab…` RBD snapshots of each of the VM's volumes, as Ceph has them."""
    out = {}
    for part in ("root", "data"):
        snaps = ceph.rbd(lab, "snap", "ls", f"{POOL}/{NAME}_{part}", json_out=True)
        out[part] = sorted(s["name"] for s in snaps if s["name"].startswith("ab"))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def faults(api: httpx.Client) -> dict[str, str]:
    return {f["id"]: f["message"] for f in call(api, "GET", "/faults")}


def change_data(lab: LabPlan, seed: int) -> None:
    ceph.rbd(lab, "bench", "--io-type", "write", "--io-size", "64K", "--io-total", f"{1 + seed % 3}M",
             "--io-pattern", "rand", f"{POOL}/{NAME}_data")


def check_tree(lab: LabPlan, api: httpx.Client) -> list[dict[str, Any]]:
    """Every good catalogue entry is a complete directory on the target, and nothing else is there."""
    entries = catalogue(api)
    good = [e for e in entries if e["result"]]
    with target(lab) as root:
        vm_dir = root / NAME
        present = sorted(p.name for p in vm_dir.iterdir() if p.name.startswith("ab"))
        assert present == sorted(e["snapshot"] for e in good), (present, entries)
        for entry in good:
            for item in entry["files"]:
                assert (vm_dir / entry["snapshot"] / item["path"]).stat().st_size == item["size"]
            assert (vm_dir / entry["snapshot"] / "snapshot.json").is_file()
        assert (vm_dir / ".autobackup.json").is_file()
    return entries


# -- the tests (in order: each builds on the state the one before left) ----------------------------------

def test_days_of_backups_retention_and_snapshots_in_ceph(lab: LabPlan, api: httpx.Client, zk: Any,
                                                         vm: dict[str, Any]) -> None:
    kinds = []
    for day in range(7):
        change_data(lab, day)
        record = run(lab, zk, day)
        assert record.state == "SUCCESS", record.status
        (result,) = [v for v in record.result["vms"] if v["vm"] == NAME]
        kinds.append(result["type"])
        snaps = ab_snapshots(lab)
        assert 1 <= len(snaps["root"]) <= 2 and snaps["root"] == snaps["data"], snaps
    assert kinds == ["full", "incremental", "incremental", "full", "incremental", "incremental", "full"]
    entries = check_tree(lab, api)
    fulls = sorted(e["snapshot"] for e in entries if e["type"] == "full")
    assert len(fulls) == 2 and len(entries) == 4                  # day 0's chain went on day 6
    assert ab_snapshots(lab)["root"] == fulls
    assert {e["parent"] for e in entries if e["type"] == "incremental"} == {fulls[0]}
    item = call(api, "GET", f"/vm/{NAME}")[0]
    assert sorted(s["name"] for s in item["snapshots"] if s["name"].startswith("ab")) == fulls


def test_target_full_fails_cleanly(lab: LabPlan, api: httpx.Client, zk: Any, vm: dict[str, Any]) -> None:
    before = ab_snapshots(lab)
    with target(lab, writable=True) as root:
        free = shutil.disk_usage(root.parent).free
        subprocess.run(["fallocate", "-l", str(free - (8 << 20)), str(root.parent / "filler")], check=True)
    try:
        record = run(lab, zk, 7)
        assert record.state == "FAILURE"
        (result,) = [v for v in record.result["vms"] if v["vm"] == NAME]
        assert not result["ok"] and "free" in result["message"]
        assert "AUTOBACKUP_FAILED_ABVM1" in faults(api)
        assert ab_snapshots(lab) == before                       # no snapshot left by the refused run
    finally:
        with target(lab, writable=True) as root:
            (root.parent / "filler").unlink()
    record = run(lab, zk, 8)
    assert record.state == "SUCCESS", record.status
    assert "AUTOBACKUP_FAILED_ABVM1" not in faults(api)
    check_tree(lab, api)


def test_target_unavailable_writes_nothing(lab: LabPlan, api: httpx.Client, zk: Any,
                                           vm: dict[str, Any]) -> None:
    image, point = pvcnodes.autobackup_target(lab)
    moved = image.with_suffix(".away")
    image.rename(moved)
    try:
        before = ab_snapshots(lab)
        record = run(lab, zk, 9)
        assert record.state == "FAILURE" and "mount" in record.status
        assert list(point.iterdir()) == []                        # nothing written onto the root filesystem
        assert ab_snapshots(lab) == before
    finally:
        moved.rename(image)


def test_worker_killed_mid_export(lab: LabPlan, api: httpx.Client, zk: Any, vm: dict[str, Any]) -> None:
    primary = str(call(api, "GET", "/status")["primary_node"])
    node = lab.node(primary)
    change_data(lab, 5)
    task = tasks.submit(zk, "cluster.autobackup", {"now": T0 + 10 * DAY, "force_full": True})

    def exporting() -> bool:
        record = tasks.get_task(zk, task.id)
        assert record.state in ("PENDING", "RUNNING"), record.status
        return record.state == "RUNNING" and "xport" in record.status

    deadline = time.monotonic() + 120
    while not exporting():                    # polled tightly: a lab export takes about a second
        assert time.monotonic() < deadline, "the export never started"
        time.sleep(0.02)
    pidfile = pvcnodes.pidfile(lab, node, "pvcworkerd")
    pid = proc.pid_of(pidfile)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)                    # the lab started it from this process: reap it
    wait("the worker gone", lambda: not _alive(pid), 30)
    pidfile.unlink(missing_ok=True)
    pvcnodes.start_daemon(lab, node, "pvcworkerd")
    record = wait("the task reaped", lambda: _finished(zk, task.id), 120)
    assert record.state == "FAILURE"
    assert_unmounted(lab)
    crashed = time.strftime("ab%Y%m%d%H%M%S", time.localtime(T0 + 10 * DAY))
    assert not any(e["snapshot"] == crashed and e["result"] for e in catalogue(api))
    assert crashed in ab_snapshots(lab)["root"]                 # killed mid-export: its snapshot stays
    # The next run completes, cleans the partial directory, and reports the snapshot left behind.
    record = run(lab, zk, 11)
    assert record.state == "SUCCESS", record.status
    check_tree(lab, api)
    assert "AUTOBACKUP_ORPHANS" in faults(api) and crashed in faults(api)["AUTOBACKUP_ORPHANS"]
    assert crashed in record.result["report"]
    record = run(lab, zk, 12, cleanup=True)
    assert record.state == "SUCCESS", record.status
    assert crashed not in ab_snapshots(lab)["root"] and "AUTOBACKUP_ORPHANS" not in faults(api)
    assert len(ab_snapshots(lab)["root"]) <= 2


def test_primary_change_mid_run(lab: LabPlan, api: httpx.Client, zk: Any, vm: dict[str, Any]) -> None:
    primary = str(call(api, "GET", "/status")["primary_node"])
    other = next(n.name for n in lab.coordinators if n.name != primary)
    change_data(lab, 7)
    task = tasks.submit(zk, "cluster.autobackup", {"now": T0 + 13 * DAY})
    wait("the run to start", lambda: tasks.get_task(zk, task.id).state != "PENDING", 120)
    call(api, "POST", f"/node/{other}/coordinator-state", params={"state": "primary"})
    wait(f"{other} primary", lambda: call(api, "GET", "/status")["primary_node"] == other, 90)
    record = wait("the run to finish", lambda: _finished(zk, task.id), 600)
    assert record.state == "SUCCESS", record.status
    assert record.worker == primary                               # finished where it started
    assert_unmounted(lab)
    runs = [t for t, _ in tasks.load_tasks(zk) if t.kind == "cluster.autobackup" and t.args.get("now") ==
            T0 + 13 * DAY]
    assert len(runs) == 1
    entries = check_tree(lab, api)
    assert len([e for e in entries if e["type"] == "full" and e["result"]]) <= 2
    assert len(ab_snapshots(lab)["root"]) <= 2


def test_import_of_an_incremental_boots(lab: LabPlan, api: httpx.Client, zk: Any, vm: dict[str, Any]) -> None:
    for day in range(14, 18):                 # the next incremental (a full comes every 3 runs)
        change_data(lab, day)
        record = run(lab, zk, day)
        assert record.state == "SUCCESS", record.status
        (result,) = [v for v in record.result["vms"] if v["vm"] == NAME]
        if result["type"] == "incremental":
            break
    assert result["type"] == "incremental", result
    newest = result["snapshot"]
    data_size = ceph.rbd(lab, "info", f"{POOL}/{NAME}_data", json_out=True)["size"]
    shutil.rmtree(IMPORT_ROOT, ignore_errors=True)
    with target(lab) as root:
        shutil.copytree(root / NAME, IMPORT_ROOT / NAME)
    call(api, "DELETE", f"/vm/{NAME}", params={"delete_disks": "true"})
    assert not vm_exists(api, NAME)
    accepted = call(api, "POST", f"/vm/{NAME}/snapshot/import",
                    params={"snapshot_name": newest, "import_path": str(IMPORT_ROOT)})
    done = wait("the import", lambda: _finished(zk, accepted["task_id"]), 600)
    assert done.state == "SUCCESS", done.status
    assert ceph.rbd(lab, "info", f"{POOL}/{NAME}_data", json_out=True)["size"] == data_size
    wait("the imported VM boots (second boot of its disk)", lambda: "boots=2" in console(api, NAME), 180)
    stop(api, NAME)
