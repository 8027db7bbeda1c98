"""`pvc vm snapshot create/remove/rollback/rename` against a fake API: the requests sent, the task
followed or only queued, the confirmations, and `pvc vm info`'s snapshot table."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.unit.test_cli_flows import FakeApi, pvc
from tests.unit.test_cli_vm import run, serve_vm, vm_item


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.sleep", lambda _s: None)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "pvc.json").write_text(json.dumps({"c1": {
        "description": "test", "host": "pvc.example", "port": 7370, "scheme": "http", "api_key": "KEY"}}))
    return {"PVC_CLIENT_DIR": str(tmp_path), "PVC_CONFIG_FILE": str(tmp_path / "none.conf")}

ACCEPTED = {"task_id": "5a5a5a5a", "task_name": "vm.create_snapshot", "run_on": "hv1"}


def task(api: FakeApi, method: str, path: str, kind: str) -> None:
    api.on(method, path, httpx.Response(202, json={**ACCEPTED, "task_name": kind}))
    api.on("GET", "/tasks/5a5a5a5a", {"state": "SUCCESS", "current": 3, "total": 3, "status": "Done"})


def test_create_waits_or_queues(api: FakeApi, env: dict[str, str]) -> None:
    task(api, "POST", "/vm/web1/snapshot", "vm.create_snapshot")
    result = run(api, env, "vm", "snapshot", "create", "web1", "s1")
    assert result.exit_code == 0 and result.stdout.strip() == "SUCCESS: Done"
    assert dict(api.sent("POST", "/vm/web1/snapshot")[0].url.params) == {"snapshot_name": "s1"}
    result = run(api, env, "vm", "snapshot", "create", "web1", "--no-wait")
    assert result.stdout.strip() == "Task ID: 5a5a5a5a assigned to node hv1"
    assert dict(api.sent("POST", "/vm/web1/snapshot")[1].url.params) == {}     # the API picks the date


def test_remove_and_rollback_confirm(api: FakeApi, env: dict[str, str]) -> None:
    task(api, "DELETE", "/vm/web1/snapshot", "vm.remove_snapshot")
    task(api, "POST", "/vm/web1/snapshot/rollback", "vm.rollback_snapshot")
    result = pvc(api, env, "vm", "snapshot", "remove", "web1", "s1", input="n\n")
    assert result.exit_code == 1 and not api.sent("DELETE", "/vm/web1/snapshot")
    assert run(api, env, "vm", "snapshot", "remove", "web1", "s1", "-y", "--force").exit_code == 0
    assert dict(api.sent("DELETE", "/vm/web1/snapshot")[0].url.params) == {"snapshot_name": "s1",
                                                                         "force": "true"}
    result = pvc(api, env, "vm", "snapshot", "rollback", "web1", "s1", input="n\n")
    assert result.exit_code == 1 and not api.sent("POST", "/vm/web1/snapshot/rollback")
    assert run(api, env, "vm", "snapshot", "rollback", "web1", "s1", "-y", "--with-meta").exit_code == 0
    assert dict(api.sent("POST", "/vm/web1/snapshot/rollback")[0].url.params) == {
        "snapshot_name": "s1", "with_meta": "true"}


def test_rename_and_refusal(api: FakeApi, env: dict[str, str]) -> None:
    task(api, "PUT", "/vm/web1/snapshot", "vm.rename_snapshot")
    assert run(api, env, "vm", "snapshot", "rename", "web1", "s1", "s2").exit_code == 0
    assert dict(api.sent("PUT", "/vm/web1/snapshot")[0].url.params) == {"snapshot_name": "s1",
                                                                      "new_name": "s2"}
    api.on("POST", "/vm/web1/snapshot", httpx.Response(400, json={
        "message": "snapshot_name: 'a@b' may not contain '@'"}))
    result = run(api, env, "vm", "snapshot", "create", "web1", "a@b")
    assert result.exit_code != 0 and "may not contain '@'" in result.stderr


@pytest.mark.parametrize("fmt", ["pretty", "long"])
def test_info_lists_snapshots(api: FakeApi, env: dict[str, str], fmt: str) -> None:
    snaps = [{"name": "s2", "timestamp": "1700000100", "age": 3700, "rbd_snapshots": ["vms/web1_sda@s2"],
              "xml_diff_lines": ["--- current", "+++ snapshot", "@@ -1 +1 @@", "-a", "+b", "+c"],
              "consistency": "fs-frozen"}]
    serve_vm(api, vm_item(snapshots=snaps))
    out = run(api, env, "vm", "info", "web1", "-f", fmt).stdout
    assert "XML Changes" in out and "1h 1m" in out and "+2/-1" in out
    assert "Consistency" in out and "fs-frozen" in out
