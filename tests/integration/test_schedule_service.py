"""The primary's built-in schedule on a real ZooKeeper: exactly one task per slot across primary
changes and concurrent primaries, one catch-up run after downtime, re-planning on a configuration
change; and the autobackup faults (stale, orphans, failed)."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid as uuidlib
from typing import Any

import yaml

from pvc.cluster import faults, tasks
from pvc.core import schema
from pvc.core.config import parse_config
from pvc.core.records import BackupRecord, ScheduleRecord, Tag, VMRecord, VMSnapshotRecord
from pvc.core.zk import ZK
from pvc.node.services import schedules as svc

T0 = time.mktime((2026, 1, 4, 12, 0, 0, 0, 0, -1))       # Sunday noon
DAY = 86400.0
UPSTREAM = {"normal": "Tue..Sun *-*-* 0:0:00", "forced_full": "Mon *-*-* 0:0:00"}


def settings_for(zk: ZK, schedule: dict[str, str] | None = None, mirror: str | None = None, **extra: Any):
    hosts = zk.hosts.split("/", 1)[0].split(",")
    section: dict[str, Any] = {"backup_root_path": "/srv/backups", "backup_tags": ["backup"],
                               "backup_schedule": {"full_interval": 7, "full_retention": 2}, **extra}
    if schedule is not None:
        section["schedule"] = schedule
    doc: dict[str, Any] = {"cluster": {"name": "c1", "coordinator_nodes": ["hv1", "hv2"]},
                           "zookeeper": {"hosts": hosts, "root": zk.root, "acl": False},
                           "autobackup": section}
    if mirror:
        doc["automirror"] = {"destinations": {"d1": {"address": "10.0.0.1", "key": "k" * 20}},
                             "default_destination": "d1", "mirror_tags": ["mirror"], "keep_snapshots": 3,
                             "schedule": mirror}
    return parse_config(yaml.safe_dump(doc))


def auto_tasks(zk: ZK) -> list[tasks.TaskRecord]:
    return [t for t, _v in tasks.load_tasks(zk) if t.kind.startswith("cluster.auto")]


def when(stamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(stamp)


def test_one_task_per_slot_across_primary_changes(zk: ZK) -> None:
    settings = settings_for(zk, UPSTREAM, mirror="*-*-* 00/4:00:00")
    other = ZK(zk.hosts.split("/", 1)[0].split(","), zk.root, session_timeout=6).start()
    try:
        sessions = [zk, other]
        scheds = svc.schedules_of(settings)
        assert [s.name for s in scheds] == ["autobackup", "automirror"]
        now = T0
        step = 600.0
        while now < T0 + 8 * DAY:
            primary = sessions[int((now - T0) // (5 * 3600)) % 2]      # the primary changes every 5 hours
            for schedule in scheds:
                svc.evaluate(primary, schedule, now)
                if int(now) % 3 == 0:                               # the old primary still ticking
                    svc.evaluate(sessions[0] if primary is sessions[1] else sessions[1], schedule, now)
            now += step
    finally:
        other.stop()
    backups = sorted((t for t in auto_tasks(zk) if t.kind == "cluster.autobackup"), key=lambda t: t.created)
    # Sunday noon start: runs at Mon..Sun midnight plus Monday again = 8; Mondays forced
    record = ScheduleRecord.model_validate(zk.get(schema.schedule("autobackup")))
    assert len(backups) == 8
    kinds = [t.args["scheduled"] for t in backups]
    assert kinds.count("forced_full") == 2
    assert all(t.args["force_full"] == (t.args["scheduled"] == "forced_full") for t in backups)
    assert when(record.last_run) == dt.datetime(2026, 1, 12) and record.last_kind == "forced_full"
    assert when(record.next_run) == dt.datetime(2026, 1, 13)
    mirrors = [t for t in auto_tasks(zk) if t.kind == "cluster.automirror"]
    assert len(mirrors) == 2 + 7 * 6 + 3               # every 4 h: Sunday 16:00 ... the next Monday 08:00


def test_concurrent_primaries_never_repeat(zk: ZK) -> None:
    settings = settings_for(zk, {"normal": "daily"})
    schedule = svc.schedules_of(settings)[0]
    svc.evaluate(zk, schedule, T0)                        # plans the first slot, runs nothing
    assert auto_tasks(zk) == []
    due = T0 + DAY
    hosts = zk.hosts.split("/", 1)[0].split(",")
    sessions = [ZK(hosts, zk.root, session_timeout=6).start() for _ in range(4)]
    try:
        barrier = threading.Barrier(len(sessions))
        out: list[Any] = []

        def race(session: ZK) -> None:
            barrier.wait()
            out.append(svc.evaluate(session, schedule, due))

        threads = [threading.Thread(target=race, args=(s,)) for s in sessions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for session in sessions:
            session.stop()
    assert len([t for t in out if t is not None]) == 1
    assert len(auto_tasks(zk)) == 1


def test_downtime_gives_one_catch_up_run_and_config_change_replans(zk: ZK) -> None:
    schedule = svc.schedules_of(settings_for(zk, UPSTREAM))[0]
    svc.evaluate(zk, schedule, T0)
    first = svc.evaluate(zk, schedule, T0 + 3.4 * DAY)    # no primary for three slots
    assert first is not None and first.args["scheduled"] == "forced_full"   # the missed Monday's kind
    assert svc.evaluate(zk, schedule, T0 + 3.4 * DAY + 60) is None
    record = ScheduleRecord.model_validate(zk.get(schema.schedule("autobackup")))
    assert when(record.next_run) == dt.datetime(2026, 1, 8)
    hourly = svc.schedules_of(settings_for(zk, {"normal": "hourly"}))[0]
    assert svc.evaluate(zk, hourly, T0 + 3.4 * DAY + 120) is None            # re-planned, not run
    record = ScheduleRecord.model_validate(zk.get(schema.schedule("autobackup")))
    assert when(record.next_run) == dt.datetime(2026, 1, 7, 22)
    assert len(auto_tasks(zk)) == 1


def add_vm(zk: ZK, name: str, tags: tuple[str, ...] = ("backup",)) -> str:
    uuid = str(uuidlib.uuid4())
    zk.put(schema.vm(uuid), VMRecord(uuid=uuid, name=name, xml="<domain/>",
                                     tags=[Tag(name=t) for t in tags]).doc())
    return uuid


def backup(zk: ZK, uuid: str, snap: str, started: float, ok: bool = True) -> None:
    zk.put(schema.vm_backup(uuid, snap), BackupRecord(vm="x", snapshot=snap, origin="autobackup", result=ok,
                                                      started=started, finished=started + 1,
                                                      message="" if ok else "disk full").doc())


def active(zk: ZK) -> dict[str, str]:
    return {f.id: f.message for f in faults.load_faults(zk) if getattr(f, "active", True)}


def test_faults(zk: ZK) -> None:
    settings = settings_for(zk, UPSTREAM)
    now = T0 + 10 * DAY
    web = add_vm(zk, "web1")
    db = add_vm(zk, "db1")
    add_vm(zk, "scratch", tags=())
    backup(zk, web, "ab20260113000000", now - 0.5 * DAY)
    zk.put(schema.vm_snapshot(web, "ab20260113000000"), VMSnapshotRecord(name="ab20260113000000").doc())
    backup(zk, db, "ab20260101000000", now - 9 * DAY)
    backup(zk, db, "ab20260113000000", now - 0.5 * DAY, ok=False)
    zk.put(schema.vm_snapshot(db, "ab20260102000000"), VMSnapshotRecord(name="ab20260102000000").doc())
    found = svc.check_faults(zk, settings, now, since=now - 30 * DAY)
    assert found["stale"] == ["db1"]                   # 2 x the 1-day gap passed since db1's last success
    assert found["orphans"] == ["db1@ab20260102000000"]
    faults_now = active(zk)
    assert "AUTOBACKUP_FAILED_DB1" in faults_now and "disk full" in faults_now["AUTOBACKUP_FAILED_DB1"]
    assert "db1" in faults_now["AUTOBACKUP_STALE"] and "AUTOBACKUP_ORPHANS" in faults_now
    # a run in progress: orphans are not judged (its new snapshot has no entry yet)
    lock = zk.lock(svc.AUTOBACKUP_LOCK, "hv1")
    assert lock.acquire(timeout=5)
    zk.delete(schema.vm_snapshot(db, "ab20260102000000"))
    assert svc.check_faults(zk, settings, now, since=now - 30 * DAY)["running"]
    assert "AUTOBACKUP_ORPHANS" in active(zk)
    lock.release()
    backup(zk, db, "ab20260114000000", now - 60)
    found = svc.check_faults(zk, settings, now, since=now - 30 * DAY)
    assert found == {"stale": [], "orphans": [], "running": False}
    assert "AUTOBACKUP_STALE" not in active(zk) and "AUTOBACKUP_ORPHANS" not in active(zk)
    # without a schedule or stale_after there is no stale check at all; a fresh daemon gets a grace period
    assert svc.check_faults(zk, settings_for(zk), now + 100 * DAY, since=0)["stale"] == []
    add_vm(zk, "new1")                                 # tagged, never backed up: stale only after the grace
    assert svc.check_faults(zk, settings, now, since=now - 60)["stale"] == []
    assert svc.check_faults(zk, settings, now, since=now - 3 * DAY)["stale"] == ["new1"]


def test_stale_after_without_a_schedule(zk: ZK) -> None:
    """External `--cron` timers and no built-in schedule: an explicit stale_after is still checked."""
    now = T0 + 10 * DAY
    web = add_vm(zk, "web1")
    db = add_vm(zk, "db1")
    backup(zk, web, "ab20260113000000", now - 0.5 * DAY)
    backup(zk, db, "ab20260101000000", now - 9 * DAY)
    cron_only = settings_for(zk, stale_after=2 * 86400)
    assert cron_only.autobackup.schedule is None
    found = svc.check_faults(zk, cron_only, now, since=now - 30 * DAY)
    assert found["stale"] == ["db1"]
    assert "db1" in active(zk)["AUTOBACKUP_STALE"] and "48 hours" in active(zk)["AUTOBACKUP_STALE"]
    # an explicit stale_after wins over the schedule's 2x gap (1 day here): 12 days is not stale yet
    scheduled = settings_for(zk, UPSTREAM, stale_after=12 * 86400)
    assert svc.check_faults(zk, scheduled, now, since=now - 30 * DAY)["stale"] == []
    assert "AUTOBACKUP_STALE" not in active(zk)


def test_failed_fault_is_upper_case_and_clears_the_old_mixed_case_id(zk: ZK) -> None:
    settings = settings_for(zk)
    now = T0 + 10 * DAY
    web = add_vm(zk, "Web1")
    faults.raise_fault(zk, "AUTOBACKUP_FAILED_Web1", 10, "raised by an earlier version")
    backup(zk, web, "ab20260113000000", now - DAY, ok=False)
    svc.check_faults(zk, settings, now, since=now)
    assert "AUTOBACKUP_FAILED_WEB1" in active(zk) and "AUTOBACKUP_FAILED_Web1" not in active(zk)
    assert [f for f in active(zk) if f.startswith("AUTOBACKUP_FAILED")] == ["AUTOBACKUP_FAILED_WEB1"]


def test_scheduled_runs_carry_the_configured_report_options(zk: ZK) -> None:
    settings = settings_for(zk, {**UPSTREAM, "email_recipients": ["ops@example.com"]}, mirror="hourly")
    backup, mirror = svc.schedules_of(settings)
    assert backup.args("forced_full") == {"force_full": True, "scheduled": "forced_full",
                                          "email_recipients": ["ops@example.com"]}
    assert mirror.args("normal") == {"scheduled": "normal", "email_recipients": [],
                                     "email_errors_only": False}
    svc.evaluate(zk, backup, T0)
    task = svc.evaluate(zk, backup, T0 + DAY)
    assert task is not None and task.args["email_recipients"] == ["ops@example.com"]
