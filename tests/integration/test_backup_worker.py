"""Export and import (pvc.worker.backups) against a real ZooKeeper, FakeStorage and a stand-in for
the `rbd` program: the orchestration (layout, manifests, checksums, chains, catalogue, cleanup on
failure, import under a new name). The real `rbd` runs in tests/system/test_backups.py.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from pvc.adapters.ceph.fake import FakeStorage
from pvc.adapters.ceph.rbdcli import RbdCommandError
from pvc.cluster import backups as catalogue
from pvc.cluster import storage as storage_mod
from pvc.cluster import vms as vms_mod
from pvc.cluster import vmsnapshots
from pvc.core import backupformat as fmt
from pvc.core import domainxml, schema
from pvc.core.config import Settings, load_config
from pvc.core.records import Memory
from pvc.core.zk import ZK
from pvc.worker import backups
from pvc.worker import snapshots as worker_snapshots
from tests.integration.apihelp import node_record
from tests.integration.test_api_vms import vm_xml

MIB = 1 << 20


class FakeRbd:
    """Exports are a JSON header line plus the snapshot's bytes; imports rebuild the image from them."""

    def __init__(self, storage: FakeStorage) -> None:
        self.storage = storage
        self.fail_export_after = -1          # fail the export of the n-th file (0-based)
        self.fail_import_diff = False
        self.exports = 0

    def diff_bytes(self, pool: str, volume: str, snapshot: str, from_snap: str | None = None) -> int:
        return len(self.storage._snapshot(pool, volume, snapshot).data)

    def export_to(self, pool: str, volume: str, snapshot: str, out: BinaryIO, from_snap: str | None = None,
                  on_chunk: Any = None) -> int:
        if self.exports == self.fail_export_after:
            out.write(b"partial")
            raise RbdCommandError(f"rbd export of {pool}/{volume}@{snapshot} failed (rbd exit 1): boom")
        self.exports += 1
        snaps = self.storage.list_snapshots(pool, volume)
        snap = self.storage._snapshot(pool, volume, snapshot)
        if from_snap and from_snap not in snaps:
            raise RbdCommandError(f"rbd export-diff: snapshot {from_snap} not found")
        head = {"size": snap.size, "from": from_snap, "to": snapshot,
                "snaps": snaps[: snaps.index(snapshot) + 1]}
        data = json.dumps(head).encode() + b"\n" + snap.data
        out.write(data)
        if on_chunk is not None:
            on_chunk(data)
        return len(data)

    def _read(self, path: str) -> tuple[dict[str, Any], bytes]:
        raw = Path(path).read_bytes()
        head, _, data = raw.partition(b"\n")
        return json.loads(head), data

    def import_full(self, path: str, pool: str, volume: str) -> None:
        head, data = self._read(path)
        self.storage.create_volume(pool, volume, head["size"])
        self.storage.write_volume(pool, volume, io.BytesIO(data))
        for snap in head["snaps"]:
            self.storage.create_snapshot(pool, volume, snap)

    def import_diff(self, path: str, pool: str, volume: str) -> None:
        if self.fail_import_diff:
            raise RbdCommandError(f"rbd import-diff of {path} failed (rbd exit 1): boom")
        head, data = self._read(path)
        if head["from"] not in self.storage.list_snapshots(pool, volume):
            raise RbdCommandError(f"rbd import-diff: start snapshot {head['from']} missing on "
                                  f"{pool}/{volume}")
        self.storage.write_volume(pool, volume, io.BytesIO(data))
        self.storage.create_snapshot(pool, volume, head["to"])


@pytest.fixture
def env(zk: ZK, config_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    settings: Settings = load_config(str(config_factory("hv1")))
    storage = FakeStorage()
    storage.create_pool("vms", 32, 3, 2)
    rbd = FakeRbd(storage)
    monkeypatch.setattr(backups, "storage_for", lambda s: storage)
    monkeypatch.setattr(backups, "rbd_for", lambda s: rbd)
    monkeypatch.setattr(worker_snapshots, "storage_for", lambda s: storage)
    zk.put(schema.PRIMARY_NODE, "hv1")
    node = node_record("hv1", coordinator_state="primary", memory=Memory(total=8192, free=6000), cpu_count=8)
    zk.put(schema.node("hv1"), node.doc())
    zk.put(schema.pool("vms"), {"name": "vms", "pgs": 32, "tier": "default", "copies": 3, "mincopies": 2})
    record = vms_mod.define(zk, vm_xml("web1", rbd=True))
    storage_mod.add_volume(zk, storage, "vms", "web1_sda", 8 * MIB)
    root = tmp_path / "exports"
    root.mkdir()
    return {"settings": settings, "storage": storage, "rbd": rbd, "uuid": record.uuid, "root": str(root),
            "log": []}


def write(env: dict[str, Any], text: bytes) -> None:
    env["storage"].write_volume("vms", "web1_sda", io.BytesIO(text))


def snap(zk: ZK, env: dict[str, Any], name: str) -> None:
    worker_snapshots.create_snapshot(zk, env["settings"], "hv1", env["uuid"], name, "manual",
                                     env["log"].append)


def export(zk: ZK, env: dict[str, Any], name: str, parent: str | None = None, **kw: Any) -> Any:
    return backups.export_snapshot(zk, env["settings"], "hv1", env["uuid"], name, env["root"], parent,
                                   "export", env["log"].append, **kw)


def do_import(zk: ZK, env: dict[str, Any], name: str, **kw: Any) -> dict[str, Any]:
    args = {"retain": True, "new_name": None, "start": True, "verify_only": False, **kw}
    return backups.import_snapshot(zk, env["settings"], "hv1", "web1", name, env["root"], args["retain"],
                                   args["new_name"], args["start"], args["verify_only"], env["log"].append)


def chain_of_three(zk: ZK, env: dict[str, Any]) -> None:
    for index, name in enumerate(("s1", "s2", "s3")):
        write(env, f"data of {name}".encode() * (index + 1))
        snap(zk, env, name)
        export(zk, env, name, None if index == 0 else ("s1", "s2")[index - 1])


def remove_vm(zk: ZK, env: dict[str, Any]) -> None:
    for name in ("s1", "s2", "s3"):
        vmsnapshots.drop_snapshot(zk, env["uuid"], name)
    vms_mod.undefine(zk, env["uuid"], 5)
    storage_mod.remove_volume(zk, env["storage"], "vms", "web1_sda")


def test_export_chain_then_import_restores_the_data(zk: ZK, env: dict[str, Any]) -> None:
    chain_of_three(zk, env)
    tree = Path(env["root"]) / "web1"
    assert sorted(os.listdir(tree)) == ["s1", "s2", "s3"]
    assert (tree / "s1/images/vms.web1_sda.rbdimg").is_file()
    assert (tree / "s3/images/vms.web1_sda.rbddiff").is_file()
    doc = json.loads((tree / "s3/snapshot.json").read_text())
    assert doc["export_files"] == [["images/vms.web1_sda.rbddiff", 8 * MIB]]          # upstream: volume size
    assert doc["type"] == "incremental" and doc["incremental_parent"] == "s2"
    assert doc["pvc_chain"] == ["s1", "s2"]
    assert doc["vm_detail"]["name"] == "web1" and "<domain" in doc["vm_detail"]["xml"]
    entries = catalogue.list_backups(zk, env["uuid"])
    assert [(e.snapshot, e.type, e.parent, e.result) for e in entries] == [
        ("s3", "incremental", "s2", True), ("s2", "incremental", "s1", True), ("s1", "full", None, True)]
    assert all(len(f.sha256) == 64 for e in entries for f in e.files)
    expected = env["storage"].read_volume("vms", "web1_sda")
    uuid = env["uuid"]
    remove_vm(zk, env)

    result = do_import(zk, env, "s3", start=False)
    assert result["chain"] == ["s1", "s2", "s3"] and result["uuid"] == uuid and result["checksums"]
    vm = vms_mod.get_vm(zk, "web1")
    assert vm.uuid == uuid and vm.state == "stop" and vm.rbd_volumes == ["vms/web1_sda"]
    assert env["storage"].read_volume("vms", "web1_sda") == expected
    assert zk.exists(schema.volume("vms", "web1_sda"))
    records = vmsnapshots.list_snapshots(zk, uuid)
    assert sorted(r.name for r in records) == ["s1", "s2", "s3"]
    assert all(r.origin == "imported" for r in records)
    assert {r.name: r.parent for r in records} == {"s1": None, "s2": "s1", "s3": "s2"}
    owner = zk.get(schema.snapshot("vms", "web1_sda", "s3"))["owner"]
    assert owner == f"vm:{uuid}/s3"


def test_import_without_retaining_drops_the_rbd_snapshots_and_starts(zk: ZK, env: dict[str, Any]) -> None:
    chain_of_three(zk, env)
    remove_vm(zk, env)
    do_import(zk, env, "s2", retain=False)
    assert vms_mod.get_vm(zk, "web1").state == "start"
    assert env["storage"].list_snapshots("vms", "web1_sda") == []
    assert vmsnapshots.list_snapshots(zk, env["uuid"]) == []


def test_import_under_a_new_name_next_to_the_original(zk: ZK, env: dict[str, Any]) -> None:
    chain_of_three(zk, env)
    result = do_import(zk, env, "s3", new_name="web2", start=False)
    vm = vms_mod.get_vm(zk, "web2")
    assert vm.uuid != env["uuid"] and result["uuid"] == vm.uuid
    assert vm.rbd_volumes == ["vms/web2_sda"] and f"<uuid>{vm.uuid}</uuid>" in vm.xml
    assert env["storage"].read_volume("vms", "web2_sda") == env["storage"].read_volume("vms", "web1_sda")
    records = vmsnapshots.list_snapshots(zk, vm.uuid)
    assert {r.name for r in records} == {"s1", "s2", "s3"}
    assert all(v.volume == "web2_sda" for r in records for v in r.volumes)
    assert all("web2_sda" in r.xml for r in records)
    original = vms_mod.get_vm(zk, "web1")
    old_macs, new_macs = domainxml.parse(original.xml).macs, domainxml.parse(vm.xml).macs
    assert old_macs == ["52:54:00:00:00:01"] and len(new_macs) == 1
    assert new_macs[0] not in old_macs and new_macs[0].startswith("52:54:00:")    # no shared MAC
    assert all(domainxml.parse(r.xml).macs == new_macs for r in records)    # rollback keeps it


def test_import_refuses_an_existing_vm_and_changes_nothing(zk: ZK, env: dict[str, Any]) -> None:
    chain_of_three(zk, env)
    before = sorted(zk.children(schema.VMS))
    with pytest.raises(backups.ImportFailed, match="already exists"):
        do_import(zk, env, "s3")
    assert sorted(zk.children(schema.VMS)) == before


def test_corrupt_file_is_found_by_verify_and_import(zk: ZK, env: dict[str, Any]) -> None:
    chain_of_three(zk, env)
    remove_vm(zk, env)
    path = Path(env["root"]) / "web1/s2/images/vms.web1_sda.rbddiff"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    result = None
    with pytest.raises(backups.ImportFailed, match=r"s2/images/vms\.web1_sda\.rbddiff: sha256"):
        result = do_import(zk, env, "s3", verify_only=True)
    assert result is None
    with pytest.raises(backups.ImportFailed, match="nothing was imported"):
        do_import(zk, env, "s3")
    assert zk.children(schema.VMS) == [] and not zk.exists(schema.volume("vms", "web1_sda"))
    assert do_import(zk, env, "s1", verify_only=True)["verified"]          # the full alone is intact


def test_failed_import_reverts_everything(zk: ZK, env: dict[str, Any]) -> None:
    chain_of_three(zk, env)
    remove_vm(zk, env)
    env["rbd"].fail_import_diff = True
    with pytest.raises(backups.ImportFailed, match="boom"):
        do_import(zk, env, "s3")
    assert zk.children(schema.VMS) == []
    assert not zk.exists(schema.volume("vms", "web1_sda"))
    assert "web1_sda" not in env["storage"].list_volumes("vms")
    assert any("reverting" in line for line in env["log"])


def test_failed_export_removes_partial_files_and_records_the_failure(zk: ZK, env: dict[str, Any]) -> None:
    write(env, b"hello")
    snap(zk, env, "s1")
    env["rbd"].fail_export_after = 0
    with pytest.raises(backups.ExportFailed, match="boom"):
        export(zk, env, "s1")
    assert not (Path(env["root"]) / "web1/s1").exists()
    entry = catalogue.get_backup(zk, env["uuid"], "s1")
    assert not entry.result and "boom" in entry.message


def test_export_refusals(zk: ZK, env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    write(env, b"hello")
    snap(zk, env, "s1")
    with pytest.raises(backups.ExportFailed, match="no snapshot \"nope\""):
        export(zk, env, "nope")
    with pytest.raises(backups.ExportFailed, match="parent \"s0\""):
        export(zk, env, "s1", "s0")
    monkeypatch.setattr(env["rbd"], "diff_bytes", lambda *a, **k: 1 << 60)
    with pytest.raises(backups.ExportFailed, match="free space or force"):
        export(zk, env, "s1")
    assert not (Path(env["root"]) / "web1/s1").exists()
    with pytest.raises(backups.ExportFailed, match="not an existing directory"):
        backups.export_snapshot(zk, env["settings"], "hv1", env["uuid"], "s1", env["root"] + "/missing", None,
                                "export", env["log"].append)
    with pytest.raises(backups.ExportFailed, match="allowed export root"):
        backups.export_snapshot(zk, env["settings"], "hv1", env["uuid"], "s1", "/etc", None, "export",
                                env["log"].append)


def test_export_root_symlink_escape_is_refused(zk: ZK, env: dict[str, Any], tmp_path: Path) -> None:
    write(env, b"hello")
    snap(zk, env, "s1")
    link = Path(env["root"]) / "escape"
    link.symlink_to("/etc")
    with pytest.raises(backups.ExportFailed, match="resolves to '/etc'"):
        backups.export_snapshot(zk, env["settings"], "hv1", env["uuid"], "s1", str(link), None, "export",
                                env["log"].append)


def test_import_refuses_symlinks_inside_the_tree(zk: ZK, env: dict[str, Any], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file an import reads is a regular file reached without following a symlink below the
    export root: a planted link (to a file outside the export roots) is refused, naming the path."""
    chain_of_three(zk, env)
    remove_vm(zk, env)
    web1 = Path(env["root"]) / "web1"
    outside = tmp_path / "outside"
    outside.mkdir()
    # a symlinked image: refused by verify and by import, whatever the checksum says
    image = web1 / "s1/images/vms.web1_sda.rbdimg"
    moved = outside / image.name
    image.rename(moved)
    image.symlink_to(moved)
    for kw in ({"verify_only": True}, {}):
        with pytest.raises(backups.ImportFailed, match=rf"{image}: is a symbolic link"):
            do_import(zk, env, "s3", **kw)
    assert zk.children(schema.VMS) == [] and not zk.exists(schema.volume("vms", "web1_sda"))
    # a link that appears after verification is still refused before rbd reads it; all is reverted
    monkeypatch.setattr(backups, "verify_chain", lambda *a, **k: [])
    with pytest.raises(backups.ImportFailed, match=rf"{image}: is a symbolic link"):
        do_import(zk, env, "s3")
    assert zk.children(schema.VMS) == [] and "web1_sda" not in env["storage"].list_volumes("vms")
    monkeypatch.undo()
    image.unlink()
    moved.rename(image)
    # a symlinked snapshot directory: its snapshot.json is not read through it
    (web1 / "s2").rename(outside / "s2")
    (web1 / "s2").symlink_to(outside / "s2")
    with pytest.raises(backups.ImportFailed, match=rf"{web1 / 's2'}: is a symbolic link"):
        do_import(zk, env, "s3", verify_only=True)
    (web1 / "s2").unlink()
    (outside / "s2").rename(web1 / "s2")
    # a symlinked snapshot.json, a symlinked VM directory, a FIFO in place of an image
    manifest = web1 / "s3/snapshot.json"
    manifest.rename(outside / "snapshot.json")
    manifest.symlink_to(outside / "snapshot.json")
    with pytest.raises(backups.ImportFailed, match=rf"{manifest}: is a symbolic link"):
        do_import(zk, env, "s3", verify_only=True)
    manifest.unlink()
    (outside / "snapshot.json").rename(manifest)
    image.rename(moved)
    os.mkfifo(image)
    with pytest.raises(backups.ImportFailed, match=rf"{image}: is not a regular file"):
        do_import(zk, env, "s3", verify_only=True)
    image.unlink()
    moved.rename(image)
    web1.rename(outside / "web1")
    web1.symlink_to(outside / "web1")
    with pytest.raises(backups.ImportFailed, match=rf"{web1}: is a symbolic link"):
        do_import(zk, env, "s3", verify_only=True)
    web1.unlink()
    (outside / "web1").rename(web1)
    assert do_import(zk, env, "s3", verify_only=True)["verified"]      # the tree as exported is fine


def test_upstream_tree_without_checksums_imports(zk: ZK, env: dict[str, Any]) -> None:
    """snapshot.json as upstream writes it (no pvc_* keys): names from vm_detail, sizes checked."""
    chain_of_three(zk, env)
    remove_vm(zk, env)
    for name in ("s1", "s2", "s3"):
        path = Path(env["root"]) / f"web1/{name}/snapshot.json"
        doc = json.loads(path.read_text())
        path.write_text(json.dumps({k: v for k, v in doc.items() if not k.startswith("pvc_")}))
    env["log"].clear()
    result = do_import(zk, env, "s3", start=False)
    assert not result["checksums"]
    assert any("no checksums recorded" in line for line in env["log"])
    assert vms_mod.get_vm(zk, "web1").rbd_volumes == ["vms/web1_sda"]


def test_legacy_layout_round_trip(zk: ZK, env: dict[str, Any]) -> None:
    write(env, b"legacy")
    snap(zk, env, "backup_20240101000000")
    export(zk, env, "backup_20240101000000", legacy=True)
    directory = Path(env["root"]) / "web1/20240101000000"
    doc = json.loads((directory / fmt.LEGACY_JSON).read_text())
    assert doc["datestring"] == "20240101000000" and doc["result"] is True
    assert doc["backup_files"] == [["pvcdisks/vms.web1_sda.rbdimg", 8 * MIB]]       # the volume's size
    vmsnapshots.drop_snapshot(zk, env["uuid"], "backup_20240101000000")
    vms_mod.undefine(zk, env["uuid"], 5)
    storage_mod.remove_volume(zk, env["storage"], "vms", "web1_sda")
    do_import(zk, env, "backup_20240101000000", start=False)
    assert env["storage"].read_volume("vms", "web1_sda", 0, 6) == b"legacy"
    removed = catalogue.remove_legacy_tree(env["settings"], env["root"], "web1", "20240101000000")
    assert removed == str(directory)
    assert not directory.exists()


def test_copy_macs_covers_every_snapshot_and_never_reuses_an_old_mac() -> None:
    tip = vm_xml("web1")
    older = tip.replace("<serial type='pty'/>", "<interface type='bridge'><mac address='52:54:00:00:00:02'/>"
                        "<source bridge='vmbr200'/></interface><serial type='pty'/>")
    uuid = "11111111-2222-3333-4444-555555555555"
    macs = backups.copy_macs([tip, older], uuid)
    assert set(macs) == {"52:54:00:00:00:01", "52:54:00:00:00:02"}
    assert len(set(macs.values())) == 2 and not set(macs.values()) & set(macs)
    assert macs == backups.copy_macs([tip, older], uuid)            # derived from the new UUID, stable
    assert macs["52:54:00:00:00:01"] == domainxml.mac_address(f"{uuid}/vmbr100/0")
    assert backups.copy_macs([tip, "<not xml"], uuid).keys() == {"52:54:00:00:00:01"}
