"""VM snapshots through the API (in-process, over a FakeStorage) against a real ZooKeeper, with the
tasks run by a real worker's task runner in this process (FakeHypervisor for the pause).

Create, list, remove, roll back and rename with 1 and 3 disks; refusals before anything is queued;
owned RBD snapshots refused by the storage routes; a concurrent VM change during a snapshot; a VM
rename keeping its snapshots usable and a VM removal forgetting them.
"""

from __future__ import annotations

import io
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pvc.adapters.ceph.fake import FakeStorage
from pvc.adapters.hypervisor.fake import FakeHypervisor
from pvc.cluster import tasks as tasks_mod
from pvc.core import domainxml, schema
from pvc.core.config import Settings, load_config
from pvc.core.records import TaskRecord, VMStatus
from pvc.core.zk import ZK
from pvc.worker import snapshots as worker_snapshots
from pvc.worker.runner import Worker
from tests.conftest import wait_for
from tests.integration.apihelp import ok, refused, storage_client

BASE = "/api/v1"
MIB = 1 << 20


@pytest.fixture
def fake() -> FakeStorage:
    return FakeStorage()


@pytest.fixture
def hv() -> FakeHypervisor:
    return FakeHypervisor(uri="fake:///hv1")


@pytest.fixture
def settings(config_factory: Callable[..., Path]) -> Settings:
    return load_config(str(config_factory("hv1")))


@pytest.fixture
def client(config_factory: Callable[..., Path], zk: ZK, fake: FakeStorage, hv: FakeHypervisor,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    import pvc.worker.kinds  # noqa: F401  (registers the task kinds)

    monkeypatch.setattr(worker_snapshots, "storage_for", lambda _settings: fake)
    monkeypatch.setattr(worker_snapshots, "hypervisor_for", lambda _uri: hv)
    with storage_client(config_factory, zk, fake, pool=True) as test_client:
        yield test_client


def vm_xml(name: str, disks: list[str], uuid: str | None = None, memory: int = 256) -> str:
    devices = "".join(f"<disk type='network' device='disk'><source protocol='rbd' name='vms/{d}'/>"
                      f"<target dev='sd{chr(97 + i)}' bus='scsi'/></disk>" for i, d in enumerate(disks))
    return (f"<domain type='kvm'><name>{name}</name><uuid>{uuid or uuidlib.uuid4()}</uuid>"
            f"<memory unit='MiB'>{memory}</memory><vcpu>1</vcpu>"
            f"<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>{devices}</devices></domain>")


def define(client: TestClient, fake: FakeStorage, name: str, ndisks: int) -> list[str]:
    disks = [f"{name}_sd{chr(97 + i)}" for i in range(ndisks)]
    for disk in disks:
        ok(client.post(f"{BASE}/storage/ceph/volume", params={"volume": disk, "pool": "vms", "size": "4M"}))
        fake.write_volume("vms", disk, io.BytesIO(f"{disk}-A".encode() * 100))
    ok(client.post(f"{BASE}/vm", data={"xml": vm_xml(name, disks), "node": "hv1"}))
    return disks


def run_tasks(zk: ZK, settings: Settings) -> list[TaskRecord]:
    """Run every pending task here, as a worker would (claim, run, record), whatever its target."""
    worker = Worker(zk, settings)
    done = []
    for task, version in tasks_mod.load_tasks(zk):
        if task.state != "PENDING":
            continue
        claimed = tasks_mod.claim(zk, task, version, settings.node_name)
        assert claimed is not None
        worker._execute(claimed)
        done.append(tasks_mod.get_task(zk, task.id))
    worker.pool.shutdown(wait=False)
    return done


def accepted(response: Any, kind: str) -> dict[str, Any]:
    body = ok(response, 202)
    assert body["task_name"] == kind and response.headers["Location"] == f"{BASE}/tasks/{body['task_id']}"
    return body


def one_task(zk: ZK, settings: Settings, state: str = "SUCCESS") -> TaskRecord:
    [task] = run_tasks(zk, settings)
    assert task.state == state, task.status
    return task


def vm_item(client: TestClient, name: str) -> dict[str, Any]:
    return ok(client.get(f"{BASE}/vm/{name}"))[0]


def uuid_of(client: TestClient, name: str) -> str:
    return vm_item(client, name)["uuid"]


def pending(zk: ZK) -> list[TaskRecord]:
    return [t for t, _ in tasks_mod.load_tasks(zk) if t.state == "PENDING"]


@pytest.mark.parametrize("ndisks", [1, 3])
def test_create_list_remove(client: TestClient, zk: ZK, fake: FakeStorage, settings: Settings,
                            ndisks: int) -> None:
    disks = define(client, fake, "web", ndisks)
    assert vm_item(client, "web")["snapshots"] == []
    accepted(client.post(f"{BASE}/vm/web/snapshot", params={"snapshot_name": "s1"}), "vm.create_snapshot")
    task = one_task(zk, settings)
    assert task.result["consistency"] == "crash" and task.target == "primary"   # stopped VM
    item = vm_item(client, "web")
    [snap] = item["snapshots"]
    assert snap["name"] == "s1" and snap["rbd_snapshots"] == [f"vms/{d}@s1" for d in disks]
    assert snap["xml_diff_lines"] == [] and snap["timestamp"].isdigit() and snap["age"] >= 0
    assert snap["consistency"] == "crash"              # ours, beside upstream's keys
    listed = {v["name"]: v for v in ok(client.get(f"{BASE}/vm"))}
    assert [(s["name"], s["consistency"]) for s in listed["web"]["snapshots"]] == [("s1", "crash")]
    uuid = item["uuid"]
    doc = zk.get(schema.snapshot("vms", disks[0], "s1"))
    assert doc["owner"] == f"vm:{uuid}/s1" and doc["stats"]["size"] == 4 * MIB
    record = zk.get(schema.vm_snapshot(uuid, "s1"))
    assert record["meta"]["node_limit"] == [] and record["xml_version"] >= 0

    # the default name is the date; the newest comes first
    accepted(client.post(f"{BASE}/vm/web/snapshot"), "vm.create_snapshot")
    one_task(zk, settings)
    names = [s["name"] for s in vm_item(client, "web")["snapshots"]]
    assert len(names) == 2 and names[1] == "s1" and len(names[0]) == 14 and names[0].isdigit()

    # the RBD snapshots of a VM snapshot are not the storage routes' to remove or rename
    text = refused(client.delete(f"{BASE}/storage/ceph/snapshot/vms/{disks[0]}/s1"), 409, "web", "s1")
    assert "pvc vm snapshot" in text
    refused(client.put(f"{BASE}/storage/ceph/snapshot/vms/{disks[0]}/s1", params={"new_name": "x"}), 409,
            "web")
    assert "s1" in fake.list_snapshots("vms", disks[0])

    accepted(client.delete(f"{BASE}/vm/web/snapshot", params={"snapshot_name": "s1"}), "vm.remove_snapshot")
    one_task(zk, settings)
    assert [s["name"] for s in vm_item(client, "web")["snapshots"]] == names[:1]
    assert all("s1" not in fake.list_snapshots("vms", d) for d in disks)
    assert not zk.exists(schema.snapshot("vms", disks[0], "s1"))


def test_refusals_queue_nothing(client: TestClient, zk: ZK, fake: FakeStorage, settings: Settings) -> None:
    define(client, fake, "db", 2)
    ok(client.post(f"{BASE}/vm", data={"xml": vm_xml("nodisk", []), "node": "hv1"}))
    accepted(client.post(f"{BASE}/vm/db/snapshot", params={"snapshot_name": "s1"}), "vm.create_snapshot")
    one_task(zk, settings)
    before = zk.walk(schema.VM_SNAPSHOTS), zk.walk(schema.CEPH_SNAPSHOTS)
    for bad, char in (("a@b", "'@'"), ("a/b", "'/'")):
        refused(client.post(f"{BASE}/vm/db/snapshot", params={"snapshot_name": bad}), 400, "snapshot_name",
                char)
    refused(client.post(f"{BASE}/vm/db/snapshot", data={"snapshot_name": "s1"}), 400, "already exists", "db")
    refused(client.post(f"{BASE}/vm/nodisk/snapshot"), 400, "nodisk", "no RBD disks")
    refused(client.post(f"{BASE}/vm/ghost/snapshot"), 404, "ghost")
    refused(client.delete(f"{BASE}/vm/db/snapshot", params={"snapshot_name": "nope"}), 404, "nope")
    refused(client.delete(f"{BASE}/vm/db/snapshot"), 400, "snapshot_name")
    refused(client.put(f"{BASE}/vm/db/snapshot", params={"snapshot_name": "s1", "new_name": "ab1"}), 400,
            "ab1", "prefix")
    refused(client.put(f"{BASE}/vm/db/snapshot", params={"snapshot_name": "s1", "new_name": "x:y"}), 400,
            "new_name")
    ok(client.post(f"{BASE}/vm/db/state", params={"state": "start"}))
    refused(client.post(f"{BASE}/vm/db/snapshot/rollback", params={"snapshot_name": "s1"}), 400,
            "db", "state start", "Stop it first")
    assert pending(zk) == []
    assert (zk.walk(schema.VM_SNAPSHOTS), zk.walk(schema.CEPH_SNAPSHOTS)) == before


def test_rollback_restores_disks_xml_and_meta(client: TestClient, zk: ZK, fake: FakeStorage,
                                              settings: Settings) -> None:
    disks = define(client, fake, "app", 2)
    ok(client.post(f"{BASE}/vm/app/meta", params={"profile": "before"}))
    accepted(client.post(f"{BASE}/vm/app/snapshot", params={"snapshot_name": "good"}), "vm.create_snapshot")
    one_task(zk, settings)
    snapped = {d: fake.read_volume("vms", d, 0, 4096) for d in disks}
    for disk in disks:
        fake.write_volume("vms", disk, io.BytesIO(b"B" * 4096))
    ok(client.put(f"{BASE}/vm/app", data={"xml": vm_xml("app", disks, uuid_of(client, "app"), memory=512)}))
    ok(client.post(f"{BASE}/vm/app/meta", params={"profile": "after"}))
    diff = vm_item(client, "app")["snapshots"][0]["xml_diff_lines"]
    assert any(line.startswith("-") and "512" in line for line in diff)
    assert any(line.startswith("+") and "256" in line for line in diff)

    accepted(client.post(f"{BASE}/vm/app/snapshot/rollback", params={"snapshot_name": "good"}),
             "vm.rollback_snapshot")
    one_task(zk, settings)
    assert {d: fake.read_volume("vms", d, 0, 4096) for d in disks} == snapped
    item = vm_item(client, "app")
    assert item["memory"] == 256 and item["profile"] == "after"       # metadata only with_meta
    assert item["snapshots"][0]["xml_diff_lines"] == []
    accepted(client.post(f"{BASE}/vm/app/snapshot/rollback",
                         data={"snapshot_name": "good", "with_meta": "true"}), "vm.rollback_snapshot")
    one_task(zk, settings)
    assert vm_item(client, "app")["profile"] == "before"

    # a disk added after the snapshot: refused, or detached with force (the volume list follows)
    ok(client.post(f"{BASE}/storage/ceph/volume", params={"volume": "app_sdz", "pool": "vms", "size": "4M"}))
    ok(client.put(f"{BASE}/vm/app", data={"xml": vm_xml("app", [*disks, "app_sdz"], uuid_of(client, "app"))}))
    refused(client.post(f"{BASE}/vm/app/snapshot/rollback", params={"snapshot_name": "good"}), 400,
            "vms/app_sdz", "force")
    accepted(client.post(f"{BASE}/vm/app/snapshot/rollback", params={"snapshot_name": "good", "force": True}),
             "vm.rollback_snapshot")
    one_task(zk, settings)
    record = zk.get(schema.vm(uuid_of(client, "app")))
    assert record["rbd_volumes"] == [f"vms/{d}" for d in disks]


def test_a_vm_change_during_the_snapshot_is_retried(client: TestClient, zk: ZK, fake: FakeStorage,
                                                    settings: Settings,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    disks = define(client, fake, "busy", 2)
    uuid = uuid_of(client, "busy")
    real = worker_snapshots.take_disks
    calls = []

    def racing(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:     # a `vm modify` lands between the disks and the record
            ok(client.put(f"{BASE}/vm/busy", data={"xml": vm_xml("busy", disks, uuid, memory=384)}))
        return out

    monkeypatch.setattr(worker_snapshots, "take_disks", racing)
    accepted(client.post(f"{BASE}/vm/busy/snapshot", params={"snapshot_name": "s"}), "vm.create_snapshot")
    one_task(zk, settings)
    assert len(calls) == 2
    record = zk.get(schema.vm_snapshot(uuid, "s"))
    assert "384" in record["xml"]                       # the XML the disks were taken with
    assert all(fake.list_snapshots("vms", d) == ["s"] for d in disks)   # the first try's are gone


def test_running_vm_is_paused_on_its_node(client: TestClient, zk: ZK, fake: FakeStorage, settings: Settings,
                                          hv: FakeHypervisor) -> None:
    disks = define(client, fake, "live", 3)
    uuid = uuid_of(client, "live")
    zk.put(schema.vm_status(uuid), VMStatus(node="hv1", running=True).doc())
    hv.start(f"<domain type='test'><name>live</name><uuid>{uuid}</uuid><memory unit='MiB'>64</memory>"
             f"<vcpu>1</vcpu><os><type>hvm</type></os><devices/></domain>")
    body = accepted(client.post(f"{BASE}/vm/live/snapshot", params={"snapshot_name": "hot"}),
                    "vm.create_snapshot")
    assert body["run_on"] == "hv1"
    task = one_task(zk, settings)
    assert task.result["consistency"] == "paused" and task.result["pause_ms"] is not None
    assert hv.domain(uuid).state == "running"
    assert zk.get(schema.vm_snapshot(uuid, "hot"))["consistency"] == "paused"
    assert all(fake.list_snapshots("vms", d) == ["hot"] for d in disks)


def test_rename_snapshot_and_vm(client: TestClient, zk: ZK, fake: FakeStorage, settings: Settings) -> None:
    disks = define(client, fake, "old", 2)
    uuid = uuid_of(client, "old")
    accepted(client.post(f"{BASE}/vm/old/snapshot", params={"snapshot_name": "s1"}), "vm.create_snapshot")
    one_task(zk, settings)
    accepted(client.put(f"{BASE}/vm/old/snapshot", params={"snapshot_name": "s1", "new_name": "s2"}),
             "vm.rename_snapshot")
    one_task(zk, settings)
    assert [s["name"] for s in vm_item(client, "old")["snapshots"]] == ["s2"]
    assert all(fake.list_snapshots("vms", d) == ["s2"] for d in disks)
    assert zk.get(schema.snapshot("vms", disks[0], "s2"))["owner"] == f"vm:{uuid}/s2"
    assert not zk.exists(schema.snapshot("vms", disks[0], "s1"))

    # renaming the VM renames its volumes; its snapshots follow and stay usable
    ok(client.post(f"{BASE}/vm/old/rename", params={"new_name": "new"}))
    [snap] = vm_item(client, "new")["snapshots"]
    assert snap["rbd_snapshots"] == ["vms/new_sda@s2", "vms/new_sdb@s2"] and snap["xml_diff_lines"] == []
    assert zk.get(schema.snapshot("vms", "new_sda", "s2"))["owner"] == f"vm:{uuid}/s2"
    refused(client.delete(f"{BASE}/storage/ceph/snapshot/vms/new_sda/s2"), 409, "new")
    accepted(client.post(f"{BASE}/vm/new/snapshot/rollback", params={"snapshot_name": "s2"}),
             "vm.rollback_snapshot")
    one_task(zk, settings)
    assert vm_item(client, "new")["name"] == "new"

    # removing the VM forgets its snapshots; the RBD snapshots are ordinary ones again
    ok(client.delete(f"{BASE}/vm/new"))
    assert not zk.exists(schema.vm_snapshots(uuid))
    assert "owner" not in zk.get(schema.snapshot("vms", "new_sda", "s2"))
    ok(client.delete(f"{BASE}/storage/ceph/snapshot/vms/new_sda/s2"))


def test_force_remove_tolerates_missing_rbd_snapshots(client: TestClient, zk: ZK, fake: FakeStorage,
                                                      settings: Settings) -> None:
    disks = define(client, fake, "lost", 2)
    accepted(client.post(f"{BASE}/vm/lost/snapshot", params={"snapshot_name": "s"}), "vm.create_snapshot")
    one_task(zk, settings)
    fake.remove_snapshot("vms", disks[1], "s")          # gone behind PVC's back
    accepted(client.delete(f"{BASE}/vm/lost/snapshot", params={"snapshot_name": "s"}), "vm.remove_snapshot")
    task = one_task(zk, settings, "FAILURE")
    assert "not found" in task.status and "force" in task.status
    assert [s["name"] for s in vm_item(client, "lost")["snapshots"]] == ["s"]
    accepted(client.delete(f"{BASE}/vm/lost/snapshot", params={"snapshot_name": "s", "force": True}),
             "vm.remove_snapshot")
    one_task(zk, settings)
    assert vm_item(client, "lost")["snapshots"] == []
    assert fake.list_snapshots("vms", disks[0]) == []


def test_the_list_serves_snapshots_from_a_watch_cache(client: TestClient, zk: ZK, fake: FakeStorage,
                                                      settings: Settings) -> None:
    define(client, fake, "cached", 1)
    accepted(client.post(f"{BASE}/vm/cached/snapshot", params={"snapshot_name": "s1"}), "vm.create_snapshot")
    one_task(zk, settings)
    zk.cache(schema.VMS, depth=2)              # as pvcapid does; the snapshot cache follows on first use

    def listed() -> list[str]:
        items = {v["name"]: v for v in ok(client.get(f"{BASE}/vm"))}
        assert all(s["consistency"] == "crash" for s in items["cached"]["snapshots"])
        return [s["name"] for s in items["cached"]["snapshots"]]

    wait_for(lambda: listed() == ["s1"] and zk.live_cache(schema.VM_SNAPSHOTS) is not None, 10,
             message="the snapshot cache")
    accepted(client.post(f"{BASE}/vm/cached/snapshot", params={"snapshot_name": "s2"}), "vm.create_snapshot")
    one_task(zk, settings)
    wait_for(lambda: listed() == ["s2", "s1"], 10, message="the new snapshot listed")
    accepted(client.delete(f"{BASE}/vm/cached/snapshot", params={"snapshot_name": "s1"}),
             "vm.remove_snapshot")
    one_task(zk, settings)
    wait_for(lambda: listed() == ["s2"], 10, message="the removed snapshot gone from the list")


def test_a_volume_holding_vm_snapshot_disks_is_not_removed(client: TestClient, zk: ZK, fake: FakeStorage,
                                                           settings: Settings) -> None:
    disks = define(client, fake, "vol", 2)
    for name in ("s1", "s2"):
        accepted(client.post(f"{BASE}/vm/vol/snapshot", params={"snapshot_name": name}), "vm.create_snapshot")
        one_task(zk, settings)
    # the second disk leaves the VM's definition: no VM uses it, but two VM snapshots own its snapshots
    ok(client.put(f"{BASE}/vm/vol", data={"xml": vm_xml("vol", disks[:1], uuid_of(client, "vol"))}))
    volume = f"{BASE}/storage/ceph/volume/vms/{disks[1]}"
    text = refused(client.delete(volume), 409, disks[1], "snapshot 's1'", "snapshot 's2' of VM 'vol'",
                   "pvc vm snapshot remove")
    assert "with its disks" in text
    refused(client.put(volume, params={"new_name": "other"}), 409, "s1")
    assert disks[1] in fake.list_volumes("vms") and zk.exists(schema.volume("vms", disks[1]))
    for name in ("s1", "s2"):
        accepted(client.delete(f"{BASE}/vm/vol/snapshot", params={"snapshot_name": name}),
                 "vm.remove_snapshot")
        one_task(zk, settings)
    ok(client.delete(volume))
    assert not zk.exists(schema.volume("vms", disks[1]))


def test_removing_a_vm_with_its_disks_takes_its_snapshots_along(client: TestClient, zk: ZK, fake: FakeStorage,
                                                                settings: Settings) -> None:
    disks = define(client, fake, "gone", 2)
    uuid = uuid_of(client, "gone")
    accepted(client.post(f"{BASE}/vm/gone/snapshot", params={"snapshot_name": "s1"}), "vm.create_snapshot")
    one_task(zk, settings)
    ok(client.delete(f"{BASE}/vm/gone", params={"delete_disks": True}))
    assert not zk.exists(schema.vm_snapshots(uuid))
    assert all(d not in fake.list_volumes("vms") and not zk.exists(schema.volume("vms", d)) for d in disks)


def test_a_vm_modify_rename_is_followed_by_the_snapshots(client: TestClient, zk: ZK, fake: FakeStorage,
                                                        settings: Settings) -> None:
    disks = define(client, fake, "before", 2)
    uuid = uuid_of(client, "before")
    accepted(client.post(f"{BASE}/vm/before/snapshot", params={"snapshot_name": "s1"}), "vm.create_snapshot")
    one_task(zk, settings)
    # a new <name> in the XML (the disks keep their volumes): the VM is renamed, not through vm rename
    ok(client.put(f"{BASE}/vm/before", data={"xml": vm_xml("after", disks, uuid)}))
    [snap] = vm_item(client, "after")["snapshots"]
    assert snap["rbd_snapshots"] == [f"vms/{d}@s1" for d in disks]
    assert not any("<name>before<" in line for line in snap["xml_diff_lines"])
    record = zk.get(schema.vm_snapshot(uuid, "s1"))
    current = zk.get(schema.vm(uuid))["xml"]
    assert domainxml.parse(record["xml"]) == domainxml.parse(current)     # same VM, only formatted anew
    assert zk.get(schema.snapshot("vms", disks[0], "s1"))["owner"] == f"vm:{uuid}/s1"
    accepted(client.post(f"{BASE}/vm/after/snapshot/rollback", params={"snapshot_name": "s1"}),
             "vm.rollback_snapshot")
    one_task(zk, settings)
    assert vm_item(client, "after")["name"] == "after"
    assert not zk.exists(schema.vm_name("before"))


def test_two_snapshots_of_a_running_vm_at_once_take_turns(client: TestClient, zk: ZK, fake: FakeStorage,
                                                          settings: Settings, hv: FakeHypervisor,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the chaos runner: two snapshot tasks of one VM claimed together each paused it, the
    first to finish resumed it under the other, whose resume then failed ("already running")."""
    import threading
    import time

    define(client, fake, "twice", 2)
    uuid = uuid_of(client, "twice")
    zk.put(schema.vm_status(uuid), VMStatus(node="hv1", running=True).doc())
    hv.start(f"<domain type='test'><name>twice</name><uuid>{uuid}</uuid><memory unit='MiB'>64</memory>"
             f"<vcpu>1</vcpu><os><type>hvm</type></os><devices/></domain>")
    real = worker_snapshots._snap_all

    def slow(*args: Any, **kwargs: Any) -> Any:
        assert hv.domain(uuid).state == "paused"       # every snapshot is taken while paused
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(worker_snapshots, "_snap_all", slow)
    for name in ("a", "b"):
        accepted(client.post(f"{BASE}/vm/twice/snapshot", params={"snapshot_name": name}),
                 "vm.create_snapshot")
    worker = Worker(zk, settings)
    claimed = [tasks_mod.claim(zk, task, version, "hv1") for task, version in tasks_mod.load_tasks(zk)
               if task.state == "PENDING"]
    threads = [threading.Thread(target=worker._execute, args=(task,)) for task in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    worker.pool.shutdown(wait=False)
    done = [tasks_mod.get_task(zk, task.id) for task in claimed]
    assert [t.state for t in done] == ["SUCCESS", "SUCCESS"], [t.status for t in done]
    assert all(t.result["consistency"] == "paused" for t in done)
    assert hv.domain(uuid).state == "running"


def test_a_removal_cut_short_is_finished_by_a_repeat(client: TestClient, zk: ZK, fake: FakeStorage,
                                                     settings: Settings) -> None:
    """A worker died after marking the snapshot and removing its first RBD snapshot: the record
    says so, refuses a rollback, and a repeat without force finishes the removal."""
    from pvc.cluster import vmsnapshots

    disks = define(client, fake, "cut", 2)
    accepted(client.post(f"{BASE}/vm/cut/snapshot", params={"snapshot_name": "s"}), "vm.create_snapshot")
    one_task(zk, settings)
    uuid = uuid_of(client, "cut")
    _record, resumed = vmsnapshots.mark_removing(zk, uuid, "s")
    assert not resumed
    fake.remove_snapshot("vms", disks[0], "s")                  # ... and then the worker died
    message = refused(client.post(f"{BASE}/vm/cut/snapshot/rollback", params={"snapshot_name": "s"}), 400)
    assert "is being removed" in message and "Repeat its removal" in message
    accepted(client.delete(f"{BASE}/vm/cut/snapshot", params={"snapshot_name": "s"}), "vm.remove_snapshot")
    one_task(zk, settings)
    assert vm_item(client, "cut")["snapshots"] == []
    assert fake.list_snapshots("vms", disks[1]) == []


def test_a_remove_refused_for_a_missing_rbd_snapshot_changes_nothing(
        client: TestClient, zk: ZK, fake: FakeStorage, settings: Settings) -> None:
    from pvc.cluster import vmsnapshots

    disks = define(client, fake, "keep", 2)
    accepted(client.post(f"{BASE}/vm/keep/snapshot", params={"snapshot_name": "s"}), "vm.create_snapshot")
    one_task(zk, settings)
    fake.remove_snapshot("vms", disks[0], "s")
    accepted(client.delete(f"{BASE}/vm/keep/snapshot", params={"snapshot_name": "s"}), "vm.remove_snapshot")
    task = one_task(zk, settings, "FAILURE")
    assert "Nothing was changed" in task.status and f"vms/{disks[0]}@s: not found" in task.status
    assert vmsnapshots.get_snapshot(zk, uuid_of(client, "keep"), "s").state == "ready"
    assert fake.list_snapshots("vms", disks[1]) == ["s"]
