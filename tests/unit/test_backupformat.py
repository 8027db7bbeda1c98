"""The export format (pvc.core.backupformat): upstream's snapshot.json round trip with our keys,
names with dots, the legacy pvcbackup.json, chains of any depth, verification."""

from __future__ import annotations

import json

import pytest

from pvc.core import backupformat as fmt

UUID = "0c2f5fd4-3c5a-4b8e-9a53-1df0d2b5b1a1"


def detail(name: str = "web1", disks: tuple[str, ...] = ("vms/web1_sda",), **extra: object) -> dict:
    return {"name": name, "uuid": UUID, "xml": f"<domain><name>{name}</name><uuid>{UUID}</uuid></domain>",
            "disks": [{"type": "rbd", "name": d, "dev": "sda", "bus": "scsi"} for d in disks], **extra}


def image(pool: str, volume: str, incremental: bool = False, size: int = 10,
          sha: str = "a" * 64) -> fmt.ImageFile:
    return fmt.ImageFile(pool, volume, fmt.image_path(pool, volume, incremental), size, incremental, sha,
                         volume_size=size * 1000)


def test_manifest_has_upstreams_keys_exactly_then_ours() -> None:
    files = [image("vms", "web1_sda"), image("ssd", "web1_sdb", size=5)]
    doc = fmt.build_manifest(detail(), "snap1", None, files, extra={"created": 12.5})
    upstream = ["type", "snapshot_name", "incremental_parent", "vm_detail", "export_files",
                "export_size_bytes"]
    assert [k for k in doc if not k.startswith("pvc_")] == upstream
    assert doc["type"] == "full" and doc["incremental_parent"] is None
    # upstream's figure per file is the volume's size (it creates the volume with it); the total is the files'
    assert doc["export_files"] == [["images/vms.web1_sda.rbdimg", 10000],
                                   ["images/ssd.web1_sdb.rbdimg", 5000]]
    assert doc["export_size_bytes"] == 15
    assert [f["size"] for f in doc["pvc_files"]] == [10, 5]
    assert doc["pvc_format"] == fmt.FORMAT_VERSION
    parsed = fmt.parse_manifest(json.loads(json.dumps(doc)), "t")
    assert parsed.files == tuple(files) and parsed.has_checksums
    assert parsed.snapshot == "snap1" and parsed.type == "full" and parsed.vm == "web1"
    assert parsed.extra == {"created": 12.5}


def test_incremental_round_trip_with_chain() -> None:
    doc = fmt.build_manifest(detail(), "s3", "s2", [image("vms", "web1_sda", True)], chain=["s1", "s2"])
    assert doc["type"] == "incremental" and doc["export_files"][0][0].endswith(".rbddiff")
    parsed = fmt.parse_manifest(doc, "t")
    assert parsed.parent == "s2" and parsed.chain == ("s1", "s2") and parsed.files[0].incremental


def test_names_with_dots_come_from_our_keys_not_the_file_name() -> None:
    files = [image("pool.a", "vm.disk.0")]
    doc = fmt.build_manifest(detail(disks=()), "s1", None, files)
    parsed = fmt.parse_manifest(doc, "t")
    assert (parsed.files[0].pool, parsed.files[0].volume) == ("pool.a", "vm.disk.0")


def test_upstream_tree_names_from_vm_detail_disks() -> None:
    """No pvc_* keys (upstream): the file name is matched against the VM's disks."""
    doc = {"type": "full", "snapshot_name": "s1", "incremental_parent": None,
           "vm_detail": detail(disks=("vms.x/web1.disk_sda", "vms/web1_sdb")),
           "export_files": [["images/vms.x.web1.disk_sda.rbdimg", 3], ["images/vms.web1_sdb.rbdimg", 4]],
           "export_size_bytes": 7}
    parsed = fmt.parse_manifest(doc, "t")
    assert [(f.pool, f.volume) for f in parsed.files] == [("vms.x", "web1.disk_sda"), ("vms", "web1_sdb")]
    assert not parsed.has_checksums and parsed.format_version is None
    assert [(f.size, f.volume_size) for f in parsed.files] == [(-1, 3), (-1, 4)]   # file sizes unknown


def test_upstream_file_without_a_matching_disk_splits_at_the_first_dot() -> None:
    assert fmt.name_from_file("images/vms.a.b.rbddiff", [], "t") == ("vms", "a.b", True)
    with pytest.raises(fmt.FormatError, match="several disks"):
        fmt.name_from_file("images/a.b.c.rbdimg", ["a/b.c", "a.b/c"], "t")
    with pytest.raises(fmt.FormatError, match="rbdimg"):
        fmt.name_from_file("images/vms.a.qcow2", [], "t")


@pytest.mark.parametrize("path", ["/etc/passwd", "../x.rbdimg", "images/../../x.rbdimg", "other/x.rbdimg"])
def test_file_paths_stay_inside_the_snapshot_directory(path: str) -> None:
    doc = fmt.build_manifest(detail(), "s1", None, [image("vms", "web1_sda")])
    doc["export_files"][0][0] = path
    with pytest.raises(fmt.FormatError):
        fmt.parse_manifest(doc, "t")


@pytest.mark.parametrize("change, match", [
    ({"type": "weird"}, "type"),
    ({"snapshot_name": "a/b"}, "snapshot name"),
    ({"incremental_parent": "s0"}, "does not agree"),
    ({"vm_detail": {}}, "vm_detail"),
    ({"export_files": "x"}, "list of exported files"),
])
def test_bad_manifests_are_refused_with_the_reason(change: dict, match: str) -> None:
    doc = {**fmt.build_manifest(detail(), "s1", None, [image("vms", "web1_sda")]), **change}
    with pytest.raises(fmt.FormatError, match=match):
        fmt.parse_manifest(doc, "t")


def test_legacy_manifest_reads_as_backup_snapshot() -> None:
    files = [fmt.ImageFile("vms", "web1_sda", fmt.image_path("vms", "web1_sda", True, legacy=True), 9, True,
                           volume_size=900)]
    doc = fmt.build_legacy_manifest(detail(), "20240102030405", "20240101000000", files, retained=False,
                                    result=True, message="", runtime=1.0)
    assert doc["backup_files"] == [["pvcdisks/vms.web1_sda.rbddiff", 900]]
    parsed = fmt.parse_manifest(doc, "t", legacy=True)
    assert parsed.snapshot == "backup_20240102030405" and parsed.parent == "backup_20240101000000"
    assert parsed.legacy
    doc["result"] = False
    with pytest.raises(fmt.FormatError, match="failed"):
        fmt.parse_manifest(doc, "t", legacy=True)


def _tree(depth: int) -> dict[str, fmt.Manifest]:
    full = fmt.build_manifest(detail(), "s0", None, [image("vms", "web1_sda")])
    out = {"s0": fmt.parse_manifest(full, "t")}
    for i in range(1, depth + 1):
        doc = fmt.build_manifest(detail(), f"s{i}", f"s{i - 1}", [image("vms", "web1_sda", True)])
        out[f"s{i}"] = fmt.parse_manifest(doc, "t")
    return out


def _loader(tree: dict[str, fmt.Manifest]):
    def load(name: str) -> fmt.Manifest:
        if name not in tree:
            raise fmt.FormatError(f"no snapshot.json for {name}")
        return tree[name]
    return load


def test_chain_of_any_depth_is_walked_from_the_full() -> None:
    tree = _tree(12)
    chain = fmt.walk_chain(_loader(tree), "s12")
    assert [m.snapshot for m in chain] == [f"s{i}" for i in range(13)]
    assert [m.snapshot for m in fmt.walk_chain(_loader(tree), "s0")] == ["s0"]


def test_chain_missing_parent_loop_and_new_volume_are_errors() -> None:
    tree = _tree(3)
    del tree["s1"]
    with pytest.raises(fmt.FormatError, match="s2 needs its parent s1"):
        fmt.walk_chain(_loader(tree), "s3")
    loop = _tree(2)
    looped = fmt.build_manifest(detail(), "s0", "s2", [image("vms", "web1_sda", True)])
    loop["s0"] = fmt.parse_manifest(looped, "t")
    with pytest.raises(fmt.FormatError, match="loops"):
        fmt.walk_chain(_loader(loop), "s2")
    extra = _tree(1)
    extra["s1"] = fmt.parse_manifest(fmt.build_manifest(
        detail(), "s1", "s0", [image("vms", "web1_sda", True), image("vms", "web1_sdb", True)]), "t")
    with pytest.raises(fmt.FormatError, match="web1_sdb"):
        fmt.walk_chain(_loader(extra), "s1")


def test_verify_plan_and_checks() -> None:
    chain = fmt.walk_chain(_loader(_tree(1)), "s1")
    plan = fmt.verify_plan(chain)
    assert [(c.snapshot, c.path) for c in plan] == [("s0", "images/vms.web1_sda.rbdimg"),
                                                    ("s1", "images/vms.web1_sda.rbddiff")]
    check = plan[0]
    assert fmt.check_file(check, 10, "a" * 64) is None
    assert "missing" in (fmt.check_file(check, None, None) or "")
    assert "size 11" in (fmt.check_file(check, 11, None) or "")
    assert "differs" in (fmt.check_file(check, 10, "b" * 64) or "")
    unchecked = fmt.FileCheck("s0", "images/x.y.rbdimg", 10, "")
    assert fmt.check_file(unchecked, 10, None) is None
    upstream = fmt.FileCheck("s0", "images/x.y.rbdimg", -1, "")
    assert fmt.check_file(upstream, 12345, None) is None
    assert "missing" in (fmt.check_file(upstream, None, None) or "")


def test_rename_helpers() -> None:
    assert fmt.renamed_ref("vms/web1_sda", "web1", "web2") == "vms/web2_sda"
    assert fmt.renamed_ref("vms/web1", "web1", "web2") == "vms/web2"
    assert fmt.renamed_ref("vms/web10_sda", "web1", "web2") == "vms/web10_sda"
    new = "11111111-2222-3333-4444-555555555555"
    assert f"<uuid>{new}</uuid>" in fmt.set_uuid(detail()["xml"], new)
    with pytest.raises(fmt.FormatError):
        fmt.set_uuid("<domain/>", new)
    xml = ("<interface type='bridge'><mac address='52:54:00:AA:bb:01'/></interface>"
           '<interface type="bridge"><mac address="52:54:00:00:00:02"/></interface>')
    swapped = fmt.replace_macs(xml, {"52:54:00:aa:bb:01": "52:54:00:11:22:33"})
    assert swapped == xml.replace("52:54:00:AA:bb:01", "52:54:00:11:22:33")


def test_snapshot_dir_refuses_escapes() -> None:
    assert fmt.snapshot_dir("/srv/b", "web1", "s1") == "/srv/b/web1/s1"
    for vm, snap in (("..", "s1"), ("web1", "a/b"), ("", "s1")):
        with pytest.raises(fmt.FormatError):
            fmt.snapshot_dir("/srv/b", vm, snap)
