"""POST /vm/autobackup and /vm/automirror: 202 and a task (as upstream), recipients as a list,
404 naming the section when it is not configured, never taken for a VM definition."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pvc.api.app import create_app
from pvc.cluster import tasks
from pvc.core.config import load_config
from pvc.core.zk import ZK
from tests.conftest import API_TOKEN

BASE = "/api/v1"
AUTOBACKUP = {"backup_root_path": "/srv/backups", "backup_tags": ["backup"],
              "backup_schedule": {"full_interval": 7, "full_retention": 2}}
AUTOMIRROR = {"destinations": {"d1": {"address": "10.0.0.1", "key": "a-very-secret-destination-key"}},
              "default_destination": "d1", "mirror_tags": ["mirror"], "keep_snapshots": 7}


def make_client(config_factory: Callable[..., Path], zk: ZK, **sections: object) -> TestClient:
    app = create_app(load_config(str(config_factory(**sections))), zk)
    return TestClient(app, headers={"X-Api-Key": API_TOKEN})


@pytest.fixture
def client(config_factory: Callable[..., Path], zk: ZK) -> Iterator[TestClient]:
    with make_client(config_factory, zk, autobackup=AUTOBACKUP, automirror=AUTOMIRROR) as test_client:
        yield test_client


def test_autobackup_queues_the_task(client: TestClient, zk: ZK) -> None:
    response = client.post(f"{BASE}/vm/autobackup?force_full=true&cleanup=yes"
                           "&email_recipients=a@example.com,b@example.com&email_recipients=c@example.com")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["task_name"] == "cluster.autobackup" and body["run_on"].endswith("(primary)")
    assert response.headers["location"] == f"{BASE}/tasks/{body['task_id']}"
    task = tasks.get_task(zk, body["task_id"])
    assert task.target == "primary"
    assert task.args["force_full"] is True and task.args["cleanup"] is True
    assert task.args["email_recipients"] == ["a@example.com", "b@example.com", "c@example.com"]
    default = client.post(f"{BASE}/vm/autobackup")
    assert default.status_code == 202
    assert tasks.get_task(zk, default.json()["task_id"]).args["force_full"] is False


def test_automirror_queues_the_task_without_the_key(client: TestClient, zk: ZK) -> None:
    response = client.post(f"{BASE}/vm/automirror", data={"email_recipients": "ops@example.com",
                                                           "email_errors_only": "true"})
    assert response.status_code == 202, response.text
    task = tasks.get_task(zk, response.json()["task_id"])
    assert task.kind == "cluster.automirror"
    assert task.args["email_recipients"] == ["ops@example.com"] and task.args["email_errors_only"] is True
    assert "a-very-secret-destination-key" not in str(task.doc())


def test_bad_recipient_is_refused(client: TestClient, zk: ZK) -> None:
    response = client.post(f"{BASE}/vm/autobackup", params={"email_recipients": "a@b.c\nBcc: x@evil"})
    assert response.status_code == 400
    assert "email_recipients" in response.json()["message"]
    assert not [t for t, _ in tasks.load_tasks(zk) if t.kind == "cluster.autobackup"]


def test_not_configured_is_404_and_queues_nothing(config_factory: Callable[..., Path], zk: ZK) -> None:
    with make_client(config_factory, zk) as client:
        for route in ("autobackup", "automirror"):
            section = f"'{route}' section"
            response = client.post(f"{BASE}/vm/{route}", data={"xml": "<domain/>"})
            assert response.status_code == 404, response.text
            assert section in response.json()["message"] and "not configured" in response.json()["message"]
            assert client.get(f"{BASE}/vm/{route}").status_code == 404            # no VM was defined
    assert not [t for t, _ in tasks.load_tasks(zk) if t.kind.startswith("cluster.auto")]
