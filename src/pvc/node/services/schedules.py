"""The built-in autobackup/automirror schedule and the backup faults, run by the primary only.

Each schedule (`autobackup.schedule.{normal,forced_full}`, `automirror.schedule`: systemd calendar
expressions) has a ScheduleRecord at /schedules/<name> holding the next run. When it is due the
primary writes the record forward and creates the task in ONE ZooKeeper transaction checked
against the record's version: a primary change at any moment neither repeats a run (the new
primary sees the advanced record) nor skips one (an overdue slot runs once, late). Manual triggers
and external `--cron` timers are plain tasks and keep working beside it.

Faults (every FAULT_INTERVAL): AUTOBACKUP_STALE when a tagged VM has had no successful backup for
autobackup.stale_after seconds when it is set (with or without a schedule: external `--cron` timers
too), else 2x the built-in schedule's longest gap (no check without either), AUTOBACKUP_ORPHANS
when `ab…` snapshots exist that no retained backup accounts for (not while a run holds its lock),
AUTOBACKUP_FAILED_<VM> (upper case) when a VM's newest catalogue entry failed (the task resolves it
on success).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from pvc.cluster import faults, tasks
from pvc.cluster.vms import load_entries
from pvc.core import autobackup as ab
from pvc.core import calendar, schema
from pvc.core.config import Settings
from pvc.core.records import BackupRecord, ScheduleRecord, TaskRecord
from pvc.core.taskkinds import CLUSTER_AUTOBACKUP, CLUSTER_AUTOMIRROR, validate_args
from pvc.core.zk import ZK, encode

log = logging.getLogger("pvcnoded")

TICK = 15.0
FAULT_INTERVAL = 300.0
AUTOBACKUP_LOCK = f"{schema.LOCKS}/autobackup"
STALE_FAULT = "AUTOBACKUP_STALE"
ORPHAN_FAULT = "AUTOBACKUP_ORPHANS"
STALE_DELTA = 10
ORPHAN_DELTA = 5
FAILED_DELTA = 10


class Schedule:
    """One built-in schedule: its expressions, the run kind each names, and the task it submits."""

    def __init__(self, name: str, task_kind: str, exprs: list[tuple[str, str]],
                 extra: dict[str, Any] | None = None) -> None:
        self.name, self.task_kind = name, task_kind
        self.extra = extra or {}
        self.kinds = [kind for kind, _ in exprs]
        self.exprs = [expr for _, expr in exprs]

    @property
    def plan(self) -> list[str]:
        return [f"{kind}={expr}" for kind, expr in zip(self.kinds, self.exprs, strict=True)]

    def args(self, kind: str) -> dict[str, Any]:
        if self.task_kind == CLUSTER_AUTOBACKUP:
            return {"force_full": kind == "forced_full", "scheduled": kind, **self.extra}
        return {"scheduled": kind, **self.extra}

    def slot(self, after: float) -> tuple[float, str] | None:
        found = calendar.next_run(self.exprs, after)
        return None if found is None else (found[0], self.kinds[found[1]])


def schedules_of(settings: Settings) -> list[Schedule]:
    out = []
    backup = settings.autobackup
    if backup is not None and backup.schedule is not None:
        exprs = [(k, e) for k, e in (("normal", backup.schedule.normal),
                                      ("forced_full", backup.schedule.forced_full)) if e]
        if exprs:
            out.append(Schedule("autobackup", CLUSTER_AUTOBACKUP, exprs,
                                {"email_recipients": list(backup.schedule.email_recipients)}))
    mirror = settings.automirror
    if mirror is not None and mirror.schedule:
        out.append(Schedule("automirror", CLUSTER_AUTOMIRROR, [("normal", mirror.schedule)],
                            {"email_recipients": list(mirror.schedule_email_recipients),
                             "email_errors_only": mirror.schedule_email_errors_only}))
    return out


def evaluate(zk: ZK, schedule: Schedule, now: float) -> TaskRecord | None:
    """Advance one schedule at `now`; the task it submitted, if a run was due (and we won the CAS)."""
    path = schema.schedule(schedule.name)
    doc = zk.get_doc(path)
    record = ScheduleRecord.model_validate(doc.data) if doc is not None and isinstance(doc.data, dict) \
        else ScheduleRecord(name=schedule.name)
    upcoming = schedule.slot(now)
    # First start, or the configuration changed: plan the next slot from now, without running.
    if record.next_run is None or record.plan != schedule.plan:
        fresh = record.model_copy(update={"next_run": upcoming[0] if upcoming else None,
                                          "plan": schedule.plan})
        _write(zk, path, fresh, doc.version if doc is not None else None)
        return None
    if now < record.next_run:
        return None
    moment, kind = record.next_run, _missed_kind(schedule, record.next_run, now)
    args = validate_args(schedule.task_kind, schedule.args(kind)).model_dump(mode="json")
    task = TaskRecord(id=tasks.new_task_id(), kind=schedule.task_kind, args=args, target=tasks.PRIMARY)
    late = f" ({now - moment:.0f}s late)" if now - moment > 2 * TICK else ""
    advanced = record.model_copy(update={"last_run": moment, "last_kind": kind, "last_task": task.id,
                                         "last_result": "submitted",
                                         "next_run": upcoming[0] if upcoming else None})
    tx = zk.transaction()
    if doc is None:
        tx.create(path, encode(advanced.doc()))
    else:
        tx.set_data(path, encode(advanced.doc()), version=doc.version)
    tx.create(schema.task(task.id), encode(task.doc()))
    try:
        results = zk.commit(tx)
    except (BadVersionError, NodeExistsError, NoNodeError):
        return None                     # another primary advanced it first
    if any(isinstance(r, Exception) for r in results or []):
        return None
    log.info("schedule %s: submitted %s task %s for the %s run of %s%s", schedule.name, schedule.task_kind,
             task.id, kind, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment)), late)
    return task


def _missed_kind(schedule: Schedule, first: float, now: float) -> str:
    """The kind of the one run that covers every slot from `first` to `now`: forced_full if any of
    them was (a week's forced full is not lost to a primary outage)."""
    kinds, cursor = [], first - 1
    while len(kinds) < 1000:
        slot = schedule.slot(cursor)
        if slot is None or slot[0] > now:
            break
        kinds.append(slot[1])
        cursor = slot[0]
    return "forced_full" if "forced_full" in kinds else (kinds[0] if kinds else schedule.kinds[0])


def _write(zk: ZK, path: str, record: ScheduleRecord, version: int | None) -> None:
    with contextlib.suppress(BadVersionError, NodeExistsError, NoNodeError):
        if version is None:
            zk.create(path, record.doc())
        else:
            zk.put(path, record.doc(), version=version)


# -- faults ---------------------------------------------------------------------------------------

def _catalogue(zk: ZK, uuid: str) -> list[BackupRecord]:
    names = zk.children(schema.vm_backups(uuid))
    docs = zk.get_many([schema.vm_backup(uuid, n) for n in names])
    out = []
    for doc in docs.values():
        if isinstance(doc, dict):
            with contextlib.suppress(ValueError):
                out.append(BackupRecord.model_validate(doc))
    return [r for r in out if r.origin == "autobackup"]


def _resolve(zk: ZK, name: str) -> None:
    fn = getattr(faults, "resolve_fault", None) or faults.clear_fault
    with contextlib.suppress(Exception):
        fn(zk, name)


def check_faults(zk: ZK, settings: Settings, now: float, since: float) -> dict[str, Any]:
    """Raise or resolve the autobackup faults; what was found (for tests and logs)."""
    cfg = settings.autobackup
    if cfg is None:
        return {}
    entries = load_entries(zk)
    stale: list[str] = []
    orphan_list: list[str] = []
    running = bool(zk.children(AUTOBACKUP_LOCK)) if zk.exists(AUTOBACKUP_LOCK) else False
    # An explicit stale_after is checked with or without the built-in schedule (clusters driven by
    # external `--cron` timers set it); without it, staleness is 2x the schedule's longest gap.
    threshold: float | None = cfg.stale_after
    if threshold is None and cfg.schedule is not None:
        exprs = [e for e in (cfg.schedule.normal, cfg.schedule.forced_full) if e]
        gap = calendar.longest_gap(exprs, now)
        threshold = 2 * gap if gap else None
    for entry in entries:
        record = entry.record
        catalogue = _catalogue(zk, record.uuid)
        newest = ab.newest_first(catalogue)
        if newest and not newest[0].result:
            faults.raise_fault(zk, ab.failed_fault(record.name), FAILED_DELTA,
                               f"The last autobackup of VM {record.name} failed: {newest[0].message}")
            for legacy in ab.failed_fault_ids(record.name)[1:]:     # earlier versions' mixed case
                _resolve(zk, legacy)
        if threshold and ab.autobackup_selected([t.name for t in record.tags], cfg.backup_tags):
            good = [r.finished or r.started for r in catalogue if r.result]
            last = max(good) if good else None
            if (last if last is not None else since) < now - threshold:
                stale.append(record.name)
        if not running:
            names = zk.children(schema.vm_snapshots(record.uuid))
            orphan_list += [f"{record.name}@{n}" for n in ab.orphans(names, catalogue)]
    if stale:
        faults.raise_fault(zk, STALE_FAULT, STALE_DELTA,
                           f"No successful autobackup for {threshold / 3600:.0f} hours or more: "  # type: ignore[operator]
                           f"{', '.join(stale[:20])}{' ...' if len(stale) > 20 else ''}")
    else:
        _resolve(zk, STALE_FAULT)
    if not running:
        if orphan_list:
            faults.raise_fault(zk, ORPHAN_FAULT, ORPHAN_DELTA,
                               f"Autobackup snapshots without a backup: {', '.join(orphan_list[:20])}"
                               f"{' ...' if len(orphan_list) > 20 else ''}; remove them with "
                               "`pvc vm autobackup --cleanup`")
        else:
            _resolve(zk, ORPHAN_FAULT)
    return {"stale": stale, "orphans": orphan_list, "running": running}


# -- the service ----------------------------------------------------------------------------------

class ScheduleService:
    def __init__(self, settings: Settings, zk: ZK, is_primary: Callable[[], bool], stopping: threading.Event,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings, self.zk, self.is_primary, self.stopping = settings, zk, is_primary, stopping
        self.clock = clock
        self.schedules = schedules_of(settings)
        self.since = clock()                 # grace for the stale check after a daemon start
        self._last_faults = 0.0
        self.thread: threading.Thread | None = None

    @classmethod
    def start_from(cls, settings: Settings, zk: ZK, is_primary: Callable[[], bool],
                   stopping: threading.Event) -> ScheduleService | None:
        """The daemon's one-line registration: None unless autobackup or automirror is configured."""
        if settings.autobackup is None and settings.automirror is None:
            return None
        service = cls(settings, zk, is_primary, stopping)
        service.thread = threading.Thread(target=service.loop, name="schedules", daemon=True)
        service.thread.start()
        return service

    def loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("schedule pass failed")
            self.stopping.wait(TICK)

    def tick(self) -> None:
        if not self.is_primary():
            return
        now = self.clock()
        for schedule in self.schedules:
            evaluate(self.zk, schedule, now)
        if now - self._last_faults >= FAULT_INTERVAL:
            self._last_faults = now
            check_faults(self.zk, self.settings, now, self.since)
