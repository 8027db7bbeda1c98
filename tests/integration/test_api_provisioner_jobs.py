"""Provisioning job routes in-process: create (202 + Location), status list/element, cancel."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pvc.adapters.ceph.fake import FakeStorage
from pvc.api.app import create_app
from pvc.cluster import tasks
from pvc.core import schema
from pvc.core.config import load_config
from pvc.core.zk import ZK
from tests.conftest import API_TOKEN
from tests.integration.apihelp import ok, refused, standard_cluster

BASE = "/api/v1/provisioner"


@pytest.fixture
def client(config_factory: Callable[..., Path], zk: ZK) -> Iterator[TestClient]:
    standard_cluster(zk, None)
    zk.put(schema.profile("prof"), {"id": 1, "name": "prof", "profile_type": "provisioner",
                                    "system_template": "small", "script": "noop", "arguments": []})
    app = create_app(load_config(str(config_factory())), zk, storage=FakeStorage())
    with TestClient(app, headers={"X-Api-Key": API_TOKEN}) as test_client:
        yield test_client


def test_create_queues_a_task_on_the_primary(client: TestClient, zk: ZK) -> None:
    response = client.post(f"{BASE}/create", params={"name": "web1", "profile": "prof", "start_vm": "false",
                                                     "arg": ["a=1", "b=x=y"]})
    body = ok(response, 202)
    assert body["task_name"] == "provisioner.create" and body["run_on"] == "hv1 (primary)"
    assert response.headers["Location"] == f"/api/v1/tasks/{body['task_id']}"
    task = tasks.get_task(zk, body["task_id"])
    assert task.target == "primary"
    assert task.args == {"vm_name": "web1", "vm_profile": "prof", "define_vm": True, "start_vm": False,
                         "script_run_args": ["a=1", "b=x=y"]}
    # form fields work too; --no-define implies --no-start
    body = ok(client.post(f"{BASE}/create", data={"name": "web2", "profile": "prof", "define_vm": "no"}), 202)
    assert tasks.get_task(zk, body["task_id"]).args["start_vm"] is False

    jobs = ok(client.get(f"{BASE}/status"))
    assert [j["vm_name"] for j in jobs] == ["web1", "web2"]
    assert jobs[0]["state"] == "PENDING" and jobs[0]["vm_profile"] == "prof"
    assert ok(client.get(f"{BASE}/status/{body['task_id']}")) == {
        "state": "PENDING", "current": 0, "total": 1, "status": "Pending job start"}
    assert "cancelled" in ok(client.delete(f"{BASE}/status/{body['task_id']}"))["message"]
    assert [j["vm_name"] for j in ok(client.get(f"{BASE}/status"))] == ["web1"]
    assert len(ok(client.get(f"{BASE}/status", params={"all": "true"}))) == 2
    refused(client.delete(f"{BASE}/status/{body['task_id']}"), 400, "already finished")


@pytest.mark.parametrize(("params", "text"), [
    ({"profile": "prof"}, "name: required"),
    ({"name": "web1"}, "profile: required"),
    ({"name": "bad name", "profile": "prof"}, "name"),
    ({"name": "web1", "profile": "nope"}, "does not exist"),
    ({"name": "web1", "profile": "prof", "arg": "novalue"}, "arg: 'novalue' is not in key=value form"),
    ({"name": "web1", "profile": "prof", "start_vm": "maybe"}, "start_vm"),
])
def test_create_refuses_bad_input(client: TestClient, zk: ZK, params: dict[str, str], text: str) -> None:
    refused(client.post(f"{BASE}/create", params=params), 400, text)
    assert not [t for t, _v in tasks.load_tasks(zk)]


def test_status_of_unknown_or_other_tasks(client: TestClient, zk: ZK) -> None:
    refused(client.get(f"{BASE}/status/nope"), 404, "Provisioner job nope not found")
    other = tasks.submit(zk, "cluster.selftest", {})
    refused(client.get(f"{BASE}/status/{other.id}"), 404, "cluster.selftest")
    refused(client.delete(f"{BASE}/status/{other.id}"), 404, "not found")
