"""cluster.autobackup against a real ZooKeeper and a real ext4 image loop-mounted by the mount commands.

The snapshot and export seams (pvc.worker.snapshots / pvc.worker.backups, which need Ceph) are
stand-ins that keep their documented behaviour: snapshot records in /vmsnapshots, an export writes
`<root>/<vm>/<snap>/` with snapshot.json and records the catalogue entry, and on failure removes
its partial files, records a failed entry and raises. Everything else is the real task: locks,
mount/unmount commands, mount-point and free-space checks, retention, `.autobackup.json`, faults,
orphan sweep and the report through a sendmail stand-in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from pvc.adapters import mail
from pvc.cluster import faults, tasks
from pvc.core import schema
from pvc.core.config import parse_config
from pvc.core.records import BackupFile, BackupRecord, Tag, VMRecord, VMSnapshotRecord
from pvc.core.zk import ZK
from pvc.worker.kinds import autobackup as task
from pvc.worker.registry import TaskContext, TaskFailed

DAY = 86400.0
T0 = time.mktime((2026, 1, 5, 0, 0, 0, 0, 0, -1))      # a Monday, local midnight

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop-mounts a filesystem image (needs root)")


class FakeSeams:
    """Stand-ins for H1's snapshot and H2's export code with their contract's behaviour."""

    def __init__(self, zk: ZK) -> None:
        from pvc.cluster import backups

        self.zk = zk
        self.fail_export: dict[str, str] = {}        # vm name -> "error" | "crash"
        self.size: dict[str, int] = {}
        self.exports: list[tuple[str, str, str | None]] = []
        self.seams = task.Seams(self.create, self.remove, self.export, self.names,
                                backups.list_backups, backups.record_backup, backups.drop_backup)

    def create(self, zk: ZK, settings: Any, node: str, uuid: str, name: str, origin: str, log: Any) -> None:
        zk.put(schema.vm_snapshot(uuid, name), VMSnapshotRecord(name=name, origin=origin).doc())

    def remove(self, zk: ZK, settings: Any, uuid: str, name: str, force: bool, log: Any) -> None:
        zk.delete(schema.vm_snapshot(uuid, name))

    def names(self, zk: ZK, uuid: str) -> list[str]:
        return zk.children(schema.vm_snapshots(uuid))

    def export(self, zk: ZK, settings: Any, node: str, uuid: str, snap: str, root: str, parent: str | None,
               origin: str, log: Any, progress: Any = None) -> BackupRecord:
        from pvc.cluster import backups

        vm = VMRecord.model_validate(zk.get(schema.vm(uuid)))
        self.exports.append((vm.name, snap, parent))
        entry = BackupRecord(vm=vm.name, snapshot=snap, type="incremental" if parent else "full",
                             parent=parent, origin="autobackup", target=root, node=node)
        directory = Path(root) / vm.name / snap
        (directory / "images").mkdir(parents=True)
        image = directory / "images" / ("vms.disk0.rbddiff" if parent else "vms.disk0.rbdimg")
        mode = self.fail_export.get(vm.name)
        if progress is not None:
            progress(0, 1, f"Exporting snapshot {snap}")
        try:
            image.write_bytes(b"x" * self.size.get(vm.name, 4096))
            if mode == "crash":
                raise KeyboardInterrupt          # the process "dies": no cleanup, no failed entry
            if mode == "error":
                raise OSError("rbd export-diff failed: interrupted")
            (directory / "snapshot.json").write_text(json.dumps({
                "type": entry.type, "snapshot_name": snap, "incremental_parent": parent,
                "vm_detail": {"name": vm.name},
                "export_files": [[f"images/{image.name}", image.stat().st_size]],
                "export_size_bytes": image.stat().st_size}))
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            shutil.rmtree(directory, ignore_errors=True)
            backups.record_backup(zk, uuid, entry.model_copy(update={"result": False, "message": str(exc),
                                                                      "finished": time.time()}))
            raise RuntimeError(f"Export of snapshot {snap} failed: {exc}") from None
        size = image.stat().st_size
        done = entry.model_copy(update={"result": True, "finished": entry.started + 5, "bytes": size,
                                        "files": [BackupFile(path=f"images/{image.name}", size=size,
                                                             sha256="0" * 64)]})
        backups.record_backup(zk, uuid, done)
        return done


@pytest.fixture
def seams(zk: ZK):
    fake = FakeSeams(zk)
    task.OVERRIDE = fake.seams
    yield fake
    task.OVERRIDE = None


@pytest.fixture
def mnt(tmp_path: Path):
    """A mount point and a 16 MiB ext4 image for the mount commands (the lab's target, in small)."""
    point = tmp_path / "mnt"
    point.mkdir()
    image = tmp_path / "target.img"
    subprocess.run(["truncate", "-s", "16M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    yield point
    if os.path.ismount(point):
        subprocess.run(["umount", "-l", str(point)], check=False)


def settings_for(zk: ZK, tmp_path: Path, mnt: Path, **extra: Any):
    log = tmp_path / "commands.log"
    section = {
        "backup_root_path": str(mnt), "backup_root_suffix": "/c1", "backup_tags": ["backup"],
        "backup_schedule": {"full_interval": 3, "full_retention": 2},
        "auto_mount": {"enabled": True,
                       "mount_cmds": [f"mount -o loop '{tmp_path / 'target.img'}' {{backup_root_path}}",
                                      f"sh -c 'echo mount >> \"{log}\"'"],
                       "unmount_cmds": [f"sh -c 'echo unmount >> \"{log}\"'", "umount {backup_root_path}"]},
        "min_free_bytes": 0,
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(section.get(key), dict):
            section[key] = {**section[key], **value}
        else:
            section[key] = value
    hosts = zk.hosts.split("/", 1)[0].split(",")
    text = yaml.safe_dump({"cluster": {"name": "c1", "coordinator_nodes": ["hv1"]},
                           "zookeeper": {"hosts": hosts, "root": zk.root, "acl": False},
                           "node": {"name": "hv1"}, "autobackup": section})
    return parse_config(text)


def add_vm(zk: ZK, name: str, tags: tuple[str, ...] = ("backup",)) -> str:
    uuid = str(uuidlib.uuid4())
    zk.put(schema.vm(uuid), VMRecord(uuid=uuid, name=name, xml="<domain/>", tags=[Tag(name=t) for t in tags],
                                     rbd_volumes=[f"vms/{name}_disk0"]).doc())
    return uuid


def run(zk: ZK, settings: Any, **args: Any) -> tuple[str, dict[str, Any]]:
    """Run the task in this process as the worker would; (final state, result)."""
    record = tasks.submit(zk, "cluster.autobackup", args)
    pending = tasks.load_tasks(zk)
    version = next(v for t, v in pending if t.id == record.id)
    claimed = tasks.claim(zk, record, version, "hv1")
    assert claimed is not None
    ctx = TaskContext(zk, settings, "hv1", claimed)
    try:
        return "SUCCESS", task.autobackup(ctx, **args)
    except TaskFailed as exc:
        return "FAILURE", exc.result or {"status": str(exc)}


def fault_ids(zk: ZK) -> set[str]:
    return {f.id for f in faults.load_faults(zk) if getattr(f, "active", True)}


def commands(tmp_path: Path) -> list[str]:
    path = tmp_path / "commands.log"
    return path.read_text().split() if path.exists() else []


def test_days_of_backups_with_retention_on_a_mounted_target(zk: ZK, tmp_path: Path, mnt: Path, seams) -> None:
    settings = settings_for(zk, tmp_path, mnt)
    web = add_vm(zk, "web1")
    add_vm(zk, "other", tags=("nobackup",))
    for day in range(10):
        state, result = run(zk, settings, now=T0 + day * DAY)
        assert state == "SUCCESS", result
        assert not os.path.ismount(mnt), "the target stays mounted after a run"
        snaps = zk.children(schema.vm_snapshots(web))
        assert 1 <= len(snaps) <= 2, snaps                       # at most full_retention in Ceph
    kinds = [("F" if parent is None else "I") for _vm, _snap, parent in seams.exports]
    assert "".join(kinds) == "FIIFIIFIIF"
    assert {vm for vm, _s, _p in seams.exports} == {"web1"}
    entries = task.seams().list_backups(zk, web)
    fulls = [e for e in entries if e.type == "full"]
    assert len(fulls) == 2 and all(e.result for e in entries)
    assert {e.parent for e in entries if e.type == "incremental"} <= {f.snapshot for f in fulls}
    assert sorted(zk.children(schema.vm_snapshots(web))) == sorted(f.snapshot for f in fulls)
    assert commands(tmp_path) == ["mount", "unmount"] * 10
    # the target holds exactly the catalogue's backups and the state file (mount it to look)
    subprocess.run(["mount", "-o", "loop", str(tmp_path / "target.img"), str(mnt)], check=True)
    try:
        vm_dir = mnt / "c1" / "web1"
        assert sorted(p.name for p in vm_dir.iterdir()) == sorted([".autobackup.json",
                                                                    *[e.snapshot for e in entries]])
        state = json.loads((vm_dir / ".autobackup.json").read_text())["tracked_backups"]
        assert [e["snapshot_name"] for e in state] == [e.snapshot for e in entries]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_state_file_and_upstream_layout(zk: ZK, tmp_path: Path, seams) -> None:
    target = tmp_path / "target"
    target.mkdir()
    settings = settings_for(zk, tmp_path, target, auto_mount={"enabled": False})
    web = add_vm(zk, "web1")
    for day in range(4):
        assert run(zk, settings, now=T0 + day * DAY)[0] == "SUCCESS"
    vm_dir = target / "c1" / "web1"
    state = json.loads((vm_dir / ".autobackup.json").read_text())["tracked_backups"]
    catalogue = task.seams().list_backups(zk, web)
    assert [e["snapshot_name"] for e in state] == [e.snapshot for e in catalogue]
    assert state[0]["type"] == "full" and state[1]["incremental_parent"] == state[3]["snapshot_name"]
    assert state[0]["vm_detail"] == {"name": "web1"}
    newest = json.loads((vm_dir / state[0]["snapshot_name"] / "snapshot.json").read_text())
    assert newest["result"] is True and newest["datestring"] == state[0]["snapshot_name"][2:]
    assert newest["runtime_secs"] == 5 and newest["message"] == "" and newest["vm_detail"] == {"name": "web1"}
    assert state[0]["datestring"] == state[0]["snapshot_name"][2:]
    expected = sorted([".autobackup.json", *[e.snapshot for e in catalogue]])
    assert sorted(p.name for p in vm_dir.iterdir()) == expected
    # A fresh cluster (catalogue gone) takes the target's entries back and continues the chain.
    for entry in catalogue:
        zk.delete(schema.vm_backup(web, entry.snapshot))
    assert run(zk, settings, now=T0 + 4 * DAY)[0] == "SUCCESS"
    assert seams.exports[-1][2] == state[0]["snapshot_name"]          # incremental against the last full


def test_mount_failure_still_unmounts_and_fails(zk: ZK, tmp_path: Path, mnt: Path, seams) -> None:
    unmount = f"sh -c 'echo unmount >> \"{tmp_path / 'commands.log'}\"'"
    settings = settings_for(zk, tmp_path, mnt,
                            auto_mount={"mount_cmds": ["false"], "unmount_cmds": [unmount]})
    add_vm(zk, "web1")
    state, result = run(zk, settings, now=T0)
    assert state == "FAILURE" and "false failed" in result["status"]
    assert commands(tmp_path) == ["unmount"] and seams.exports == []


def test_unmounted_target_is_refused(zk: ZK, tmp_path: Path, mnt: Path, seams) -> None:
    log = tmp_path / "commands.log"
    mount, unmount = (f"sh -c 'echo {word} >> \"{log}\"'" for word in ("mount", "unmount"))
    settings = settings_for(zk, tmp_path, mnt, auto_mount={"mount_cmds": [mount], "unmount_cmds": [unmount]})
    web = add_vm(zk, "web1")
    state, result = run(zk, settings, now=T0)
    assert state == "FAILURE" and "not a mount point" in result["status"]
    assert seams.exports == [] and zk.children(schema.vm_snapshots(web)) == []
    assert list(mnt.iterdir()) == [] and commands(tmp_path) == ["mount", "unmount"]


def test_target_full_fails_one_vm_not_the_others(zk: ZK, tmp_path: Path, mnt: Path, seams) -> None:
    settings = settings_for(zk, tmp_path, mnt)
    big = add_vm(zk, "big")
    small = add_vm(zk, "small")
    seams.size["big"] = 32 << 20                   # more than the 16 MiB target holds
    state, result = run(zk, settings, now=T0)
    assert state == "FAILURE"
    outcome = {v["vm"]: v["ok"] for v in result["vms"]}
    assert outcome == {"big": False, "small": True}
    assert "FAILED" in result["report"] and "VM small: OK" in result["report"]
    assert zk.children(schema.vm_snapshots(big)) == []              # no orphan of the failed export
    assert [e.result for e in task.seams().list_backups(zk, big)] == [False]
    assert "AUTOBACKUP_FAILED_BIG" in fault_ids(zk) and "AUTOBACKUP_FAILED_SMALL" not in fault_ids(zk)
    faults.raise_fault(zk, "AUTOBACKUP_FAILED_big", 10, "as an earlier version named it")
    assert not os.path.ismount(mnt)
    # The failed full is no parent: the next run (fits now) is a full again, and clears the fault.
    seams.size["big"] = 4096
    assert run(zk, settings, now=T0 + DAY)[0] == "SUCCESS"
    assert [p for vm, _s, p in seams.exports if vm == "big"] == [None, None]
    assert "AUTOBACKUP_FAILED_BIG" not in fault_ids(zk)
    assert "AUTOBACKUP_FAILED_big" not in fault_ids(zk)             # the old mixed-case id is cleared too
    assert len(zk.children(schema.vm_snapshots(small))) == 1        # small's incremental snapshot went


def test_min_free_space_refuses_before_writing(zk: ZK, tmp_path: Path, mnt: Path, seams) -> None:
    settings = settings_for(zk, tmp_path, mnt, min_free_bytes=64 << 20)
    web = add_vm(zk, "web1")
    state, result = run(zk, settings, now=T0)
    assert state == "FAILURE" and "free" in result["vms"][0]["message"]
    assert seams.exports == [] and zk.children(schema.vm_snapshots(web)) == []


def test_interrupted_export_never_counts_and_leaves_no_orphan(zk: ZK, tmp_path: Path, seams) -> None:
    target = tmp_path / "target"
    target.mkdir()
    settings = settings_for(zk, tmp_path, target, auto_mount={"enabled": False})
    web = add_vm(zk, "web1")
    assert run(zk, settings, now=T0)[0] == "SUCCESS"
    full = seams.exports[0][1]
    seams.fail_export["web1"] = "error"
    state, _result = run(zk, settings, now=T0 + DAY)
    assert state == "FAILURE"
    assert sorted(zk.children(schema.vm_snapshots(web))) == [full]
    seams.fail_export["web1"] = "crash"             # the worker dies mid-export: a partial directory
    with pytest.raises(KeyboardInterrupt):
        run(zk, settings, now=T0 + 2 * DAY)
    crashed = seams.exports[-1][1]
    assert (target / "c1" / "web1" / crashed).is_dir()
    failed = [e for e in task.seams().list_backups(zk, web) if not e.result]
    assert {e.snapshot for e in failed} == {seams.exports[1][1], crashed}
    del seams.fail_export["web1"]
    assert run(zk, settings, now=T0 + 3 * DAY)[0] == "SUCCESS"
    assert seams.exports[-1][2] == full                             # still against the good full
    assert not (target / "c1" / "web1" / crashed).exists()          # the partial directory went
    assert sorted(zk.children(schema.vm_snapshots(web))) == [full]


def test_orphans_are_reported_then_cleaned(zk: ZK, tmp_path: Path, seams) -> None:
    target = tmp_path / "target"
    target.mkdir()
    settings = settings_for(zk, tmp_path, target, auto_mount={"enabled": False})
    web = add_vm(zk, "web1")
    other = add_vm(zk, "untagged", tags=())
    zk.put(schema.vm_snapshot(other, "ab20250101000000"), VMSnapshotRecord(name="ab20250101000000").doc())
    zk.put(schema.vm_snapshot(web, "ab20250102000000"), VMSnapshotRecord(name="ab20250102000000").doc())
    zk.put(schema.vm_snapshot(web, "manual"), VMSnapshotRecord(name="manual").doc())
    state, result = run(zk, settings, now=T0)
    assert state == "SUCCESS"
    assert "AUTOBACKUP_ORPHANS" in fault_ids(zk)
    assert "untagged@ab20250101000000" in result["report"]
    assert run(zk, settings, now=T0 + DAY, cleanup=True)[0] == "SUCCESS"
    assert "AUTOBACKUP_ORPHANS" not in fault_ids(zk)
    assert zk.children(schema.vm_snapshots(other)) == []
    assert sorted(zk.children(schema.vm_snapshots(web))) == sorted(["manual", seams.exports[0][1]])


def test_run_lock_refuses_a_second_run(zk: ZK, tmp_path: Path, seams) -> None:
    target = tmp_path / "target"
    target.mkdir()
    settings = settings_for(zk, tmp_path, target, auto_mount={"enabled": False})
    holder = ZK(zk.hosts.split("/", 1)[0].split(","), zk.root, session_timeout=6).start()
    try:
        lock = holder.lock(task.RUN_LOCK, "hv2")
        assert lock.acquire(timeout=5)
        state, result = run(zk, settings, now=T0)
        assert state == "FAILURE" and "already running" in result["status"]
        lock.release()
    finally:
        holder.stop()
    assert run(zk, settings, now=T0)[0] == "SUCCESS"


def test_report_mail_and_unconfigured(zk: ZK, tmp_path: Path, seams, monkeypatch) -> None:
    target = tmp_path / "target"
    target.mkdir()
    settings = settings_for(zk, tmp_path, target, auto_mount={"enabled": False})
    add_vm(zk, "web1")
    outbox = tmp_path / "outbox"
    sendmail = tmp_path / "sendmail"
    sendmail.write_text(f"#!/bin/sh\necho \"$@\" > {outbox}.args\ncat > {outbox}\n")
    sendmail.chmod(0o755)
    monkeypatch.setattr(mail, "SENDMAIL", str(sendmail))
    state, _ = run(zk, settings, now=T0, email_recipients=["a@example.com,b@example.com", "c@example.com"])
    assert state == "SUCCESS"
    message = outbox.read_text()
    assert "To: a@example.com, b@example.com, c@example.com" in message
    assert "PVC Autobackup report for cluster 'c1'" in message and "VM web1: OK" in message
    assert (tmp_path / "outbox.args").read_text().split() == ["-t"]
    bare = parse_config(yaml.safe_dump({"cluster": {"name": "c1", "coordinator_nodes": ["hv1"]},
                                        "zookeeper": {"hosts": ["x:1"], "acl": False}}))
    state, result = run(zk, bare)
    assert state == "FAILURE" and "not configured" in result["status"]
