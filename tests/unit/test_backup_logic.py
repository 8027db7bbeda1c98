"""The pure parts of restore: the replace plan, batching, and the manifest's checks."""

from __future__ import annotations

import pytest

from pvc.cluster import backup as backup_mod
from pvc.core import schema
from pvc.core.errors import InvalidInput


def _tree(**paths: bytes) -> dict[str, tuple[bytes, bool]]:
    return {p.replace("__", "/"): (data, False) for p, data in paths.items()}


def test_replace_plan_deletes_extra_keeps_never_carried_and_live() -> None:
    current = {
        "/": (b"", False), "/networks": (b"", False), "/networks/100": (b"{}", False),
        "/networks/300": (b"{}", False), "/networks/300/x": (b"", False),
        "/sessions": (b"", False), "/sessions/abc": (b"{}", False),
        "/locks": (b"", False), "/locks/schema": (b"", False), "/locks/schema/_c_lock-1": (b"", True),
        "/tasks": (b"", False), "/tasks/t1": (b"", False), "/tasks/t1/owner": (b"w", True),
        schema.API_TOKEN: (b"sealed", False), "/config": (b"", False), "/zookeeper": (b"", False),
    }
    wanted = {"/networks": "", "/networks/100": '{"vni":100}', "/networks/200": "{}", "/sessions": "",
              "/locks": "", "/tasks": "", "/config": ""}
    ops = backup_mod.replace_ops(current, wanted)
    assert [(k, p) for k, p, _ in ops] == [
        ("delete", "/networks/300/x"), ("delete", "/networks/300"),
        ("set", "/networks/100"), ("create", "/networks/200")]


def test_replace_plan_makes_missing_parents() -> None:
    ops = backup_mod.replace_ops({"/": (b"", False)}, {"/a/b": "x"})
    assert [(k, p) for k, p, _ in ops] == [("create", "/a"), ("create", "/a/b")]


def test_batches_stay_under_the_transaction_budget() -> None:
    ops = [("create", f"/f/{i}", b"x" * 200_000) for i in range(6)]
    batches = backup_mod._batches(ops)
    assert len(batches) == 3 and sum(len(b) for b in batches) == 6


def test_manifest_round_trip_and_refusals() -> None:
    data = {schema.SCHEMA_VERSION_PATH: "7", schema.CLUSTER: '{"name":"c1"}', "/nodes": ""}
    manifest = backup_mod.make_manifest(data, changed=0)
    assert manifest["cluster"] == "c1" and manifest["schema_version"] == 7 and manifest["znodes"] == 3
    assert manifest["time"] == "1970-01-01T00:00:00.000+00:00"
    backup_mod.check_manifest(manifest, dict(reversed(list(data.items()))), "c1")   # order-independent
    with pytest.raises(InvalidInput, match="checksum mismatch"):
        backup_mod.check_manifest(manifest, {**data, "/nodes": "x"}, "c1")
    with pytest.raises(InvalidInput, match="backup of cluster \"c1\", not of this cluster \\(\"c2\"\\)"):
        backup_mod.check_manifest(manifest, data, "c2")
    backup_mod.check_manifest(manifest, data, "c2", allow_other_cluster=True)
    with pytest.raises(InvalidInput, match="format version 9"):
        backup_mod.check_manifest({**manifest, "format_version": 9}, data, "c1")
    found, rest = backup_mod.split_manifest({"manifest": manifest, **data})
    assert found == manifest and rest == data
    assert backup_mod.split_manifest(dict(data)) == (None, data)
