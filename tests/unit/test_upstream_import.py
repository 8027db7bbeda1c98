"""Mapping upstream PVC's schema-15 backup onto our layout: each mapping, each drop reason, each
refusal, and the dry-run text. Fixtures are upstream's documented example
(shared/reference/pvc-backup-example-v15.json) and variants of it built from the documented layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pvc.cli.restore_report import render_import
from pvc.cluster import upstream_import as ui
from pvc.core import domainxml, schema
from pvc.core.errors import InvalidInput

# A copy of upstream's documented example (shared/reference/pvc-backup-example-v15.json), invented data.
EXAMPLE = Path(__file__).resolve().parent / "golden" / "upstream" / "backup-example-v15.json"
WEB1 = "3f6b2a8e-5c1d-4e7f-9a0b-1c2d3e4f5a61"
DB1 = "8d2e4f60-7a1b-4c3d-8e5f-6a7b8c9d0e72"


@pytest.fixture
def example() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text())


def _mapped(plan: ui.Plan, kind: str, key: str) -> ui.Mapped:
    return next(m for m in plan.mapped if m.kind == kind and m.key == key)


def _docs(item: ui.Mapped) -> dict[str, Any]:
    return dict(item.creates)


def _drop_reasons(plan: ui.Plan) -> dict[str, str]:
    return {what: reason for (what, reason) in plan.dropped}


def test_example_maps_completely(example: dict[str, Any]) -> None:
    plan = ui.plan(json.dumps(example))   # the file as upstream's CLI writes it
    assert plan.complete and plan.unmapped == []
    assert plan.source_cluster == "cluster1" and plan.schema_version == 15
    kinds = sorted((m.kind, m.key) for m in plan.mapped)
    assert kinds == sorted([("vm", WEB1), ("vm", DB1), ("network", "100"), ("network", "200"),
                            ("pool", "vms"), ("volume", "vms/web1_sda"), ("volume", "vms/db1_sda"),
                            ("snapshot", "vms/web1_sda@20250110020000"), ("fault", "NODE_PLUGIN_DISK_HV3")])


def test_raw_api_body_and_object_accepted(example: dict[str, Any]) -> None:
    twice = json.dumps(json.dumps(example))          # a raw GET /api/v1/backup body
    assert ui.plan(twice).complete
    assert ui.plan(example).complete


def test_vm_mapping(example: dict[str, Any]) -> None:
    plan = ui.plan(example)
    web1 = _docs(_mapped(plan, "vm", WEB1))
    doc = web1[schema.vm(WEB1)]
    assert web1[schema.vm_name("web1")] == WEB1           # the name index, same transaction
    assert doc["name"] == "web1" and doc["xml"] == example[f"/domains/{WEB1}/xml"]
    assert doc["node"] == "hv1" and doc["state"] == "start" and doc["node_autostart"] is True
    assert doc["migration_method"] == "live" and doc["migration_max_downtime"] == 300
    assert doc["node_selector"] == "none" and doc["node_limit"] == []
    assert doc["profile"] == "default-debian" and doc["description"] == "Frontend web server"
    assert doc["rbd_volumes"] == ["vms/web1_sda"]
    assert {t["name"]: t["protected"] for t in doc["tags"]} == {"production": True, "web": False}
    assert doc["summary"] and doc["summary_of"]
    db1 = _docs(_mapped(plan, "vm", DB1))[schema.vm(DB1)]
    assert db1["profile"] == ""                            # upstream's "None"
    assert db1["migration_method"] == "none" and db1["node_selector"] == "mem"
    assert db1["node_limit"] == ["hv2", "hv3"] and db1["node_autostart"] is False


def test_vm_snapshot_records_map_with_their_vm(example: dict[str, Any]) -> None:
    """Upstream's /domains/<uuid>/snapshots/<name>/{timestamp, xml, rbdsnaplist} become our record,
    written in the VM's transaction; the RBD snapshot's document names it as its owner."""
    plan = ui.plan(example)
    assert plan.complete and not [w for (w, _r) in plan.dropped if "snapshots" in w]
    item = _mapped(plan, "vm", WEB1)
    docs = _docs(item)
    snap = docs[schema.vm_snapshot(WEB1, "20250110020000")]
    assert snap["name"] == "20250110020000" and snap["created"] == 1736474400.5348172
    assert snap["xml"] == example[f"/domains/{WEB1}/snapshots/20250110020000/xml"]
    assert snap["consistency"] == "crash" and snap["origin"] == "manual" and snap["state"] == "ready"
    assert snap["volumes"] == [{"pool": "vms", "volume": "web1_sda", "snap": "20250110020000",
                                "size": 42949672960}]
    vm = docs[schema.vm(WEB1)]
    assert snap["meta"]["profile"] == vm["profile"] == "default-debian"
    assert snap["meta"]["tags"] == vm["tags"] and snap["meta"]["migration_method"] == "live"
    assert list(docs)[:2] == [schema.vm(WEB1), schema.vm_name("web1")]
    assert schema.vm_snapshots(WEB1) in item.parents
    assert any("1 VM snapshot record(s): 20250110020000" in n for n in item.notes)
    rbd = _docs(_mapped(plan, "snapshot", "vms/web1_sda@20250110020000"))
    assert rbd[schema.snapshot("vms", "web1_sda", "20250110020000")]["owner"] == f"vm:{WEB1}/20250110020000"
    assert schema.vm_snapshots(DB1) not in _mapped(plan, "vm", DB1).parents      # no snapshots there


def test_vm_snapshot_origin_by_prefix_and_refusals(example: dict[str, Any]) -> None:
    base = f"/domains/{WEB1}/snapshots/20250110020000"
    old, new = "20250110020000", "ab20250110020000"
    renamed = {k.replace(f"/{old}", f"/{new}") if "/snapshots/" in k else k: v for k, v in example.items()}
    renamed[f"/domains/{WEB1}/snapshots/ab20250110020000/rbdsnaplist"] = "vms/web1_sda@ab20250110020000"
    snap = _docs(_mapped(ui.plan(renamed), "vm", WEB1))[schema.vm_snapshot(WEB1, "ab20250110020000")]
    assert snap["origin"] == "autobackup"
    for key, value, reason in (
            ("timestamp", "soon", "timestamp: 'soon' is not epoch seconds"),
            ("rbdsnaplist", "vms/web1_sda@other", "is not pool/volume@20250110020000"),
            ("rbdsnaplist", "vms/gone_sda@20250110020000", "is not in the backup's /ceph/snapshots"),
            ("rbdsnaplist", "", "names no RBD snapshot"),
            ("xml", example[f"{base}/xml"].replace("/usr/bin/kvm", "/tmp/evil-qemu"), "domain XML policy")):
        broken = {**example, f"{base}/{key}": value}
        plan = ui.plan(broken)
        (refused,) = plan.unmapped
        assert (refused.kind, refused.key, refused.name) == ("vm snapshot", f"{WEB1}/20250110020000",
                                                             "web1@20250110020000")
        assert reason in refused.reason
        item = _mapped(plan, "vm", WEB1)                  # the VM still maps, without the record
        assert schema.vm_snapshot(WEB1, "20250110020000") not in _docs(item)
        rbd = _docs(_mapped(plan, "snapshot", "vms/web1_sda@20250110020000"))
        assert "owner" not in rbd[schema.snapshot("vms", "web1_sda", "20250110020000")]


def test_vm_refused_by_domain_policy_is_unmapped(example: dict[str, Any]) -> None:
    xml = example[f"/domains/{DB1}/xml"].replace(
        "<emulator>/usr/bin/kvm</emulator>", "<emulator>/tmp/evil-qemu</emulator>")
    example[f"/domains/{DB1}/xml"] = xml
    plan = ui.plan(example)
    assert not plan.complete
    (refused,) = plan.unmapped
    assert (refused.kind, refused.key, refused.name) == ("vm", DB1, "db1")
    assert refused.reason.startswith("domain XML policy:") and "/tmp/evil-qemu" in refused.reason
    assert [m.key for m in plan.mapped if m.kind == "vm"] == [WEB1]


def test_vm_policy_is_the_one_given(example: dict[str, Any]) -> None:
    policy = domainxml.DomainPolicy(emulators=("/usr/bin/qemu-system-x86_64",))
    plan = ui.plan(example, policy=policy)
    assert {u.key for u in plan.unmapped} == {WEB1, DB1}


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("state", "migrate", ("start", "in progress upstream")),
    ("state", "shutdown", ("stop", "in progress upstream")),
    ("state", "disable", ("disable", None)),
    ("migration_max_downtime", "", ("300", None)),
])
def test_vm_state_and_defaults(example: dict[str, Any], key: str, value: str,
                               expected: tuple[str, str | None]) -> None:
    example[f"/domains/{WEB1}/{key}"] = value
    item = _mapped(ui.plan(example), "vm", WEB1)
    doc = _docs(item)[schema.vm(WEB1)]
    field = "state" if key == "state" else "migration_max_downtime"
    assert str(doc[field]) == expected[0]
    if expected[1]:
        assert any(expected[1] in n for n in item.notes)


@pytest.mark.parametrize(("key", "value", "reason"), [
    ("migration_method", "teleport", "migration_method: 'teleport'"),
    ("node_selector", "random", "node_selector: 'random'"),
    ("state", "exploded", "state: 'exploded'"),
    ("node_limit", "hv1,bad name", "node_limit: 'bad name'"),
])
def test_vm_bad_metadata_unmapped_with_reason(example: dict[str, Any], key: str, value: str,
                                              reason: str) -> None:
    example[f"/domains/{WEB1}/{key}"] = value
    plan = ui.plan(example)
    (refused,) = plan.unmapped
    assert refused.key == WEB1 and refused.reason.startswith(reason)


def test_vm_uuid_mismatch_and_duplicate_name(example: dict[str, Any]) -> None:
    other = "11111111-2222-4333-8444-555555555555"
    for path in [p for p in example if p.startswith(f"/domains/{WEB1}")]:
        example[path.replace(WEB1, other)] = example[path]
    plan = ui.plan(example)
    (refused,) = plan.unmapped
    assert refused.key == other and "differs from the VM's key" in refused.reason


def test_network_mapping(example: dict[str, Any]) -> None:
    plan = ui.plan(example)
    servers = _docs(_mapped(plan, "network", "100"))
    doc = servers[schema.network(100)]
    assert doc["type"] == "managed" and doc["description"] == "servers" and doc["mtu"] is None
    assert doc["domain"] == "servers.cluster1.local" and doc["name_servers"] == ["1.1.1.1", "9.9.9.9"]
    assert doc["ip4"] == {"network": "10.100.0.0/24", "gateway": "10.100.0.1", "dhcp_flag": True,
                          "dhcp_start": "10.100.0.100", "dhcp_end": "10.100.0.199"}
    assert doc["ip6"] == {"network": None, "gateway": None, "dhcp_flag": False}
    assert servers[schema.network_acls(100)] == {
        "in": [{"description": "allow-ssh", "rule": "tcp dport 22 ct state new accept"}], "out": []}
    assert servers[schema.network_reservation(100, "52:54:00:12:34:56")] == {
        "mac_address": "52:54:00:12:34:56", "ip4_address": "10.100.0.10", "hostname": "web1"}
    assert schema.network_leases(100) in servers and servers[schema.network_leases(100)] is None
    vlan = _docs(_mapped(plan, "network", "200"))[schema.network(200)]
    assert vlan["type"] == "bridged" and vlan["domain"] is None and vlan["name_servers"] == []


def test_network_quirks(example: dict[str, Any]) -> None:
    example["/networks/100/name_servers"] = "1,0,.,0,.,0,.,1"     # upstream's single-server garble
    example["/networks/100/mtu"] = "None"
    for name, order in (("zz-last", "1"), ("aa-first", "1"), ("web", "0")):
        base = f"/networks/100/firewall_rules/out/{name}"
        example[base] = ""
        example[f"{base}/order"] = order
        example[f"{base}/rule"] = "tcp dport 80 accept"
    example["/networks/100/firewall_rules/in/allow-ssh/order"] = "10"
    plan = ui.plan(example)
    item = _mapped(plan, "network", "100")
    docs = _docs(item)
    assert docs[schema.network(100)]["name_servers"] == ["10.0.0.1"]
    assert any("per-character" in n for n in item.notes)
    assert [r["description"] for r in docs[schema.network_acls(100)]["out"]] == ["web", "aa-first", "zz-last"]


def test_network_invalid_and_acl_and_reservation_refusals(example: dict[str, Any]) -> None:
    example["/networks/200/firewall_rules/in/x"] = ""
    example["/networks/200/firewall_rules/in/x/rule"] = "accept"
    example["/networks/100/firewall_rules/out/allow-ssh"] = ""          # same description, other way
    example["/networks/100/firewall_rules/out/allow-ssh/rule"] = "accept"
    example["/networks/100/firewall_rules/out/multi"] = ""
    example["/networks/100/firewall_rules/out/multi/rule"] = "accept; flush ruleset"
    example["/networks/100/dhcp4_reservations/52:54:00:00:00:09"] = "static"
    example["/networks/100/dhcp4_reservations/52:54:00:00:00:09/ipaddr"] = "10.200.0.1"
    plan = ui.plan(example)
    reasons = {(u.kind, u.key): u.reason for u in plan.unmapped}
    assert reasons[("acl", "200/in/x")] == "firewall rules exist only on managed networks here"
    assert "both directions" in reasons[("acl", "100/out/allow-ssh")]
    assert reasons[("acl", "100/out/multi")].startswith("rule: ")
    assert "10.200.0.1" in reasons[("reservation", "100/52:54:00:00:00:09")]
    example2 = json.loads(EXAMPLE.read_text())
    example2["/networks/100/ip4_gateway"] = "10.99.0.1"
    refused = ui.plan(example2).unmapped
    assert [(u.kind, u.key) for u in refused] == [("network", "100")]
    assert refused[0].reason.startswith("ip4_gateway:")


def test_storage_mapping(example: dict[str, Any]) -> None:
    plan = ui.plan(example)
    pool = _docs(_mapped(plan, "pool", "vms"))[schema.pool("vms")]
    assert pool["pgs"] == 64 and pool["tier"] == "default" and pool["stats"]["id"] == 2
    assert pool["copies"] is None
    web = _docs(_mapped(plan, "volume", "vms/web1_sda"))[schema.volume("vms", "web1_sda")]
    db = _docs(_mapped(plan, "volume", "vms/db1_sda"))[schema.volume("vms", "db1_sda")]
    assert web["stats"]["size"] == 42949672960 and db["stats"]["size"] == 107374182400  # both JSON styles
    snap_item = _mapped(plan, "snapshot", "vms/web1_sda@20250110020000")
    snap = _docs(snap_item)[schema.snapshot("vms", "web1_sda", "20250110020000")]
    assert snap["pool"] == "vms" and snap["volume"] == "web1_sda" and snap["stats"]["protected"] == "false"
    assert schema.volume_snapshots("vms", "web1_sda") in snap_item.parents
    assert _drop_reasons(plan)["/ceph/osds"] == ui.R_OSDS


def test_bad_snapshot_name_unmapped(example: dict[str, Any]) -> None:
    base = "/ceph/snapshots/vms/db1_sda/a"
    example[base] = ""
    example[f"{base}/b"] = ""                 # upstream let "a/b" through as a snapshot name
    example[f"{base}/b/stats"] = ""
    plan = ui.plan(example)
    assert [(u.kind, u.key) for u in plan.unmapped] == [("snapshot", "vms/db1_sda@a")]


def test_fault_mapping(example: dict[str, Any]) -> None:
    fid = "NODE_PLUGIN_DISK_HV3"
    fault = _docs(_mapped(ui.plan(example), "fault", fid))[schema.fault(fid)]
    assert fault == {"id": "NODE_PLUGIN_DISK_HV3", "first_reported": "2025-01-12 22:41:07",
                     "last_reported": "2025-01-13 09:59:55", "acknowledged_at": "", "status": "new",
                     "health_delta": 5,
                     "message": "hv3 disk: /dev/sdb attribute Reallocated_Sector_Ct value 12",
                     "active": True, "resolved_at": ""}
    example["/faults/NODE_PLUGIN_DISK_HV3/status"] = "weird"
    assert ui.plan(example).unmapped[0].reason == "status: 'weird' is not new or ack"
    example["/faults/NODE_PLUGIN_DISK_HV3/status"] = "ack"
    example["/faults/NODE_PLUGIN_DISK_HV3/ack_time"] = "yesterday"
    assert ui.plan(example).unmapped[0].reason == "time: 'yesterday' is not YYYY-MM-DD HH:MM:SS"


def test_every_drop_reason(example: dict[str, Any]) -> None:
    example["/pvcversion"] = ""                        # a stray migration key
    example["/patroni2"] = "x"                         # someone else's tree
    example["/patroni2/leader"] = "y"
    example["/domains/" + WEB1 + "/state/1b1c0a2e7b3d4c1e8a6f2b9d0c7e0cca__lock__0000000000"] = "holder"
    example["/faults/GONE"] = None                     # vanished while the backup ran
    plan = ui.plan(example)
    reasons = _drop_reasons(plan)
    assert reasons["/config"] == ui.R_CONFIG and reasons["/nodes"] == ui.R_NODES
    assert reasons["/logs"] == ui.R_LOGS and reasons["lock contender znodes"] == ui.R_LOCK
    assert reasons["/ceph status text"] == ui.R_CEPH_STATUS and reasons["/schema"] == ui.R_SCHEMA
    assert reasons["/domains/*/stats"] == ui.R_VM_RUNTIME and reasons["/domains/*/rbdlist"] == ui.R_VM_DERIVED
    assert reasons["/domains/*/migrate_sync_lock"] == ui.R_VM_LOCK
    assert reasons["/networks/*/dhcp4_leases/*"] == ui.R_LEASES
    assert reasons["reservation mac/ip keys"] == ui.R_ARTEFACT
    assert reasons["ACL description keys"] == ui.R_ARTEFACT
    assert reasons["/pvcversion"] == ui.R_STRAY and reasons["/patroni2"] == ui.R_FOREIGN
    assert reasons["vanished znodes"] == ui.R_NULL
    assert len(plan.dropped[("lock contender znodes", ui.R_LOCK)]) == 2
    # the IPMI password is dropped, never mapped anywhere
    assert "/nodes/hv1/ipmipassword" in plan.dropped[("/nodes", ui.R_NODES)]
    assert "Ex4mple-IPMI-Passw0rd" not in json.dumps([m.creates for m in plan.mapped])


@pytest.mark.parametrize(("data", "message"), [
    ("{'/': ''}", "looks like the Python repr"),
    ("[1]", "must be a JSON object"),
    (json.dumps({"/": "", "/config": "c"}), "no /schema/version"),
    (json.dumps({"/schema/version": "16"}), "schema version '16'"),
    (json.dumps({"/schema/version": "7", "/vms": ""}), "a backup of this PVC"),
    (json.dumps({"relative": "", "/schema/version": "15"}), "not an absolute znode path"),
    (json.dumps({"/schema/version": "15", "/x": 3}), "the value of /x is not a string"),
])
def test_bad_files_refused(data: str, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        ui.plan(data)
    assert message in refused.value.message


def test_dry_run_text(example: dict[str, Any]) -> None:
    example[f"/domains/{DB1}/xml"] = example[f"/domains/{DB1}/xml"].replace(
        "<emulator>/usr/bin/kvm</emulator>", "<emulator>/tmp/evil-qemu</emulator>")
    report = {**ui.plan(example).report(), "dry_run": True, "written": []}
    text = render_import(report)
    assert 'Upstream cluster "cluster1" (schema 15)' in text
    assert "Maps (8):" in text and "vm        web1" in text and "network   servers" in text
    assert "Not mapped (1):" in text and "db1" in text and "/tmp/evil-qemu" in text
    assert "Dropped:" in text and "/nodes (127 znodes): nodes register themselves" in text
    assert "Dry run: nothing was written." in text
    report["dry_run"] = False
    assert "Nothing was written: 1 item(s) do not map" in render_import(report)
