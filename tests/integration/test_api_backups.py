"""Snapshot export/import and legacy backup routes over real HTTP against a real ZooKeeper.

No worker runs here: the routes' synchronous checks are what is tested. A refusal answers with
the problem named and queues nothing (no task, no catalogue entry, no change under /vms).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from pvc.cli.main import cli
from pvc.cluster import backups as backups_mod
from pvc.core import schema
from pvc.core.records import BackupFile, BackupRecord, Memory, SnapshotVolume, VMSnapshotRecord
from pvc.core.zk import ZK
from tests.conftest import Api
from tests.integration.apihelp import message_text, node_record, register_nodes
from tests.integration.test_api_vms import vm_xml


def setup(zk: ZK, api: Api) -> str:
    zk.put(schema.PRIMARY_NODE, "hv1")
    register_nodes(zk, api, node_record("hv1", coordinator_state="primary",
                                        memory=Memory(total=8192, free=6000), cpu_count=8))
    response = api.post("/vm", data={"xml": vm_xml("web1", rbd=True)})
    assert response.status_code == 200, response.text
    uuid = api.get("/vm/web1").json()[0]["uuid"]
    for name, created in (("s1", 100.0), ("s2", 200.0)):
        record = VMSnapshotRecord(name=name, created=created, xml=vm_xml("web1", uuid, rbd=True),
                                  volumes=[SnapshotVolume(pool="vms", volume="web1_sda", snap=name)])
        zk.put(schema.vm_snapshot(uuid, name), record.doc())
    return uuid


def state(zk: ZK, uuid: str) -> dict[str, Any]:
    """What a refusal must leave alone."""
    return {"tasks": sorted(zk.children(schema.TASKS)), "backups": zk.children(schema.vm_backups(uuid)),
            "vm": zk.get(schema.vm(uuid)), "vms": sorted(zk.children(schema.VMS))}


def said(response: Any) -> str:
    return message_text(response.json()["message"])


@pytest.mark.parametrize("params, status, words", [
    ({"snapshot_name": "s2", "export_path": "relative/dir"}, 400, ["export_path", "absolute"]),
    ({"snapshot_name": "s2", "export_path": "/etc/pvc"}, 400, ["/etc/pvc", "allowed export root", "/srv"]),
    ({"snapshot_name": "s2", "export_path": "/tmp/../etc"}, 400, ["'..'"]),
    ({"snapshot_name": "nope", "export_path": "/tmp"}, 404, ["nope"]),
    ({"snapshot_name": "s2", "export_path": "/tmp", "incremental_parent": "s0"}, 404, ["s0"]),
    ({"snapshot_name": "s2", "export_path": "/tmp", "incremental_parent": "s2"}, 400, ["itself"]),
    ({"snapshot_name": "s2", "export_path": "/tmp", "node": "hv9"}, 400, ["hv9"]),
    ({"snapshot_name": "a@b", "export_path": "/tmp"}, 400, ["a@b"]),
])
def test_export_refusals_queue_nothing(zk: ZK, api: Api, params: dict, status: int, words: list[str]) -> None:
    uuid = setup(zk, api)
    before = state(zk, uuid)
    response = api.post("/vm/web1/snapshot/export", params=params)
    assert response.status_code == status, response.text
    text = said(response)
    assert all(w in text for w in words), text
    assert state(zk, uuid) == before


def test_export_of_a_missing_vm_is_404(zk: ZK, api: Api) -> None:
    setup(zk, api)
    response = api.post("/vm/nosuch/snapshot/export", params={"snapshot_name": "s1", "export_path": "/tmp"})
    assert response.status_code == 404


def test_export_queues_the_task_with_checked_arguments(zk: ZK, api: Api) -> None:
    uuid = setup(zk, api)
    response = api.post("/vm/web1/snapshot/export", params={"snapshot_name": "s2", "export_path": "/tmp/x/",
                                                            "incremental_parent": "s1"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["task_name"] == "vm.export_snapshot"
    assert response.headers["Location"].endswith(body["task_id"])
    task = zk.get(schema.task(body["task_id"]))
    assert task["target"] == "primary"
    assert task["args"] == {"uuid": uuid, "domain": "web1", "snapshot_name": "s2", "export_path": "/tmp/x",
                            "incremental_parent": "s1", "force": False, "legacy": False, "origin": "export"}


@pytest.mark.parametrize("vm, params, status, words", [
    ("web1", {"snapshot_name": "s1", "import_path": "/tmp"}, 400, ["web1", "already exists"]),
    ("web2", {"snapshot_name": "s1", "import_path": "/root"}, 400, ["/root", "allowed export root"]),
    ("web2", {"snapshot_name": "a/b", "import_path": "/tmp"}, 400, ["a/b"]),
    ("web2", {"snapshot_name": "s1", "import_path": "/tmp", "new_name": "web1"}, 400, ["web1"]),
    ("web2", {"snapshot_name": "s1", "import_path": "/tmp", "new_name": "bad name"}, 400, ["new_name"]),
    ("web2", {"snapshot_name": "s1", "import_path": "/tmp", "node": "hv7"}, 400, ["hv7"]),
])
def test_import_refusals_queue_nothing(zk: ZK, api: Api, vm: str, params: dict, status: int,
                                       words: list[str]) -> None:
    uuid = setup(zk, api)
    before = state(zk, uuid)
    response = api.post(f"/vm/{vm}/snapshot/import", params=params)
    assert response.status_code == status, response.text
    text = said(response)
    assert all(w in text for w in words), text
    assert state(zk, uuid) == before


def test_import_and_verify_queue_tasks(zk: ZK, api: Api) -> None:
    setup(zk, api)
    response = api.post("/vm/web1/snapshot/import", params={"snapshot_name": "s1", "import_path": "/tmp",
                                                            "verify": "true"})
    assert response.status_code == 202, response.text       # verify only: an existing VM is fine
    args = zk.get(schema.task(response.json()["task_id"]))["args"]
    assert args["verify_only"] is True and args["vm_name"] == "web1"
    response = api.post("/vm/web2/snapshot/import", params={"snapshot_name": "s1", "import_path": "/tmp",
                                                            "retain_snapshot": "false", "new_name": "web3",
                                                            "start": "false", "node": "hv1"})
    assert response.status_code == 202, response.text
    task = zk.get(schema.task(response.json()["task_id"]))
    assert task["target"] == "hv1"
    assert task["args"] == {"vm_name": "web2", "snapshot_name": "s1", "import_path": "/tmp",
                            "retain_snapshot": False, "new_name": "web3", "start": False,
                            "verify_only": False}


def test_catalogue_listing(zk: ZK, api: Api) -> None:
    uuid = setup(zk, api)
    assert api.get("/vm/web1/backup").json() == []
    backups_mod.record_backup(zk, uuid, BackupRecord(vm="web1", snapshot="s1", result=True, started=1.0,
                                                     files=[BackupFile(path="images/vms.web1_sda.rbdimg",
                                                                       size=5, sha256="a" * 64)]))
    backups_mod.record_backup(zk, uuid, BackupRecord(vm="web1", snapshot="s2", type="incremental",
                                                     parent="s1", result=False, message="disk full",
                                                     started=2.0))
    items = api.get("/vm/web1/backup").json()
    assert [(i["snapshot"], i["result"], i["parent"]) for i in items] == [("s2", False, "s1"),
                                                                          ("s1", True, None)]
    assert items[1]["files"][0]["sha256"] == "a" * 64
    assert api.get("/vm/nosuch/backup").status_code == 404


def test_legacy_routes_refuse_before_queueing(zk: ZK, api: Api) -> None:
    uuid = setup(zk, api)
    before = state(zk, uuid)
    response = api.post("/vm/web1/backup", params={"backup_path": "/etc"})
    assert response.status_code == 400 and "allowed export root" in said(response)
    ds = "20200101000000"
    response = api.post("/vm/web1/backup", params={"backup_path": "/tmp", "incremental_parent": ds})
    assert response.status_code == 400 and "20200101000000" in said(response)
    response = api.post("/vm/web1/restore", params={"backup_path": "/tmp", "backup_datestring": ds})
    assert response.status_code == 400 and "already exists" in said(response)
    response = api.delete("/vm/web1/backup", params={"backup_path": "/tmp", "backup_datestring": ds})
    assert response.status_code == 400 and "20200101000000" in said(response)
    assert state(zk, uuid) == before


def test_legacy_routes_are_deprecated_in_openapi(api: Api) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    backup = next(v for k, v in paths.items() if k.endswith("/vm/{vm}/backup"))
    restore = next(v for k, v in paths.items() if k.endswith("/vm/{vm}/restore"))
    assert backup["post"].get("deprecated") and backup["delete"].get("deprecated")
    assert restore["post"].get("deprecated")
    assert not backup["get"].get("deprecated")
    export = next(v for k, v in paths.items() if k.endswith("/vm/{vm}/snapshot/export"))
    assert "post" in export


def test_export_and_import_texts_match_the_behaviour(api: Api) -> None:
    """The parent's missing export is a warning, not a refusal; upstream imports a full or a full
    plus one incremental; the import refuses symlinks (as the CLI help says too)."""
    paths = api.get("/openapi.json").json()["paths"]
    export = next(v for k, v in paths.items() if k.endswith("/vm/{vm}/snapshot/export"))["post"]
    text = json.dumps(export)
    assert "logs a warning and exports anyway" in text and "incremental of a full" in text
    assert "must have been exported" not in text
    imported = next(v for k, v in paths.items() if k.endswith("/vm/{vm}/snapshot/import"))["post"]
    assert "symbolic links" in imported["summary"]
    runner = CliRunner()
    help_text = " ".join(runner.invoke(cli, ["vm", "snapshot", "export", "--help"]).output.split())
    assert "exports anyway" in help_text and "must have been exported" not in help_text
    assert "imports into any PVC 1.0 cluster" not in help_text
    assert "PVC 1.0 can import a full export, or an incremental whose PARENT is a full export" in help_text
    help_text = " ".join(runner.invoke(cli, ["vm", "snapshot", "import", "--help"]).output.split())
    assert "symbolic link inside the tree is refused" in help_text
