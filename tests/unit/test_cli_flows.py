"""Command flows against a scripted HTTP transport (httpx.MockTransport): what is sent, what is shown.

These check the client's side of the protocol (params vs form body, 202 task handling, retries,
error reporting); the real API is exercised in tests/integration/test_cli_*.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from pvc.cli.main import cli

Handler = Callable[[httpx.Request], httpx.Response]
CLEAN_ENV: dict[str, str | None] = {name: None for name in (
    "PVC_CONNECTION", "PVC_DEBUG", "PVC_QUIET", "PVC_SILENT", "PVC_UNSAFE", "PVC_COLOUR")}


class FakeApi:
    """Routes (method, path) to canned answers or callables and records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Any] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, answer: Any) -> None:
        self.routes[(method, "/api/v1" + path)] = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.routes.get((request.method, request.url.path))
        if answer is None:
            return httpx.Response(404, json={"detail": "Not Found"})
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json=answer)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == "/api/v1" + path]


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


def pvc(api: Handler, env: dict[str, str], *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, env=CLEAN_ENV,
                              obj={"transport": httpx.MockTransport(api), "env": env, "no_audit": True})


def test_headers_and_json_status(api: FakeApi, env: dict[str, str]) -> None:
    status = {"cluster_name": "c", "cluster_health": {"health": 100, "messages": []}}
    api.on("GET", "/status", status)
    result = pvc(api, env, "-q", "cluster", "status", "-f", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == status
    assert result.stderr == ""  # --quiet: no connection header
    request = api.requests[0]
    assert request.headers["X-Api-Key"] == "KEY"
    assert request.headers["User-Agent"].startswith("pvc-client-cli/")
    assert str(request.url) == "http://pvc.example:7370/api/v1/status"


def test_connection_header_on_stderr(api: FakeApi, env: dict[str, str]) -> None:
    api.on("GET", "/status", {"cluster_name": "c"})
    result = pvc(api, env, "cluster", "status", "-f", "json")
    assert 'Using connection "c1"' in result.stderr and "Using" not in result.stdout


def test_api_error_printed_once_to_stderr(api: FakeApi, env: dict[str, str]) -> None:
    message = "Node hv3 is not a coordinator and cannot be a primary node."
    api.on("POST", "/node/hv3/coordinator-state", httpx.Response(400, json={"message": message}))
    result = pvc(api, env, "-q", "node", "primary", "hv3")
    assert result.exit_code == 1
    assert result.stderr == "Node hv3 is not a coordinator and cannot be a primary node.\n"
    assert result.stdout == ""
    assert api.requests[0].url.params["state"] == "primary"


def test_silent_suppresses_even_errors(api: FakeApi, env: dict[str, str]) -> None:
    api.on("GET", "/status", httpx.Response(400, json={"message": "nope"}))
    result = pvc(api, env, "-s", "cluster", "status")
    assert result.exit_code == 1 and result.output == ""


def test_get_retried_on_5xx_but_post_is_not(api: FakeApi, env: dict[str, str]) -> None:
    answers = iter([httpx.Response(503), httpx.Response(502),
                    httpx.Response(200, json={"cluster_name": "c"})])
    api.on("GET", "/status", lambda _r: next(answers))
    result = pvc(api, env, "-q", "cluster", "status", "-f", "json")
    assert result.exit_code == 0 and len(api.sent("GET", "/status")) == 3
    api.on("POST", "/status", httpx.Response(503, json={"message": "ZooKeeper unavailable"}))
    result = pvc(api, env, "-q", "cluster", "maintenance", "on")
    assert result.exit_code == 1 and result.stderr.strip() == "ZooKeeper unavailable"
    assert len(api.sent("POST", "/status")) == 1


def test_unreachable_api_is_one_clear_line(env: dict[str, str]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    result = pvc(refuse, env, "-q", "node", "list")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        'Cannot reach the PVC API of connection "c1" at http://pvc.example:7370/api/v1: connection refused']


def test_maintenance_sends_state_as_query(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", "/status", {"message": "Successfully set cluster in maintenance mode"})
    result = pvc(api, env, "-q", "cluster", "maintenance", "on")
    assert result.stdout == "Successfully set cluster in maintenance mode\n"
    assert api.requests[-1].url.params["state"] == "true"
    pvc(api, env, "-q", "cluster", "maintenance", "off")
    assert api.requests[-1].url.params["state"] == "false"


def test_backup_and_restore(api: FakeApi, env: dict[str, str], tmp_path: Path) -> None:
    dump = {"/schema/version": "1", "/config/cluster": '{"name": "c"}'}
    api.on("GET", "/backup", json.dumps(dump))  # PVC double-encodes the body
    target = tmp_path / "backup.json"
    result = pvc(api, env, "-q", "cluster", "backup", "-f", str(target))
    assert result.exit_code == 0 and f'Backup written to file "{target}"' in result.stdout
    assert json.loads(target.read_text()) == dump
    assert (target.stat().st_mode & 0o777) == 0o600
    assert json.loads(pvc(api, env, "-q", "cluster", "backup").stdout) == dump

    api.on("POST", "/restore", {"message": "Restore completed successfully"})
    result = pvc(api, env, "-q", "cluster", "restore", "-f", str(target), "--yes")
    assert result.exit_code == 0 and "Restore completed" in result.stdout
    request = api.sent("POST", "/restore")[0]
    assert request.url.params["yes-i-really-mean-it"] == "yes"
    form = dict(httpx.QueryParams(request.content.decode()))
    assert json.loads(form["cluster_data"]) == dump  # the blob goes in the form body, not the URL
    assert "cluster_data" not in request.url.params


def test_restore_rejects_bad_file_without_calling_api(api: FakeApi, env: dict[str, str],
                                                       tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    result = pvc(api, env, "-q", "cluster", "restore", "-f", str(bad), "--yes")
    assert result.exit_code == 1 and "is not valid JSON" in result.stderr
    assert api.requests == []


def test_confirmation_prompt_and_unsafe(api: FakeApi, env: dict[str, str]) -> None:
    api.on("DELETE", "/faults", {"message": "Successfully deleted 2 fault(s)."})
    result = pvc(api, env, "-q", "cluster", "fault", "delete-all", input="n\n")
    assert result.exit_code == 1 and "Aborted." in result.stderr and api.requests == []
    result = pvc(api, env, "-q", "cluster", "fault", "delete-all", input="y\n")
    assert result.exit_code == 0 and "deleted 2" in result.stdout
    result = pvc(api, env, "-q", "-u", "cluster", "fault", "delete-all")
    assert result.exit_code == 0 and len(api.sent("DELETE", "/faults")) == 2


def test_init_sends_confirmation_params(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", "/initialize", {"message": "Successfully initialized a new PVC cluster"})
    result = pvc(api, env, "-q", "cluster", "init", "--overwrite", "--yes")
    assert result.exit_code == 0
    params = api.requests[0].url.params
    assert params["overwrite"] == "true" and params["yes-i-really-mean-it"] == "yes"


def test_fault_list_empty_404_is_no_error(api: FakeApi, env: dict[str, str]) -> None:
    api.on("GET", "/faults", httpx.Response(404, json={"message": "No faults found."}))
    result = pvc(api, env, "-q", "cluster", "fault", "list", "-f", "json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert api.requests[0].url.params["sort_key"] == "last_reported"


def task_sequence(states: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    answers = iter(states)
    last: dict[str, Any] = {}

    def answer(_request: httpx.Request) -> httpx.Response:
        nonlocal last
        last = next(answers, last)
        return httpx.Response(200, json=last)

    return answer


ACCEPTED = httpx.Response(202, json={"task_id": "ab12cd34", "task_name": "cluster.selftest", "run_on": "hv1"},
                          headers={"Location": "/api/v1/tasks/ab12cd34"})


def test_selftest_waits_through_progress(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", "/tasks/selftest", ACCEPTED)
    api.on("GET", "/tasks/ab12cd34", task_sequence([
        {"state": "PENDING", "current": 0, "total": 1, "status": "Pending job start"},
        {"state": "RUNNING", "current": 1, "total": 3, "status": "Step 1"},
        {"state": "RUNNING", "current": 2, "total": 3, "status": "Step 2"},
        {"state": "SUCCESS", "current": 3, "total": 3, "status": "Self-test passed"},
    ]))
    result = pvc(api, env, "cluster", "selftest")
    assert result.exit_code == 0
    assert result.stdout == "SUCCESS: Self-test passed\n"
    assert "Task ID: ab12cd34 (cluster.selftest) assigned to node hv1" in result.stderr
    assert len(api.sent("GET", "/tasks/ab12cd34")) == 4


def test_selftest_failure_exits_nonzero(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", "/tasks/selftest", ACCEPTED)
    api.on("GET", "/tasks/ab12cd34", {"state": "FAILURE", "current": 1, "total": 1,
                                     "status": "RuntimeError: boom"})
    result = pvc(api, env, "-q", "cluster", "selftest", "--wait")
    assert result.exit_code == 1 and result.stderr == "FAILURE: RuntimeError: boom\n"


def test_selftest_no_wait(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", "/tasks/selftest", ACCEPTED)
    result = pvc(api, env, "-q", "cluster", "selftest", "--no-wait")
    assert result.stdout == "Task ID: ab12cd34 assigned to node hv1\n"
    assert api.sent("GET", "/tasks/ab12cd34") == []


def test_task_list_show_and_cancel(api: FakeApi, env: dict[str, str]) -> None:
    api.on("GET", "/tasks", {"active": {}, "reserved": {"pvcworkerd@hv1": [
        {"id": "ab12cd34", "name": "cluster.selftest", "args": [], "kwargs": {}}]}, "scheduled": {}})
    rows = json.loads(pvc(api, env, "-q", "cluster", "task", "-f", "json").stdout)
    assert rows == [{"type": "pending", "worker": "pvcworkerd@hv1", "id": "ab12cd34",
                     "name": "cluster.selftest", "args": [], "kwargs": {}}]
    api.on("GET", "/tasks/ab12cd34", {"state": "RUNNING", "current": 1, "total": 2, "status": "half"})
    shown = json.loads(pvc(api, env, "-q", "cluster", "task", "ab12cd34", "-f", "json").stdout)
    assert shown["state"] == "RUNNING"
    assert "1/2" in pvc(api, env, "-q", "cluster", "task", "ab12cd34").stdout
    api.on("DELETE", "/tasks/ab12cd34", {"message": "Task ab12cd34 cancelled."})
    result = pvc(api, env, "-q", "cluster", "task", "cancel", "ab12cd34")
    assert result.exit_code == 0 and result.stdout == "Task ab12cd34 cancelled.\n"


def test_node_flush_wait_polls_until_flushed(api: FakeApi, env: dict[str, str]) -> None:
    def node(domain_state: str) -> list[dict[str, Any]]:
        return [{"name": "hv1", "domain_state": domain_state, "coordinator_state": "primary"}]

    states = iter([node("ready"), node("flush"), node("flush"), node("flushed")])
    api.on("GET", "/node/hv1", lambda _r: httpx.Response(200, json=next(states)))
    api.on("POST", "/node/hv1/domain-state", {"message": "Flushing hypervisor hv1 of running VMs."})
    result = pvc(api, env, "node", "flush", "hv1", "--wait")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Flushing hypervisor hv1 of running VMs.\n"
    assert "done." in result.stderr
    post = api.sent("POST", "/node/hv1/domain-state")[0]
    assert post.url.params["state"] == "flush" and "wait" not in post.url.params
    assert len(api.sent("GET", "/node/hv1")) == 4


def test_node_primary_wait_skipped_when_already_primary(api: FakeApi, env: dict[str, str]) -> None:
    api.on("GET", "/node/hv1", [{"name": "hv1", "coordinator_state": "primary", "domain_state": "ready"}])
    api.on("POST", "/node/hv1/coordinator-state",
           {"message": "Node hv1 is already in primary coordinator state."})
    result = pvc(api, env, "-q", "node", "primary", "hv1", "--wait")
    assert result.exit_code == 0 and len(api.sent("GET", "/node/hv1")) == 1


def test_is_primary_exit_codes(api: FakeApi, env: dict[str, str]) -> None:
    api.on("GET", "/status/primary_node", {"primary_node": "hv1"})
    assert pvc(api, env, "-q", "node", "is-primary", "hv1").exit_code == 0
    assert pvc(api, env, "-q", "node", "is-primary", "hv2").exit_code == 1
    api.on("GET", "/status/primary_node", httpx.Response(204))
    assert pvc(api, env, "-q", "node", "is-primary", "hv1").exit_code == 1


def test_node_list_passes_filters(api: FakeApi, env: dict[str, str]) -> None:
    api.on("GET", "/node", [])
    result = pvc(api, env, "-q", "node", "list", "hv", "-ds", "run", "-vs", "flushed", "-f", "json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    params = api.requests[0].url.params
    assert dict(params) == {"limit": "hv", "daemon_state": "run", "domain_state": "flushed"}


def test_node_log_tail(api: FakeApi, env: dict[str, str]) -> None:
    api.on("GET", "/node/hv1/log", {"name": "hv1", "data": "one\ntwo\nthree"})
    result = pvc(api, env, "-q", "node", "log", "hv1", "-l", "2")
    assert result.stdout == "two\nthree\n"
    assert api.requests[0].url.params["lines"] == "2"


def test_connection_detail_tolerates_dead_clusters(api: FakeApi, env: dict[str, str], tmp_path: Path) -> None:
    api.on("GET", "/status", {"cluster_name": "c", "cluster_health": {"health": 90}, "maintenance": "false",
                              "primary_node": "hv1", "pvc_version": "1.0.3", "nodes": {"total": 3},
                              "vms": {"total": 1}, "networks": 0, "osds": {"total": 0}, "pools": 0,
                              "volumes": 0, "snapshots": 0})
    store = json.loads((tmp_path / "pvc.json").read_text())
    store["dead"] = {"description": "gone", "host": "dead.example", "port": 1, "scheme": "http",
                     "api_key": None}
    (tmp_path / "pvc.json").write_text(json.dumps(store))

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == "dead.example":
            raise httpx.ConnectError("refused", request=request)
        return api(request)

    result = pvc(route, env, "-q", "connection", "detail", "-f", "json")
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["c1"]["health"] == 90 and rows["c1"]["nodes"] == 3
    assert rows["dead"]["health"] == "N/A"


def test_unexpected_errors_are_one_line_unless_debug(env: dict[str, str]) -> None:
    def broken(_request: httpx.Request) -> httpx.Response:
        raise RuntimeError("boom")

    result = pvc(broken, env, "-q", "cluster", "status")
    assert result.exit_code == 1
    assert result.stderr == "Unexpected error: RuntimeError: boom (use --debug for details)\n"
    result = pvc(broken, env, "-q", "-v", "cluster", "status")
    assert isinstance(result.exception, RuntimeError)  # --debug lets the traceback through


def test_non_json_answer_is_a_clear_error(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", "/tasks/selftest", httpx.Response(202, text="<html>proxy</html>"))
    result = pvc(api, env, "-q", "cluster", "selftest")
    assert result.exit_code == 1 and "not JSON" in result.stderr
