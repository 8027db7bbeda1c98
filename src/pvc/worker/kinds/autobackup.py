"""cluster.autobackup on the primary: upstream's autobackup with its defects removed.

Mount (argument vectors, no shell) -> check the target is a mount point (when auto_mount is on)
and writable -> per tagged VM: full or incremental from the catalogue's good entries, an `ab…`
snapshot, an export (pvc.worker.backups), keep a full's snapshot as the next parent and drop an
incremental's, retention, `.autobackup.json` rewritten -> unmount in a `finally` -> report.
One VM's failure never stops the others; a failed export never counts; a run lock in ZooKeeper
keeps two coordinators from running at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pvc.adapters import mail
from pvc.cluster import faults
from pvc.cluster.vms import load_entries
from pvc.core import autobackup as ab
from pvc.core import schema
from pvc.core.config import AutobackupSettings, Settings
from pvc.core.errors import PVCError
from pvc.core.records import BackupRecord, VMRecord
from pvc.core.taskkinds import CLUSTER_AUTOBACKUP
from pvc.core.zk import ZK
from pvc.worker.registry import TaskCancelled, TaskContext, TaskFailed, task_kind

RUN_LOCK = f"{schema.LOCKS}/autobackup"
ORPHAN_FAULT = "AUTOBACKUP_ORPHANS"
FAILED_DELTA = 10
ORPHAN_DELTA = 5
SNAP_RE = re.compile(r"^ab\d{14}$")


# -- seams to the snapshot and export code (pvc.worker.snapshots / pvc.worker.backups) -------------------

@dataclass
class Seams:
    create_snapshot: Callable[..., Any]
    remove_snapshot: Callable[..., Any]
    export_snapshot: Callable[..., BackupRecord]
    snapshot_names: Callable[[ZK, str], list[str]]
    list_backups: Callable[[ZK, str], list[BackupRecord]]
    record_backup: Callable[[ZK, str, BackupRecord], None]
    drop_backup: Callable[[ZK, str, str], None]


OVERRIDE: Seams | None = None           # tests put stand-ins here


def seams() -> Seams:
    if OVERRIDE is not None:
        return OVERRIDE
    from pvc.cluster import backups, vmsnapshots
    from pvc.worker import backups as exports
    from pvc.worker import snapshots

    return Seams(snapshots.create_snapshot, snapshots.remove_snapshot, exports.export_snapshot,
                 lambda zk, uuid: [s.name for s in vmsnapshots.list_snapshots(zk, uuid)],
                 backups.list_backups, backups.record_backup, backups.drop_backup)


# -- shared with automirror ----------------------------------------------------------------------------

@contextlib.contextmanager
def run_lock(zk: ZK, path: str, node: str, what: str) -> Iterator[None]:
    """Hold the ZooKeeper lock `path` for the run (ephemeral: a dead worker's session frees it)."""
    lock = zk.lock(path, node)
    try:
        got = lock.acquire(blocking=False)
    except Exception as exc:
        raise TaskFailed(f"{what}: could not take the run lock {path}: {exc}") from None
    if not got:
        holders = ", ".join(str(c) for c in lock.contenders()) or "another node"
        raise TaskFailed(f"{what} is already running (held by {holders}); this run was refused")
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            lock.release()


def send_report(ctx: TaskContext, recipients: list[str], subject: str, body: str, system: str) -> str | None:
    """Mail the report; the error text if it could not be handed to sendmail."""
    if not recipients:
        return None
    try:
        mail.send_mail(recipients, subject, body, mail.default_sender(system))
        ctx.log(f"report sent to {', '.join(recipients)}")
        return None
    except mail.CommandFailed as exc:
        ctx.log(f"ERROR: the report could not be sent: {exc}")
        return f"the report could not be sent: {exc}"


def resolve(zk: ZK, name: str) -> None:
    """Clear fault `name` (resolve it where the fault module keeps resolved faults)."""
    fn = getattr(faults, "resolve_fault", None) or faults.clear_fault
    with contextlib.suppress(Exception):
        fn(zk, name)


def tag_names(record: VMRecord) -> list[str]:
    return [t.name for t in record.tags]


# -- the target ---------------------------------------------------------------------------------------

def expand(command: str, root: str) -> list[str]:
    """An operator's mount/unmount command as an argument vector (shell quoting allowed, no shell)."""
    try:
        argv = shlex.split(command.replace("{backup_root_path}", root))
    except ValueError as exc:
        raise mail.CommandFailed(f"cannot parse the command '{command}': {exc}") from None
    if not argv:
        raise mail.CommandFailed("an empty mount/unmount command is configured")
    return argv


def check_target(cfg: AutobackupSettings) -> str:
    """The directory VMs are written under; TaskFailed names why it cannot be used."""
    root = cfg.backup_root_path
    if cfg.auto_mount.enabled and not os.path.ismount(root):
        raise TaskFailed(f"Autobackup refused: {root} is not a mount point after the mount commands; "
                         "no backup is written onto the root filesystem")
    if not os.path.isdir(root):
        raise TaskFailed(f"Autobackup refused: backup_root_path {root} is not a directory on this node")
    target = cfg.target
    try:
        os.makedirs(target, exist_ok=True)
    except OSError as exc:
        raise TaskFailed(f"Autobackup refused: cannot create {target}: {exc.strerror}") from None
    if not os.access(target, os.W_OK):
        raise TaskFailed(f"Autobackup refused: {target} is not writable")
    return target


def on_target(vm_dir: str) -> set[str]:
    """Snapshot directories of a VM on the target that hold a finished export (a snapshot.json)."""
    try:
        names = os.listdir(vm_dir)
    except OSError:
        return set()
    return {n for n in names if os.path.isfile(os.path.join(vm_dir, n, "snapshot.json"))}


def read_state(vm_dir: str) -> list[dict[str, Any]]:
    path = os.path.join(vm_dir, ab.STATE_FILE)
    try:
        with open(path) as fh:
            return ab.parse_state(fh.read(), path)
    except FileNotFoundError:
        return []


def snapshot_json(vm_dir: str, snapshot: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(vm_dir, snapshot, "snapshot.json")) as fh:
            doc = json.load(fh)
        return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None


def write_state(vm_dir: str, records: list[BackupRecord]) -> None:
    """Rewrite `.autobackup.json` atomically (a crash leaves the old or the new one, never half)."""
    jsons = {r.snapshot: j for r in records if (j := snapshot_json(vm_dir, r.snapshot)) is not None}
    doc = ab.state_document(records, jsons)
    path = os.path.join(vm_dir, ab.STATE_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def annotate(vm_dir: str, record: BackupRecord) -> None:
    """Add upstream autobackup's keys (result, message, datestring, runtime_secs) to the export's
    snapshot.json, atomically, as upstream's autobackup writes them."""
    path = os.path.join(vm_dir, record.snapshot, "snapshot.json")
    doc = snapshot_json(vm_dir, record.snapshot)
    if doc is None:
        return
    doc.update({"result": record.result, "message": record.message,
                "datestring": ab.datestring_of(record.snapshot),
                "runtime_secs": round((record.finished or record.started) - record.started, 2)})
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def remove_dir(vm_dir: str, snapshot: str) -> None:
    if SNAP_RE.match(snapshot):          # never anything but an ab<datestring> directory
        shutil.rmtree(os.path.join(vm_dir, snapshot), ignore_errors=True)


# -- one VM ------------------------------------------------------------------------------------------

class Run:
    def __init__(self, ctx: TaskContext, cfg: AutobackupSettings, target: str, force_full: bool,
                 now: float | None) -> None:
        self.ctx, self.cfg, self.target, self.force_full = ctx, cfg, target, force_full
        self.zk, self.settings = ctx.zk, ctx.settings
        self.clock = now
        self.seams = seams()
        self.history: dict[str, list[BackupRecord]] = {}
        self.step = (0, 1)                   # the task's progress while one VM is backed up

    def export_progress(self, _current: int, _total: int, text: str) -> None:
        """The export's steps as the task's status (a cancel requested meanwhile stops it there)."""
        self.ctx.progress(self.step[0], self.step[1], text)

    def now(self) -> float:
        return self.clock if self.clock is not None else time.time()

    def entries(self, uuid: str) -> list[BackupRecord]:
        return [r for r in self.seams.list_backups(self.zk, uuid) if r.origin == "autobackup"]

    def catalogue(self, uuid: str, name: str, vm_dir: str) -> list[BackupRecord]:
        """The VM's autobackup entries; entries only the target's state file knows (an upstream
        tree, or a catalogue lost with its cluster) are taken into the catalogue first."""
        records = self.entries(uuid)
        known = {r.snapshot for r in records}
        present = on_target(vm_dir)
        try:
            state = read_state(vm_dir)
        except (OSError, ValueError) as exc:
            self.ctx.log(f"VM {name}: {exc}; the catalogue in ZooKeeper is used")
            state = []
        for entry in state:
            if entry["snapshot_name"] in known or entry["snapshot_name"] not in present:
                continue
            record = ab.record_from_state(name, entry, self.target)
            self.seams.record_backup(self.zk, uuid, record)
            records.append(record)
            self.ctx.log(f"VM {name}: {record.snapshot} taken into the catalogue from {ab.STATE_FILE}")
        return records

    def check_space(self, name: str, records: list[BackupRecord], decision: ab.Decision) -> None:
        same = [r for r in ab.good_entries(records) if r.type == decision.type]
        estimate = same[0].bytes if same else 0
        free = shutil.disk_usage(self.target).free
        if free < estimate + self.cfg.min_free_bytes:
            kind = "an incremental" if decision.type == "incremental" else "a full"
            raise TaskFailed(f"{self.target} has {ab.human_size(free)} free; {kind} backup of "
                             f"{name} needs about {ab.human_size(estimate)} plus min_free_bytes "
                             f"{ab.human_size(self.cfg.min_free_bytes)}; skipped")

    def backup(self, uuid: str, record: VMRecord) -> ab.VMResult:
        name = record.name
        vm_dir = os.path.join(self.target, name)
        os.makedirs(vm_dir, exist_ok=True)
        records = self.catalogue(uuid, name, vm_dir)
        present = on_target(vm_dir)
        in_ceph = set(self.seams.snapshot_names(self.zk, uuid))
        decision = ab.decide(records, self.cfg.backup_schedule.full_interval, self.force_full, in_ceph,
                             present)
        self.ctx.log(f"VM {name}: {decision.type} backup ({decision.reason})")
        snap = f"{ab.AUTOBACKUP_PREFIX}{time.strftime('%Y%m%d%H%M%S', time.localtime(self.now()))}"
        if snap in in_ceph or any(r.snapshot == snap for r in records):
            raise TaskFailed(f"VM {name}: snapshot {snap} exists already (two runs in one second?)")
        self.check_space(name, records, decision)
        self.seams.create_snapshot(self.zk, self.settings, self.ctx.node, uuid, snap, "autobackup",
                                   self.ctx.log)
        try:
            done = self.seams.export_snapshot(self.zk, self.settings, self.ctx.node, uuid, snap, self.target,
                                              decision.parent, "autobackup", self.ctx.log,
                                              progress=self.export_progress)
        except BaseException as exc:
            # The export removed its partial files and recorded a failed entry; its snapshot is no
            # parent for anything, so it goes too (an orphan sweep catches it if this fails).
            with contextlib.suppress(Exception):
                self.seams.remove_snapshot(self.zk, self.settings, uuid, snap, True, self.ctx.log)
            self._ensure_failed(uuid, name, snap, decision, exc)
            if isinstance(exc, TaskCancelled | KeyboardInterrupt):
                raise
            raise TaskFailed(f"export of {snap} failed: {exc}") from None
        try:
            annotate(vm_dir, done)
        except OSError as exc:
            self.ctx.log(f"VM {name}: could not add the autobackup keys to {snap}/snapshot.json: {exc}")
        if decision.type == "incremental":
            try:
                self.seams.remove_snapshot(self.zk, self.settings, uuid, snap, True, self.ctx.log)
                done = done.model_copy(update={"snapshot_retained": False})
                self.seams.record_backup(self.zk, uuid, done)
            except Exception as exc:      # left for the orphan sweep
                self.ctx.log(f"VM {name}: could not remove the incremental's snapshot {snap}: {exc}")
        lines = self.retain(uuid, name, vm_dir, self.entries(uuid))
        records = self.entries(uuid)
        write_state(vm_dir, records)
        self.history[name] = records
        return ab.VMResult(name, True, f"{decision.type} backup {snap} written "
                                       f"({len(done.files)} files, {ab.human_size(done.bytes)})",
                           snap, decision.type, lines)

    def _ensure_failed(self, uuid: str, name: str, snap: str, decision: ab.Decision,
                       exc: BaseException) -> None:
        """The catalogue must say this backup failed, whatever the export managed to record."""
        try:
            entry = next((r for r in self.seams.list_backups(self.zk, uuid) if r.snapshot == snap), None)
            if entry is None or entry.result:
                entry = BackupRecord(vm=name, snapshot=snap, type=decision.type,  # type: ignore[arg-type]
                                     parent=decision.parent, origin="autobackup", result=False,
                                     message=str(exc) or type(exc).__name__,
                                     started=self.now(), finished=self.now(), target=self.target,
                                     node=self.ctx.node, snapshot_retained=False)
            else:
                entry = entry.model_copy(update={"snapshot_retained": False})
            self.seams.record_backup(self.zk, uuid, entry)
        except Exception as err:
            self.ctx.log(f"VM {name}: could not record the failed backup: {err}")

    def retain(self, uuid: str, name: str, vm_dir: str, records: list[BackupRecord]) -> list[str]:
        lines = []
        present = on_target(vm_dir)
        removals = ab.retention(records, self.cfg.backup_schedule.full_retention, present, self.now(),
                                self.cfg.failed_retention_days)
        in_ceph = set(self.seams.snapshot_names(self.zk, uuid))
        for removal in removals:
            snap = removal.record.snapshot
            try:
                if snap in in_ceph:
                    self.seams.remove_snapshot(self.zk, self.settings, uuid, snap, True, self.ctx.log)
                remove_dir(vm_dir, snap)
                self.seams.drop_backup(self.zk, uuid, snap)
                lines.append(f"removed {snap}: {removal.reason}")
            except Exception as exc:
                lines.append(f"could not remove {snap} ({removal.reason}): {exc}")
        good = {r.snapshot for r in records if r.result} - {r.record.snapshot for r in removals}
        for leftover in sorted(present | _ab_dirs(vm_dir)):
            if leftover not in good and SNAP_RE.match(leftover):
                remove_dir(vm_dir, leftover)
                lines.append(f"removed the directory {leftover}: no successful backup owns it "
                             "(an interrupted or failed export)")
        for line in lines:
            self.ctx.log(f"VM {name}: {line}")
        return lines


def _ab_dirs(vm_dir: str) -> set[str]:
    try:
        return {n for n in os.listdir(vm_dir) if SNAP_RE.match(n) and os.path.isdir(os.path.join(vm_dir, n))}
    except OSError:
        return set()


# -- orphans ------------------------------------------------------------------------------------------

def sweep(ctx: TaskContext, vms: list[tuple[str, VMRecord]], remove: bool) -> tuple[list[str], list[str]]:
    """`ab…` snapshots no retained good full accounts for; removed when `remove`. Raises or clears
    AUTOBACKUP_ORPHANS; returns (what was done, the orphans left)."""
    s = seams()
    found, lines = [], []
    for uuid, record in vms:
        names = s.snapshot_names(ctx.zk, uuid)
        for snap in ab.orphans(names, s.list_backups(ctx.zk, uuid)):
            if remove:
                try:
                    s.remove_snapshot(ctx.zk, ctx.settings, uuid, snap, True, ctx.log)
                    lines.append(f"removed orphan snapshot {record.name}@{snap}")
                    continue
                except Exception as exc:
                    lines.append(f"could not remove orphan snapshot {record.name}@{snap}: {exc}")
            found.append(f"{record.name}@{snap}")
    if found:
        faults.raise_fault(ctx.zk, ORPHAN_FAULT, ORPHAN_DELTA,
                           f"Autobackup snapshots without a backup: {', '.join(found[:20])}"
                           f"{' ...' if len(found) > 20 else ''}; remove them with "
                           "`pvc vm autobackup --cleanup`")
    else:
        resolve(ctx.zk, ORPHAN_FAULT)
    for line in lines:
        ctx.log(line)
    return lines, found


# -- the task -----------------------------------------------------------------------------------------

def config_of(settings: Settings) -> AutobackupSettings:
    cfg = settings.autobackup
    if cfg is None:
        raise TaskFailed("Autobackup is not configured: add an autobackup section to pvc.conf on the "
                         "coordinators; nothing was done")
    return cfg


@task_kind(CLUSTER_AUTOBACKUP)
def autobackup(ctx: TaskContext, force_full: bool = False, email_recipients: list[str] | None = None,
               cleanup: bool = False, scheduled: str = "", now: float | None = None) -> dict[str, Any]:
    cfg = config_of(ctx.settings)
    recipients = ab.split_recipients(email_recipients)
    with run_lock(ctx.zk, RUN_LOCK, ctx.node, "Autobackup"):
        return _run(ctx, cfg, force_full, recipients, cleanup, scheduled, now)


def _run(ctx: TaskContext, cfg: AutobackupSettings, force_full: bool, recipients: list[str], cleanup: bool,
         scheduled: str, now: float | None) -> dict[str, Any]:
    started = now if now is not None else time.time()
    root = cfg.backup_root_path
    general: list[str] = []
    results: list[ab.VMResult] = []
    run: Run | None = None
    mounted = False
    cancelled: TaskCancelled | None = None
    try:
        if cfg.auto_mount.enabled:
            mounted = True            # unmount even after a partly failed mount
            for command in cfg.auto_mount.mount_cmds:
                outcome = mail.run_argv(expand(command, root))
                ctx.log(f"mount command ran: {' '.join(outcome.argv)}")
        target = check_target(cfg)
        run = Run(ctx, cfg, target, force_full, now)
        every = sorted(((e.record.uuid, e.record) for e in load_entries(ctx.zk)), key=lambda p: p[1].name)
        chosen = [(u, r) for u, r in every if ab.autobackup_selected(tag_names(r), cfg.backup_tags)]
        total = len(chosen) + 1
        for index, (uuid, record) in enumerate(chosen):
            ctx.progress(index, total, f"Backing up VM {record.name}")
            run.step = (index, total)
            try:
                result = run.backup(uuid, record)
                for fault_id in ab.failed_fault_ids(record.name):
                    resolve(ctx.zk, fault_id)
            except TaskCancelled:
                raise
            except (TaskFailed, PVCError, OSError, mail.CommandFailed, ValueError) as exc:
                result = _failed(ctx, run, uuid, record, exc)
            except Exception as exc:        # a bug in one VM's backup must not stop the others
                ctx.log(f"VM {record.name}: unexpected error {type(exc).__name__}")
                result = _failed(ctx, run, uuid, record, exc)
            results.append(result)
        ctx.progress(len(chosen), total, "Looking for orphan autobackup snapshots")
        lines, left = sweep(ctx, every, cleanup)
        if lines or left:
            text = (f"{len(left)} orphan snapshot(s) left" if left else "orphan snapshots removed") \
                if cleanup else f"{len(left)} orphan snapshot(s) found; remove them with --cleanup"
            results.append(ab.VMResult("(orphan sweep)", not (cleanup and left), text,
                                       lines=lines + [f"orphan {o}" for o in left]))
    except TaskCancelled as exc:
        cancelled = exc
        general.append("the run was cancelled")
    except (TaskFailed, mail.CommandFailed) as exc:
        general.append(str(exc))
    except Exception as exc:
        general.append(f"unexpected error: {type(exc).__name__}: {exc}")
    finally:
        if mounted:
            for command in cfg.auto_mount.unmount_cmds:
                try:
                    outcome = mail.run_argv(expand(command, root))
                    ctx.log(f"unmount command ran: {' '.join(outcome.argv)}")
                except mail.CommandFailed as exc:
                    general.append(f"unmount failed: {exc}")
                    ctx.log(f"ERROR: unmount failed: {exc}")
    subject, body = ab.autobackup_report(ctx.settings.cluster.name, started, results,
                                         run.history if run else {}, general)
    mail_error = send_report(ctx, recipients, subject, body, "Autobackup")
    if cancelled is not None:
        raise cancelled
    summary = {
        "status": _status(results, general),
        "vms": [{"vm": r.vm, "ok": r.ok, "message": r.message, "snapshot": r.snapshot, "type": r.type,
                 "details": r.lines} for r in results],
        "errors": general + ([mail_error] if mail_error else []),
        "scheduled": scheduled,
        "report": body,
    }
    if general or any(not r.ok for r in results):
        raise TaskFailed(summary["status"], summary)
    return summary


def _failed(ctx: TaskContext, run: Run, uuid: str, record: VMRecord, exc: BaseException) -> ab.VMResult:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    ctx.log(f"VM {record.name}: backup FAILED: {message}")
    faults.raise_fault(ctx.zk, ab.failed_fault(record.name), FAILED_DELTA,
                       f"The last autobackup of VM {record.name} failed: {message}")
    for legacy in ab.failed_fault_ids(record.name)[1:]:     # the mixed-case id of earlier versions
        resolve(ctx.zk, legacy)
    with contextlib.suppress(Exception):
        run.history[record.name] = run.entries(uuid)
    return ab.VMResult(record.name, False, message)


def _status(results: list[ab.VMResult], general: list[str]) -> str:
    bad = [r.vm for r in results if not r.ok]
    if general:
        return f"Autobackup failed: {'; '.join(general)}"
    if bad:
        return f"Autobackup finished with errors: {len(bad)} of {len(results)} failed ({', '.join(bad)})"
    return f"Autobackup finished: {len(results)} VM(s) backed up"
