"""cluster.automirror on a real ZooKeeper, with the send seam (pvc.worker.send) and the remote clusters
stood in: incremental parents, fallback to a full, remote and local pruning, per-destination
results when one fails, and the destination key kept out of arguments and logs."""

from __future__ import annotations

import time
import uuid as uuidlib
from typing import Any

import pytest
import yaml

from pvc.cluster import tasks
from pvc.core import schema
from pvc.core.config import parse_config
from pvc.core.records import Tag, VMRecord, VMSnapshotRecord
from pvc.core.zk import ZK
from pvc.worker.kinds import automirror as task
from pvc.worker.registry import TaskContext, TaskFailed

HOUR = 3600.0
T0 = time.mktime((2026, 1, 5, 0, 0, 0, 0, 0, -1))
KEY = "d1-secret-api-key-0123456789abcdef"


class Remote:
    def __init__(self, fake: Fake, name: str) -> None:
        self.fake, self.name = fake, name

    def vm(self, vm: str) -> dict[str, Any] | None:
        snaps = self.fake.remote[self.name].get(vm)
        return None if snaps is None else {"name": vm, "snapshots": [{"name": s} for s in snaps]}

    def remove_snapshot(self, vm: str, snap: str) -> None:
        self.fake.remote[self.name][vm].remove(snap)


class Fake:
    def __init__(self) -> None:
        self.remote: dict[str, dict[str, list[str]]] = {"d1": {}, "d2": {}}
        self.sends: list[tuple[str, str, str, str | None]] = []
        self.failing: set[str] = set()
        self.seen_keys: list[str] = []
        self.seams = task.Seams(self.create, self.remove, self.names, self.send, self.destination,
                                self.remote_of)

    def create(self, zk: ZK, settings: Any, node: str, uuid: str, name: str, origin: str, log: Any) -> None:
        zk.put(schema.vm_snapshot(uuid, name), VMSnapshotRecord(name=name, origin=origin).doc())

    def remove(self, zk: ZK, settings: Any, uuid: str, name: str, force: bool, log: Any) -> None:
        zk.delete(schema.vm_snapshot(uuid, name))

    def names(self, zk: ZK, uuid: str) -> list[str]:
        return zk.children(schema.vm_snapshots(uuid))

    def destination(self, conf: Any) -> str:
        self.seen_keys.append(conf.key)
        return "d1" if conf.address == "10.0.0.1" else "d2"

    def remote_of(self, dest: str) -> Remote:
        return Remote(self, dest)

    def send(self, zk: ZK, settings: Any, uuid: str, snap: str, dest: str, parent: str | None,
             log: Any) -> dict:
        vm = VMRecord.model_validate(zk.get(schema.vm(uuid))).name
        if dest in self.failing:
            raise RuntimeError(f"connection to {dest} refused")
        have = self.remote[dest].setdefault(vm, [])
        assert parent is None or parent in have, "incremental parent missing on the destination"
        self.sends.append((vm, dest, snap, parent))
        have.append(snap)
        return {}


@pytest.fixture
def fake():
    f = Fake()
    task.OVERRIDE = f.seams
    yield f
    task.OVERRIDE = None


def settings_for(zk: ZK, keep: int = 2):
    hosts = zk.hosts.split("/", 1)[0].split(",")
    return parse_config(yaml.safe_dump({
        "cluster": {"name": "c1", "coordinator_nodes": ["hv1"]},
        "zookeeper": {"hosts": hosts, "root": zk.root, "acl": False}, "node": {"name": "hv1"},
        "automirror": {"destinations": {"d1": {"address": "10.0.0.1", "key": KEY},
                                        "d2": {"address": "10.0.0.2", "key": "another-long-secret-key"}},
                       "default_destination": "d1", "mirror_tags": ["mirror"], "keep_snapshots": keep}}))


def add_vm(zk: ZK, name: str, *tags: str) -> str:
    uuid = str(uuidlib.uuid4())
    zk.put(schema.vm(uuid), VMRecord(uuid=uuid, name=name, xml="<domain/>", tags=[Tag(name=t) for t in tags],
                                     rbd_volumes=[f"vms/{name}_disk0"]).doc())
    return uuid


def run(zk: ZK, settings: Any, **args: Any) -> tuple[str, dict[str, Any], str]:
    record = tasks.submit(zk, "cluster.automirror", args)
    version = next(v for t, v in tasks.load_tasks(zk) if t.id == record.id)
    claimed = tasks.claim(zk, record, version, "hv1")
    assert claimed is not None
    ctx = TaskContext(zk, settings, "hv1", claimed)
    try:
        return "SUCCESS", task.automirror(ctx, **args), record.id
    except TaskFailed as exc:
        return "FAILURE", exc.result or {"status": str(exc)}, record.id


def test_rotation_over_runs(zk: ZK, fake: Fake) -> None:
    settings = settings_for(zk, keep=2)
    a = add_vm(zk, "a", "mirror")
    b = add_vm(zk, "b", "mirror:d2", "mirror")
    add_vm(zk, "c", "other")
    for hour in range(4):
        state, result, _ = run(zk, settings, now=T0 + hour * 4 * HOUR)
        assert state == "SUCCESS", result
    assert {(vm, dest) for vm, dest, _s, _p in fake.sends} == {("a", "d1"), ("b", "d1"), ("b", "d2")}
    a_sends = [(s, p) for vm, _d, s, p in fake.sends if vm == "a"]
    assert a_sends[0][1] is None and all(p == a_sends[i][0] for i, (_s, p) in enumerate(a_sends[1:]))
    assert len(fake.remote["d1"]["a"]) == 2 and len(fake.remote["d2"]["b"]) == 2
    assert sorted(zk.children(schema.vm_snapshots(a))) == fake.remote["d1"]["a"]
    assert sorted(zk.children(schema.vm_snapshots(b))) == fake.remote["d2"]["b"] == fake.remote["d1"]["b"]


def test_one_destination_failing_keeps_the_rest_going(zk: ZK, fake: Fake) -> None:
    settings = settings_for(zk, keep=1)
    a = add_vm(zk, "a", "mirror")
    b = add_vm(zk, "b", "mirror:d2", "mirror", "mirror:nowhere")
    assert run(zk, settings, now=T0)[0] == "FAILURE"                 # 'nowhere' is unknown
    fake.failing.add("d2")
    state, result, _ = run(zk, settings, now=T0 + HOUR)
    assert state == "FAILURE"
    lines = {v["vm"]: v["details"] for v in result["vms"]}
    assert any(line.startswith("d1: sent") for line in lines["b"])
    assert any(line.startswith("d2: FAILED: send") for line in lines["b"])
    assert any("nowhere" in line for line in lines["b"])
    assert next(v for v in result["vms"] if v["vm"] == "a")["ok"]
    # b's first snapshot is still on d2, so it stays locally as the next parent
    first = fake.remote["d2"]["b"][0]
    assert first in zk.children(schema.vm_snapshots(b))
    fake.failing.clear()
    run(zk, settings, now=T0 + 2 * HOUR)
    last_b = {dest: parent for vm, dest, _s, parent in fake.sends if vm == "b"}
    assert last_b["d2"] == first                                      # incremental from what d2 has
    assert len(zk.children(schema.vm_snapshots(a))) == 1
    assert first not in zk.children(schema.vm_snapshots(b))          # nobody holds it any more


def test_parent_gone_locally_falls_back_to_full(zk: ZK, fake: Fake) -> None:
    settings = settings_for(zk, keep=3)
    a = add_vm(zk, "a", "mirror")
    run(zk, settings, now=T0)
    for name in zk.children(schema.vm_snapshots(a)):
        zk.delete(schema.vm_snapshot(a, name))                    # someone removed the local am… snapshot
    assert run(zk, settings, now=T0 + HOUR)[0] == "SUCCESS"
    assert [p for _vm, _d, _s, p in fake.sends] == [None, None]


def test_key_stays_out_of_args_and_logs(zk: ZK, fake: Fake) -> None:
    settings = settings_for(zk)
    add_vm(zk, "a", "mirror")
    fake.failing.add("d1")
    state, result, task_id = run(zk, settings, now=T0)
    assert state == "FAILURE" and KEY in fake.seen_keys              # the seam got the key from pvc.conf
    record = tasks.get_task(zk, task_id)
    assert KEY not in str(record.args) and KEY not in str(result)
    assert not any(KEY in line for line in tasks.task_log(zk, task_id))


def test_unconfigured(zk: ZK, fake: Fake) -> None:
    bare = parse_config(yaml.safe_dump({"cluster": {"name": "c1", "coordinator_nodes": ["hv1"]},
                                        "zookeeper": {"hosts": ["x:1"], "acl": False}}))
    state, result, _ = run(zk, bare)
    assert state == "FAILURE" and "not configured" in result["status"]
