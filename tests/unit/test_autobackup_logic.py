"""pvc.core.autobackup: selection, the full/incremental decision, retention, orphans, the state file
and the report. Every scenario must leave at least one valid (restorable) chain."""

from __future__ import annotations

import json

import pytest

from pvc.core import autobackup as ab
from pvc.core.records import BackupFile, BackupRecord

DAY = 86400.0


def rec(day: int, kind: str = "full", parent: int | None = None, ok: bool = True) -> BackupRecord:
    return BackupRecord(vm="web1", snapshot=f"ab202601{day:02d}000000", type=kind,
                        parent=None if parent is None else f"ab202601{parent:02d}000000", origin="autobackup",
                        result=ok, started=day * DAY, finished=day * DAY + 10, bytes=100 * day,
                        files=[BackupFile(path="images/vms.web1_sda.rbdimg", size=100 * day)],
                        snapshot_retained=kind == "full" and ok)


def names(records: list[BackupRecord]) -> set[str]:
    return {r.snapshot for r in records}


def simulate(days: int, interval: int, retention: int, fail_days: set[int] = frozenset(),
             forced_days: set[int] = frozenset()) -> tuple[list[BackupRecord], set[str]]:
    """Daily runs as the task makes them: the catalogue and the snapshots left in Ceph."""
    catalogue: list[BackupRecord] = []
    ceph: set[str] = set()
    for day in range(1, days + 1):
        on_target = names(catalogue)
        decision = ab.decide(catalogue, interval, day in forced_days, ceph, on_target)
        ok = day not in fail_days
        parent_day = int(decision.parent[8:10]) if decision.parent else None
        record = rec(day, decision.type, parent_day, ok)
        catalogue.append(record)
        if ok and decision.type == "full":
            ceph.add(record.snapshot)
        if ok:
            for removal in ab.retention(catalogue, retention, names(catalogue), day * DAY + 20, 30):
                catalogue.remove(removal.record)
                ceph.discard(removal.record.snapshot)
        assert_valid_chain(catalogue, ceph)
    return catalogue, ceph


def assert_valid_chain(catalogue: list[BackupRecord], ceph: set[str]) -> None:
    good = [r for r in catalogue if r.result]
    if not good:
        return
    fulls = {r.snapshot for r in good if r.type == "full"}
    assert fulls, "successful backups but no good full: no restorable chain"
    for r in good:
        if r.type == "incremental":
            assert r.parent in fulls, f"{r.snapshot} has no good parent"
    assert ceph <= fulls


# -- selection ---------------------------------------------------------------------------------------

def test_selection_by_tags() -> None:
    assert ab.autobackup_selected(["web", "backup"], ["backup"])
    assert not ab.autobackup_selected(["backup:x"], ["backup"])         # exact names for autobackup
    assert ab.automirror_destinations(["mirror"], ["mirror"], "d1") == ["d1"]
    assert ab.automirror_destinations(["mirror:d2", "mirror", "x"], ["mirror"], "d1") == ["d2", "d1"]
    assert ab.automirror_destinations(["mirror:d2", "mirror:d2"], ["mirror"], "d1") == ["d2"]
    assert ab.automirror_destinations(["other:d2"], ["mirror"], "d1") == []
    assert ab.automirror_destinations(["mirror:"], ["mirror"], "d1") == ["d1"]


# -- decision ----------------------------------------------------------------------------------------

def test_first_backup_is_full_then_incrementals_against_the_full() -> None:
    assert ab.decide([], 7, False, set()).type == "full"
    cat = [rec(1)]
    d = ab.decide(cat, 7, False, {cat[0].snapshot})
    assert (d.type, d.parent) == ("incremental", cat[0].snapshot)
    cat += [rec(2, "incremental", 1), rec(3, "incremental", 1)]
    d = ab.decide(cat, 7, False, {cat[0].snapshot})
    assert (d.type, d.parent) == ("incremental", cat[0].snapshot)      # differential, not chained


def test_full_interval_and_force() -> None:
    cat = [rec(1)] + [rec(d, "incremental", 1) for d in range(2, 8)]  # full at index 6
    assert ab.decide(cat, 7, False, {cat[0].snapshot}).type == "full"
    assert ab.decide(cat[:6], 7, False, {cat[0].snapshot}).type == "incremental"
    assert ab.decide(cat[:2], 7, True, {cat[0].snapshot}).type == "full"
    assert ab.decide([rec(1)], 1, False, {rec(1).snapshot}).type == "full"  # interval 1: always full


def test_failed_full_never_becomes_the_parent() -> None:
    cat = [rec(1), rec(2, "incremental", 1), rec(3, "full", ok=False)]
    d = ab.decide(cat, 7, False, {cat[0].snapshot, cat[2].snapshot})
    assert (d.type, d.parent) == ("incremental", cat[0].snapshot)


def test_failed_runs_do_not_count_toward_the_interval() -> None:
    cat = [rec(1)] + [rec(d, "incremental", 1, ok=False) for d in range(2, 10)]
    d = ab.decide(cat, 7, False, {cat[0].snapshot})
    assert (d.type, d.parent) == ("incremental", cat[0].snapshot)


def test_missing_parent_in_ceph_means_full() -> None:
    d = ab.decide([rec(1), rec(2, "incremental", 1)], 7, False, set())
    assert d.type == "full" and "gone" in d.reason


def test_wiped_target_means_full() -> None:
    cat = [rec(1), rec(2, "incremental", 1)]
    d = ab.decide(cat, 7, False, {cat[0].snapshot}, on_target=set())
    assert d.type == "full"


# -- retention ---------------------------------------------------------------------------------------

def test_worked_example_interval_7_retention_2() -> None:
    cat, ceph = simulate(21, 7, 2)
    fulls = sorted(r.snapshot for r in cat if r.type == "full")
    assert fulls == [rec(8).snapshot, rec(15).snapshot]           # F1 and its chain went on day 15
    assert len(cat) == 14 and ceph == set(fulls)
    assert all(r.parent in fulls for r in cat if r.type == "incremental")


def test_at_most_full_retention_snapshots_in_ceph_over_many_days() -> None:
    for interval, retention in ((7, 2), (3, 1), (1, 3), (5, 4)):
        _cat, ceph = simulate(40, interval, retention)
        assert 1 <= len(ceph) <= retention


def test_failed_full_does_not_push_the_last_good_chain_out() -> None:
    # Day 8's full fails; upstream would count it and delete F1's chain on day 9's success.
    cat, ceph = simulate(8, 7, 1, fail_days={8})
    assert ceph == {rec(1).snapshot}                     # F1's chain is intact after the failed full
    assert len([r for r in cat if r.result]) == 7
    cat, ceph = simulate(9, 7, 1, fail_days={8})        # day 9's good full replaces it
    assert ceph == {rec(9).snapshot}
    assert names([r for r in cat if not r.result]) == {rec(8).snapshot}


def test_failed_runs_everywhere_keep_a_chain() -> None:
    for fails in ({1}, {1, 2, 3}, {8, 9, 10, 11}, {7, 14, 15}, set(range(2, 30, 2))):
        cat, ceph = simulate(30, 7, 2, fail_days=fails)
        assert any(r.result and r.type == "full" for r in cat)
        assert 1 <= len(ceph) <= 2


def test_lost_entries_go_only_once_a_newer_good_full_exists() -> None:
    cat = [rec(1), rec(2, "incremental", 1)]
    # target wiped, no newer full yet: nothing is removed
    assert ab.retention(cat, 2, set(), 3 * DAY, 30) == []
    cat.append(rec(3))                                   # the full made after the wipe
    removed = ab.retention(cat, 2, {rec(3).snapshot}, 3 * DAY, 30)
    assert names([r.record for r in removed]) == {rec(1).snapshot, rec(2).snapshot}
    assert "gone from the target" in removed[0].reason


def test_failed_entries_expire() -> None:
    cat = [rec(1), rec(2, "incremental", 1, ok=False)]
    assert ab.retention(cat, 2, None, 10 * DAY, 30) == []
    removed = ab.retention(cat, 2, None, 40 * DAY, 30)
    assert [r.record.snapshot for r in removed] == [rec(2).snapshot]


def test_orphans() -> None:
    cat = [rec(1), rec(2, "incremental", 1), rec(3, "full", ok=False)]
    snaps = [rec(1).snapshot, rec(2).snapshot, rec(3).snapshot, "ab20260104000000", "manual1", "abc", "am1"]
    assert ab.orphans(snaps, cat) == [rec(2).snapshot, rec(3).snapshot, "ab20260104000000"]
    assert ab.orphans(snaps, cat, busy=["ab20260104000000"]) == [rec(2).snapshot, rec(3).snapshot]


# -- state file --------------------------------------------------------------------------------------

def test_state_document_round_trip_in_upstreams_shape() -> None:
    cat = [rec(1), rec(2, "incremental", 1), rec(3, ok=False)]
    doc = ab.state_document(cat, {rec(1).snapshot: {"vm_detail": {"name": "web1"}, "type": "full"}})
    tracked = doc["tracked_backups"]
    assert [e["snapshot_name"] for e in tracked] == [rec(3).snapshot, rec(2).snapshot, rec(1).snapshot]
    first = tracked[2]
    assert first["vm_detail"] == {"name": "web1"} and first["datestring"] == "20260101000000"
    assert first["export_files"] == [["images/vms.web1_sda.rbdimg", 100]] and first["runtime_secs"] == 10
    assert tracked[1]["incremental_parent"] == rec(1).snapshot and tracked[0]["result"] is False
    parsed = ab.parse_state(json.dumps(doc))
    back = [ab.record_from_state("web1", e, "/b") for e in parsed]
    assert [(r.snapshot, r.type, r.parent, r.result) for r in back] == \
        [(r.snapshot, r.type, r.parent, r.result) for r in ab.newest_first(cat)]
    assert back[2].files[0].sha256 == ""


def test_upstream_state_file_is_read() -> None:
    upstream = {"tracked_backups": [
        {"type": "incremental", "snapshot_name": "ab20250102000000", "incremental_parent": "ab20250101000000",
         "result": True, "message": "", "runtime_secs": 3.5, "export_files": [["images/a.b.rbddiff", 5]],
         "export_size_bytes": 5, "vm_detail": {}},
        {"type": "full", "snapshot_name": "ab20250101000000", "incremental_parent": None, "result": True,
         "export_files": [["images/a.b.rbdimg", 9]], "export_size_bytes": 9}]}
    back = [ab.record_from_state("vm", e, "/b") for e in ab.parse_state(json.dumps(upstream))]
    assert back[0].type == "incremental" and back[0].parent == "ab20250101000000"
    assert back[1].files[0].path == "images/a.b.rbdimg" and back[1].snapshot_retained
    d = ab.decide(back, 7, False, {"ab20250101000000"})
    assert (d.type, d.parent) == ("incremental", "ab20250101000000")


@pytest.mark.parametrize("text", ["{", "[]", '{"tracked_backups": [{}]}', '{"x": 1}'])
def test_bad_state_file_is_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match=r"\.autobackup\.json"):
        ab.parse_state(text)


# -- report ------------------------------------------------------------------------------------------

def test_report_text() -> None:
    results = [ab.VMResult("web1", True, "full backup ab20260103000000 written", rec(3).snapshot, "full"),
               ab.VMResult("db1", False, "export failed: disk full")]
    history = {"web1": [rec(1), rec(3)], "db1": [rec(2, ok=False)]}
    history["db1"][0].message = "export failed: disk full"
    subject, body = ab.autobackup_report("c1", 3 * DAY, results, history, ["unmount failed"])
    assert "with errors" in subject and "c1" in subject
    assert "VM web1: OK" in body and "VM db1: FAILED" in body and "Error: unmount failed" in body
    assert body.index(rec(3).snapshot) < body.index(rec(1).snapshot)       # newest first
    assert "1 files totalling 300B" in body and "Failure in 10 seconds" in body
    subject, _ = ab.autobackup_report("c1", 0, results[:1], {})
    assert "successfully" in subject
    subject, body = ab.automirror_report("c1", 0, [ab.VMResult("web1", True, "sent", lines=["d1: ok"])])
    assert "successfully" in subject and "    d1: ok" in body


def test_failed_fault_ids() -> None:
    """Upper case like VM_FAILED_WEB1; the mixed-case id of earlier versions is also listed, for clearing."""
    assert ab.failed_fault("web1") == "AUTOBACKUP_FAILED_WEB1"
    assert ab.failed_fault_ids("web1") == ["AUTOBACKUP_FAILED_WEB1", "AUTOBACKUP_FAILED_web1"]
    assert ab.failed_fault_ids("DB") == ["AUTOBACKUP_FAILED_DB"]
