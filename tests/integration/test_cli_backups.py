"""`pvc vm snapshot export/import` and `pvc vm backup ...` against a real pvcapid and ZooKeeper (no
worker: tasks are queued, refusals shown, nothing changed by a refusal)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pvc.cluster import backups as backups_mod
from pvc.core import schema
from pvc.core.records import BackupRecord
from pvc.core.zk import ZK
from tests.conftest import Api
from tests.integration.test_api_backups import setup
from tests.integration.test_cli_api import Pvc


@pytest.fixture
def pvc(api: Api, tmp_path: Path) -> Pvc:
    client = tmp_path / "client"
    client.mkdir()
    config = client / "pvc.conf"
    shutil.copy(api.daemon.config, config)
    return Pvc(client, config)


def test_export_and_import_commands(zk: ZK, api: Api, pvc: Pvc) -> None:
    setup(zk, api)
    out = pvc.ok("vm", "snapshot", "export", "web1", "s2", "/tmp/exports", "-i", "s1", "--no-wait")
    assert "Task ID" in out
    tasks = [zk.get(schema.task(t)) for t in zk.children(schema.TASKS)]
    assert [(t["kind"], t["args"]["incremental_parent"]) for t in tasks] == [("vm.export_snapshot", "s1")]
    out = pvc.ok("vm", "snapshot", "import", "web1", "s2", "/tmp/exports", "-R", "--as", "web9", "--no-start",
                 "--no-wait")
    args = next(zk.get(schema.task(t))["args"] for t in zk.children(schema.TASKS)
                if zk.get(schema.task(t))["kind"] == "vm.import_snapshot")
    assert args["new_name"] == "web9" and args["retain_snapshot"] is False and args["start"] is False
    pvc.ok("vm", "backup", "verify", "web1", "s2", "/tmp/exports", "--no-wait")
    assert len(zk.children(schema.TASKS)) == 3


def test_refusals_are_shown_and_change_nothing(zk: ZK, api: Api, pvc: Pvc) -> None:
    setup(zk, api)
    result = pvc("vm", "snapshot", "export", "web1", "s2", "/etc")
    assert result.returncode != 0 and "allowed export root" in result.stderr + result.stdout
    result = pvc("vm", "snapshot", "import", "web1", "s2", "/tmp")
    assert result.returncode != 0 and "already exists" in result.stderr + result.stdout
    result = pvc("vm", "backup", "create", "web1", "/etc")
    assert result.returncode != 0 and "allowed export root" in result.stderr + result.stdout
    assert zk.children(schema.TASKS) == []


def test_backup_list(zk: ZK, api: Api, pvc: Pvc) -> None:
    uuid = setup(zk, api)
    assert "No backups recorded" in pvc.ok("vm", "backup", "list", "web1")
    backups_mod.record_backup(zk, uuid, BackupRecord(vm="web1", snapshot="s1", result=True, bytes=1234,
                                                     target="/tmp/exports"))
    out = pvc.ok("vm", "backup", "list")
    assert "s1" in out and "ok" in out and "/tmp/exports" in out
    assert pvc.json("vm", "backup", "list", "web1")[0]["snapshot"] == "s1"
