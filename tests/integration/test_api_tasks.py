"""Task routes: list, status, log, cancellation and the self-test task."""

from __future__ import annotations

import pytest

from pvc.cluster import tasks
from pvc.core import schema
from pvc.core.errors import InvalidInput
from pvc.core.zk import ZK
from tests.conftest import Api, raw_task
from tests.integration.apihelp import raw_request


def test_pending_task_status_in_pvc_shape(api: Api, zk: ZK) -> None:
    task = raw_task(zk, "vm.flush_locks", {"domain": "web"})
    response = api.get(f"/tasks/{task.id}")
    assert response.status_code == 200
    assert response.json() == {"state": "PENDING", "current": 0, "total": 1, "status": "Pending job start"}


def test_running_and_finished_task_status(api: Api, zk: ZK) -> None:
    zk.put(schema.PRIMARY_NODE, "hv1")
    zk.put(schema.node("hv1"), {"name": "hv1"})
    task = raw_task(zk, "storage.benchmark", {"pool": "vms"}, total=10)
    _, version = next((t, v) for t, v in tasks.load_tasks(zk) if t.id == task.id)
    assert tasks.claim(zk, task, version, "hv1") is not None
    tasks.update(zk, task.id, "hv1", current=4, status="Running write test")
    assert api.get(f"/tasks/{task.id}").json() == {"state": "RUNNING", "current": 4, "total": 10,
                                                   "status": "Running write test"}
    tasks.finish(zk, task.id, "hv1", "SUCCESS", "Benchmark finished", result={"iops": 1000})
    assert api.get(f"/tasks/{task.id}").json() == {"state": "SUCCESS", "current": 10, "total": 10,
                                                   "status": "Benchmark finished", "result": {"iops": 1000}}
    failed = raw_task(zk, "osd.add")
    _, version = next((t, v) for t, v in tasks.load_tasks(zk) if t.id == failed.id)
    tasks.claim(zk, failed, version, "hv1")
    tasks.finish(zk, failed.id, "hv1", "FAILURE", "OSDAddError: no such device")
    assert api.get(f"/tasks/{failed.id}").json() == {"state": "FAILURE", "current": 1, "total": 1,
                                                     "status": "OSDAddError: no such device"}


def test_unknown_task_is_404(api: Api) -> None:
    for path in ("/tasks/deadbeef", "/tasks/deadbeef/log", "/tasks/..", "/tasks/../log", "/tasks/%00",
                 "/tasks/%ED%A0%80"):
        status, body = raw_request(api, "GET", path)
        assert status == 404, (path, body)
        assert "message" in body
    assert api.delete("/tasks/deadbeef").status_code == 404


def test_list_active_and_reserved(api: Api, zk: ZK) -> None:
    zk.put(schema.PRIMARY_NODE, "hv1")
    zk.put(schema.node("hv1"), {"name": "hv1"})
    zk.put(schema.node("hv2"), {"name": "hv2"})
    empty = api.get("/tasks")
    assert empty.status_code == 200
    assert empty.json() == {"active": {}, "reserved": {}, "scheduled": {}}
    waiting = raw_task(zk, "cluster.autobackup")
    on_hv2 = raw_task(zk, "osd.add", {"device": "/dev/sdb"}, target="hv2")
    running = raw_task(zk, "storage.benchmark")
    _, version = next((t, v) for t, v in tasks.load_tasks(zk) if t.id == running.id)
    tasks.claim(zk, running, version, "hv1")
    body = api.get("/tasks").json()
    assert [t["id"] for t in body["active"]["pvcworkerd@hv1"]] == [running.id]
    assert [t["id"] for t in body["reserved"]["pvcworkerd@hv1"]] == [waiting.id]
    item = body["reserved"]["pvcworkerd@hv2"][0]
    assert item["id"] == on_hv2.id and item["name"] == "osd.add"
    assert item["kwargs"] == {"device": "/dev/sdb"}


def test_cancel(api: Api, zk: ZK) -> None:
    zk.put(schema.node("hv1"), {"name": "hv1"})
    pending = raw_task(zk, "vm.create_snapshot")
    response = api.delete(f"/tasks/{pending.id}")
    assert response.status_code == 200
    assert response.json() == {"message": f"Task {pending.id} cancelled."}
    assert api.get(f"/tasks/{pending.id}").json()["state"] == "CANCELLED"
    again = api.delete(f"/tasks/{pending.id}")
    assert again.status_code == 400
    assert "already finished" in again.json()["message"]
    running = raw_task(zk, "vm.export_snapshot")
    _, version = next((t, v) for t, v in tasks.load_tasks(zk) if t.id == running.id)
    tasks.claim(zk, running, version, "hv1")
    response = api.delete(f"/tasks/{running.id}")
    assert response.status_code == 200
    assert response.json() == {"message": f"Cancellation of running task {running.id} requested."}
    assert tasks.get_task(zk, running.id).cancel_requested is True
    assert api.get(f"/tasks/{running.id}").json()["state"] == "RUNNING"


def test_task_log(api: Api, zk: ZK) -> None:
    task = raw_task(zk, "provisioner.create")
    assert api.get(f"/tasks/{task.id}/log").json() == {"id": task.id, "log": []}
    tasks.append_log(zk, task.id, "creating disks", "writing image")
    body = api.get(f"/tasks/{task.id}/log").json()
    assert body["id"] == task.id
    assert [line.split(" ", 2)[2] for line in body["log"]] == ["creating disks", "writing image"]


def test_selftest_is_202_with_location(api: Api, zk: ZK) -> None:
    response = api.post("/tasks/selftest")
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"task_id", "task_name", "run_on"}
    assert body["task_name"] == "cluster.selftest"
    assert body["run_on"] == "none (primary)"
    assert len(body["task_id"]) == 8
    assert response.headers["location"] == f"/api/v1/tasks/{body['task_id']}"
    record = tasks.get_task(zk, body["task_id"])
    assert record.kind == "cluster.selftest" and record.target == "primary"
    zk.put(schema.PRIMARY_NODE, "hv2")
    assert api.post("/tasks/selftest").json()["run_on"] == "hv2 (primary)"
    status = api.get(response.headers["location"].removeprefix("/api/v1"))
    assert status.json()["state"] == "PENDING"


def test_submit_checks_arguments_against_the_kind(zk: ZK) -> None:
    """Typed task arguments: an unknown kind, a missing or unknown field, or a wrong type is
    refused when queued, naming it, and nothing is stored."""
    before = zk.children(schema.TASKS)
    for kind, args, named in (("no.such.kind", {}, "no.such.kind"),
                              ("osd.remove", {}, "osd_id"),
                              ("osd.remove", {"osd_id": "x"}, "osd_id"),
                              ("node.selftest", {"surprise": 1}, "surprise")):
        with pytest.raises(InvalidInput) as refused:
            tasks.submit(zk, kind, args)
        assert named in refused.value.message
    assert zk.children(schema.TASKS) == before
    task = tasks.submit(zk, "osd.remove", {"osd_id": "3"})
    assert task.args == {"osd_id": 3, "force": False}
