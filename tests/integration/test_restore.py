"""Restore against a real ZooKeeper and pvcapid: replace mode equals the backup, the refusal while
node daemons run (and --force), the manifest's checks, and the upstream PVC 1.0 import (dry run,
all-or-nothing, --partial)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pvc.cluster import backup as backup_mod
from pvc.cluster import state
from pvc.core import schema
from pvc.core.zk import ZK
from tests.conftest import Api, wait_for
from tests.integration.apihelp import standard_cluster
from tests.integration.test_cli_api import Pvc

CONFIRM = "yes-i-really-mean-it"
EXAMPLE = Path(__file__).resolve().parents[1] / "unit" / "golden" / "upstream" / "backup-example-v15.json"
WEB1 = "3f6b2a8e-5c1d-4e7f-9a0b-1c2d3e4f5a61"
DB1 = "8d2e4f60-7a1b-4c3d-8e5f-6a7b8c9d0e72"


def _backup(api: Api, manifest: bool = False) -> dict[str, Any]:
    response = api.get("/backup", params={"manifest": "true"} if manifest else None)
    assert response.status_code == 200, response.text
    return json.loads(response.json())


def _content(api: Api) -> dict[str, Any]:
    return _backup(api)


def _restore(api: Api, data: Any, **params: Any) -> Any:
    form = {CONFIRM: "yes", "cluster_data": data if isinstance(data, str) else json.dumps(data)}
    return api.post("/restore", params={k: str(v).lower() for k, v in params.items()}, data=form)


def _cluster(zk: ZK, api: Api) -> None:
    state.ensure_cluster(zk, "test")
    standard_cluster(zk, api)


# -- our own restore -----------------------------------------------------------------------------------

def test_replace_mode_equals_the_backup(api: Api, zk: ZK) -> None:
    _cluster(zk, api)
    saved = _backup(api, manifest=True)
    manifest = saved["manifest"]
    assert manifest["format"] == "pvc-backup" and manifest["cluster"] == "test"
    assert manifest["schema_version"] == schema.SCHEMA_VERSION
    assert manifest["checksum"] == backup_mod.checksum({k: v for k, v in saved.items() if k != "manifest"})
    assert _backup(api, manifest=True) == saved      # same state, same file (time = last change)
    content = {k: v for k, v in saved.items() if k != "manifest"}
    # Changes after the backup: a new network, a changed node, a fault; and what backups never carry.
    zk.put(schema.network(300), {"vni": 300, "description": "later", "type": "bridged"})
    zk.put(schema.node("hv2"), {"name": "hv2", "daemon_state": "stop"})
    zk.put(schema.fault("LATER"), {"id": "LATER"})
    zk.put(schema.session("ab" * 32), {"user": "x"})
    zk.put(f"{schema.LOCKS}/restore-test", "held")
    zk.ensure(schema.task("t1"))
    zk.create(schema.task_owner("t1"), "worker", ephemeral=True)
    merged = _restore(api, saved, mode="merge")
    assert merged.status_code == 200, merged.text
    assert zk.exists(schema.network(300))           # merge keeps what the backup lacks
    response = _restore(api, saved)                 # replace is the default
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "Restore completed successfully"}
    # equal to the backup, but for the parent a live session's ephemeral znode needs
    assert _content(api) == {**content, schema.task("t1"): ""}
    assert not zk.exists(schema.network(300)) and not zk.exists(schema.fault("LATER"))
    assert zk.get(schema.node("hv2"))["daemon_state"] == "run"
    # never carried, so never removed
    assert zk.get(schema.session("ab" * 32)) == {"user": "x"}
    assert zk.get(f"{schema.LOCKS}/restore-test") == "held"
    assert zk.get(schema.task_owner("t1")) == "worker" and zk.exists(schema.task("t1"))


def test_send_destinations_are_neither_backed_up_nor_restored(api: Api, zk: ZK) -> None:
    """/transfers holds sealed one-shot destination keys: like /config/api_token, never in a backup,
    never written by a restore (not even from a hand-made backup), and kept by a replace."""
    _cluster(zk, api)
    zk.put(schema.transfer("live"), {"uri": "https://b", "key": "sealed:live"})
    saved = _backup(api, manifest=True)
    assert not [p for p in saved if p.startswith(schema.TRANSFERS + "/")]
    content = {k: v for k, v in saved.items() if k != "manifest"}
    content[schema.transfer("old")] = json.dumps({"uri": "https://c", "key": "sealed:old"})
    for mode in ("merge", "replace"):
        response = _restore(api, content, mode=mode)
        assert response.status_code == 200, response.text
        assert not zk.exists(schema.transfer("old"))
        assert zk.get(schema.transfer("live")) == {"uri": "https://b", "key": "sealed:live"}


def test_replace_too_large_for_one_transaction_is_staged(api: Api, zk: ZK) -> None:
    _cluster(zk, api)
    for index in range(4):
        zk.put(f"{schema.FAULTS}/BIG{index}", {"message": "x" * 300_000})
    saved = _backup(api, manifest=True)
    content = {k: v for k, v in saved.items() if k != "manifest"}
    for index in range(4):
        zk.put(f"{schema.FAULTS}/BIG{index}", {"message": "y" * 300_000})
    zk.put(f"{schema.FAULTS}/EXTRA", {"message": "z" * 300_000})
    response = _restore(api, saved)
    assert response.status_code == 200, response.text
    assert _content(api) == content
    assert not zk.exists(backup_mod.RESTORE_MARKER)


def test_refused_while_a_node_daemon_runs_then_forced(api: Api, zk: ZK) -> None:
    _cluster(zk, api)
    saved = _backup(api, manifest=True)
    zk.put(schema.network(300), {"vni": 300, "description": "later", "type": "bridged"})
    zk.create(schema.node_alive("hv3"), "", ephemeral=True)
    before = _content(api)
    refused = _restore(api, saved)
    assert refused.status_code == 400, refused.text
    message = refused.json()["message"]
    assert "node daemons are running on hv3" in message and "force" in message
    assert _content(api) == before
    forced = _restore(api, saved, force=True)
    assert forced.status_code == 200, forced.text
    assert not zk.exists(schema.network(300))
    assert zk.exists(schema.node_alive("hv3"))      # a live session's znode is never touched


def test_manifest_refusals_change_nothing(api: Api, zk: ZK) -> None:
    _cluster(zk, api)
    saved = _backup(api, manifest=True)
    zk.put(schema.network(300), {"vni": 300, "description": "later", "type": "bridged"})
    before = _content(api)
    tampered = {**saved, schema.node("hv1"): '{"name": "hv1", "daemon_state": "dead"}'}
    response = _restore(api, tampered)
    assert response.status_code == 400
    assert response.json()["message"].startswith("cluster_data: checksum mismatch")
    truncated = {k: v for k, v in saved.items() if k != schema.node("hv4")}
    assert _restore(api, truncated).json()["message"].startswith("cluster_data: checksum mismatch")
    other = {**saved, "manifest": {**saved["manifest"], "cluster": "elsewhere"}}
    response = _restore(api, other)
    assert response.status_code == 400
    assert "backup of cluster 'elsewhere', not of this cluster ('test')" in response.json()["message"]
    wrong_schema = {**saved, "manifest": {**saved["manifest"], "schema_version": 3}}
    assert "schema version 3" in _restore(api, wrong_schema).json()["message"]
    not_ours = {**saved, "manifest": {"format": "something"}}
    assert "not a pvc-backup manifest" in _restore(api, not_ours).json()["message"]
    assert _content(api) == before
    allowed = _restore(api, other, allow_other_cluster=True)
    assert allowed.status_code == 200, allowed.text
    assert not zk.exists(schema.network(300))


def test_backup_without_manifest_still_restores(api: Api, zk: ZK) -> None:
    _cluster(zk, api)
    raw_body = api.get("/backup").json()            # upstream's shape: no manifest, double-encoded
    assert "manifest" not in json.loads(raw_body)
    zk.put(schema.network(300), {"vni": 300, "description": "later", "type": "bridged"})
    response = _restore(api, raw_body)
    assert response.status_code == 200, response.text
    assert not zk.exists(schema.network(300))


# -- the upstream import ---------------------------------------------------------------------------------

def _upstream() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text())


def test_upstream_dry_run_writes_nothing(api: Api, zk: ZK) -> None:
    _cluster(zk, api)
    before = _content(api)
    zk.create(schema.node_alive("hv1"), "", ephemeral=True)   # a dry run needs no stopped daemons
    response = _restore(api, EXAMPLE.read_text(), from_upstream=True, dry_run=True)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["dry_run"] is True and report["complete"] is True and report["written"] == []
    assert report["source"] == {"cluster": "cluster1", "schema_version": 15}
    assert {(m["kind"], m["name"]) for m in report["mapped"]} >= {("vm", "web1"), ("vm", "db1"),
                                                                  ("network", "servers"), ("pool", "vms")}
    assert not any("snapshots" in d["what"] for d in report["dropped"])      # VM snapshots map now
    assert _content(api) == before


def test_upstream_import_all_or_nothing_then_partial(api: Api, zk: ZK) -> None:
    _cluster(zk, api)
    before = _content(api)
    data = _upstream()
    data[f"/domains/{DB1}/xml"] = data[f"/domains/{DB1}/xml"].replace(
        "<emulator>/usr/bin/kvm</emulator>", "<emulator>/tmp/evil-qemu</emulator>")
    refused = _restore(api, data, from_upstream=True)
    assert refused.status_code == 400, refused.text
    report = refused.json()
    assert report["written"] == [] and report["message"].startswith("Nothing was written")
    assert [(u["kind"], u["name"]) for u in report["unmapped"]] == [("vm", "db1")]
    assert "domain XML policy" in report["unmapped"][0]["reason"]
    assert _content(api) == before
    partial = _restore(api, data, from_upstream=True, partial=True)
    assert partial.status_code == 200, partial.text
    written = {(w["kind"], w["name"]) for w in partial.json()["written"]}
    assert ("vm", "web1") in written and ("vm", "db1") not in written
    assert zk.exists(schema.vm(WEB1)) and not zk.exists(schema.vm(DB1))
    assert not zk.exists(schema.vm_name("db1"))     # never half a VM


def test_upstream_import_through_the_api(api: Api, zk: ZK) -> None:
    _cluster(zk, api)
    zk.create(schema.node_alive("hv1"), "", ephemeral=True)
    refused = _restore(api, EXAMPLE.read_text(), from_upstream=True)
    assert refused.status_code == 400 and "node daemons are running on hv1" in refused.json()["message"]
    assert not zk.exists(schema.vm(WEB1))
    response = _restore(api, EXAMPLE.read_text(), from_upstream=True, force=True)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["failed"] == [] and len(report["written"]) == 9
    wait_for(lambda: api.get(f"/vm/{WEB1}").status_code == 200, 10, message="the imported VM in the API")
    item = api.get(f"/vm/{WEB1}").json()[0]
    assert item["name"] == "web1" and item["node"] == "hv1" and item["profile"] == "default-debian"
    assert {t["name"] for t in item["tags"]} == {"production", "web"}
    acls = api.get("/network/100/acl")
    assert acls.status_code == 200, acls.text
    assert [a["description"] for a in acls.json()] == ["allow-ssh"]
    leases = api.get("/network/100/lease", params={"static": "true"})
    assert [entry["mac_address"] for entry in leases.json()] == ["52:54:00:12:34:56"]
    network = api.get("/network/200").json()
    assert (network[0] if isinstance(network, list) else network)["type"] == "bridged"
    assert zk.get(schema.volume("vms", "web1_sda"))["stats"]["size"] == 42949672960
    rbd_snapshot = zk.get(schema.snapshot("vms", "web1_sda", "20250110020000"))
    assert rbd_snapshot["owner"] == f"vm:{WEB1}/20250110020000"
    record = zk.get(schema.vm_snapshot(WEB1, "20250110020000"))
    assert record["consistency"] == "crash" and record["volumes"][0]["volume"] == "web1_sda"
    assert [(s["name"], s["rbd_snapshots"], s["consistency"]) for s in item["snapshots"]] == [
        ("20250110020000", ["vms/web1_sda@20250110020000"], "crash")]
    assert zk.get(schema.fault("NODE_PLUGIN_DISK_HV3"))["health_delta"] == 5
    # Importing again: everything exists already, nothing maps, nothing is written.
    before = _content(api)
    again = _restore(api, EXAMPLE.read_text(), from_upstream=True, force=True)
    assert again.status_code == 400
    assert all("already exists in this cluster" in u["reason"] for u in again.json()["unmapped"])
    assert _content(api) == before


def test_upstream_import_needs_an_initialized_cluster(api: Api, zk: ZK) -> None:
    response = _restore(api, EXAMPLE.read_text(), from_upstream=True, dry_run=True)
    assert response.status_code == 400
    assert "not initialized" in response.json()["message"]
    assert not zk.exists(schema.vm(WEB1))


# -- the CLI ----------------------------------------------------------------------------------------------

@pytest.fixture
def pvc(api: Api, tmp_path: Path) -> Pvc:
    client = tmp_path / "client"
    client.mkdir()
    config = client / "pvc.conf"
    shutil.copy(api.daemon.config, config)
    return Pvc(client, config)


def test_cli_backup_restore_and_upstream_import(pvc: Pvc, api: Api, zk: ZK, tmp_path: Path) -> None:
    _cluster(zk, api)
    target = tmp_path / "backup.json"
    pvc.ok("-q", "cluster", "backup", "-f", str(target))
    saved = json.loads(target.read_text())
    assert saved["manifest"]["cluster"] == "test"
    zk.put(schema.network(300), {"vni": 300, "description": "later", "type": "bridged"})
    assert pvc.ok("-q", "cluster", "restore", "-f", str(target), "--yes").strip() == \
        "Restore completed successfully"
    assert not zk.exists(schema.network(300))
    tampered = {**saved, schema.node("hv1"): "{}"}
    target.write_text(json.dumps(tampered))
    result = pvc("-q", "cluster", "restore", "-f", str(target), "--yes")
    assert result.returncode == 1 and "checksum mismatch" in result.stderr
    before = _content(api)
    dry = pvc("cluster", "restore", "--from-upstream", "-f", str(EXAMPLE), "--dry-run")   # no prompt
    assert dry.returncode == 0, dry.stderr
    assert 'Upstream cluster "cluster1" (schema 15)' in dry.stdout
    assert "Dry run: nothing was written." in dry.stdout
    assert "/domains/*/snapshots/*" not in dry.stdout
    assert "VM snapshot record(s): 20250110020000" in dry.stdout
    assert _content(api) == before
    bad = _upstream()
    bad[f"/domains/{DB1}/xml"] = bad[f"/domains/{DB1}/xml"].replace("/usr/bin/kvm", "/tmp/evil-qemu")
    upstream_file = tmp_path / "upstream.json"
    upstream_file.write_text(json.dumps(bad))
    refused = pvc("-q", "cluster", "restore", "--from-upstream", "-f", str(upstream_file), "--yes")
    assert refused.returncode == 1 and "Nothing was written: 1 item(s) do not map" in refused.stderr
    assert _content(api) == before
    done = pvc.ok("-q", "cluster", "restore", "--from-upstream", "--partial", "-f", str(upstream_file),
                  "--yes")
    assert "Written: 8 item(s)." in done and zk.exists(schema.vm(WEB1))
