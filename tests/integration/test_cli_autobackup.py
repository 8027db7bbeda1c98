"""`pvc vm autobackup` / `pvc vm automirror` against a real pvcapid: the options reach the task,
--cron prints nothing, an unconfigured cluster is a clear error."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from pvc.cluster import tasks
from pvc.core.zk import ZK
from tests.conftest import Api, start_daemon, wait_for
from tests.integration.test_api_autobackup import AUTOBACKUP, AUTOMIRROR
from tests.integration.test_cli_api import Pvc


def start_api(daemons, config: Path) -> Api:
    settings = yaml.safe_load(config.read_text())
    daemon = start_daemon(daemons, "pvc.api.daemon", config)
    base = f"http://127.0.0.1:{settings['api']['listen']['port']}"

    def up() -> bool:
        if not daemon.running:
            raise AssertionError(f"pvcapid exited:\n{daemon.output()}")
        try:
            return httpx.get(base + "/api/v1/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 30, message="pvcapid to answer")
    return Api(daemon, base)


def cli_for(api: Api, tmp_path: Path) -> Pvc:
    client = tmp_path / "client"
    client.mkdir(exist_ok=True)
    shutil.copy(api.daemon.config, client / "pvc.conf")
    return Pvc(client, client / "pvc.conf")


@pytest.fixture
def pvc(daemons, config_factory, zk: ZK, tmp_path: Path) -> Iterator[Pvc]:
    api = start_api(daemons, config_factory("hv1", autobackup=AUTOBACKUP, automirror=AUTOMIRROR))
    yield cli_for(api, tmp_path)
    api.daemon.stop()


def auto_tasks(zk: ZK, kind: str) -> list[tasks.TaskRecord]:
    return [t for t, _ in tasks.load_tasks(zk) if t.kind == kind]


def test_autobackup_options_and_cron(pvc: Pvc, zk: ZK) -> None:
    result = pvc("vm", "autobackup", "--cron", "--force-full", "--cleanup",
                 "--email-report", "a@x.org, b@x.org")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""               # cron mode: nothing at all
    (task,) = auto_tasks(zk, "cluster.autobackup")
    assert task.args["force_full"] and task.args["cleanup"]
    assert task.args["email_recipients"] == ["a@x.org", "b@x.org"]
    result = pvc("vm", "autobackup", "--no-wait")
    assert result.returncode == 0 and "Using connection" in result.stderr      # the header, without --cron
    assert result.stdout.startswith("Task ID: ") and "assigned to node" in result.stdout
    assert len(auto_tasks(zk, "cluster.autobackup")) == 2


def test_automirror_options(pvc: Pvc, zk: ZK) -> None:
    result = pvc("vm", "automirror", "--cron", "--email-report", "ops@x.org", "--email-errors-only")
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stderr
    (task,) = auto_tasks(zk, "cluster.automirror")
    assert task.args["email_recipients"] == ["ops@x.org"] and task.args["email_errors_only"]


def test_not_configured(daemons, config_factory, zk: ZK, tmp_path: Path) -> None:
    pvc = cli_for(start_api(daemons, config_factory("hv1")), tmp_path)
    result = pvc("vm", "autobackup", "--no-wait")
    assert result.returncode == 1 and "not configured" in result.stderr
    result = pvc("vm", "automirror", "--cron")
    assert result.returncode == 1 and "not configured" in result.stderr
