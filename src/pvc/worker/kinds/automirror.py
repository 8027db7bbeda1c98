"""cluster.automirror on the primary: upstream's automirror without its defects.

Per tagged VM one `am<datestring>` snapshot, sent to each of its destinations incrementally from
the newest `am…` snapshot both sides still have (a full when there is none), then the remote `am…`
snapshots beyond keep_snapshots removed, and local `am…` snapshots removed once no destination
holds them. Every VM and destination gets a result line: one failure never ends the run. The
destinations' API keys come from pvc.conf here, never from the task's arguments, and are masked
in every log line.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pvc.core import autobackup as ab
from pvc.core import schema, secrets
from pvc.core.config import AutomirrorSettings, MirrorDestination, Settings
from pvc.core.records import VMRecord
from pvc.core.taskkinds import CLUSTER_AUTOMIRROR
from pvc.worker.kinds.autobackup import run_lock, send_report, tag_names
from pvc.worker.registry import TaskCancelled, TaskContext, TaskFailed, task_kind

RUN_LOCK = f"{schema.LOCKS}/automirror"
DEST_LOCK = f"{schema.LOCKS}/automirror-dest"


@dataclass
class Seams:
    create_snapshot: Callable[..., Any]
    remove_snapshot: Callable[..., Any]
    snapshot_names: Callable[..., list[str]]
    send_snapshot: Callable[..., Any]
    destination: Callable[[MirrorDestination], Any]     # -> pvc.worker.send.Destination
    remote: Callable[[Any], Any]                        # Destination -> RemoteCluster


OVERRIDE: Seams | None = None


def seams() -> Seams:
    if OVERRIDE is not None:
        return OVERRIDE
    from pvc.cluster import vmsnapshots
    from pvc.worker import send, snapshots

    return Seams(snapshots.create_snapshot, snapshots.remove_snapshot,
                 lambda zk, uuid: [s.name for s in vmsnapshots.list_snapshots(zk, uuid)],
                 send.send_snapshot,
                 lambda d: send.Destination(d.uri, d.key or "", verify_ssl=d.verify_ssl, pool=d.pool,
                                            ca=_read_ca(d.ca_file)),
                 send.RemoteCluster)


def _read_ca(path: str | None) -> str | None:
    """The PEM text of a destination's `ca_file` (None: the system's CAs); a file that cannot be
    read fails that destination's sends with the reason, as a bad key would."""
    if not path:
        return None
    try:
        with open(path) as handle:
            return handle.read()
    except OSError as exc:
        from pvc.worker.send import SendFailed
        raise SendFailed(f"automirror destination CA file {path}: {exc.strerror or exc}") from None


def am_names(names: list[str]) -> list[str]:
    """`am<datestring>` snapshots, oldest first."""
    return sorted(n for n in names if n.startswith(ab.AUTOMIRROR_PREFIX) and n[2:].isdigit())


def remote_snapshots(info: dict[str, Any] | None) -> list[str]:
    if not info:
        return []
    return am_names([str(s.get("name", "")) for s in info.get("snapshots") or [] if isinstance(s, dict)])


class Mirror:
    def __init__(self, ctx: TaskContext, cfg: AutomirrorSettings, now: float | None) -> None:
        self.ctx, self.cfg, self.zk, self.settings = ctx, cfg, ctx.zk, ctx.settings
        self.clock = now
        self.seams = seams()
        for dest in cfg.destinations.values():
            secrets.remember(dest.key)          # masked in every later log line of this process

    def vm(self, uuid: str, record: VMRecord, dests: list[str]) -> ab.VMResult:
        name = record.name
        stamp = self.clock if self.clock is not None else time.time()
        snap = f"{ab.AUTOMIRROR_PREFIX}{time.strftime('%Y%m%d%H%M%S', time.localtime(stamp))}"
        lines: list[str] = []
        unknown = [d for d in dests if d not in self.cfg.destinations]
        dests = [d for d in dests if d in self.cfg.destinations]
        lines += [f"{d}: FAILED: no destination '{d}' in automirror.destinations" for d in unknown]
        if not dests:
            return ab.VMResult(name, False, "no known destination", lines=lines)
        try:
            self.seams.create_snapshot(self.zk, self.settings, self.ctx.node, uuid, snap, "automirror",
                                       self.ctx.log)
        except Exception as exc:
            lines += [f"{d}: FAILED: the snapshot {snap} could not be taken" for d in dests]
            return ab.VMResult(name, False, f"snapshot {snap} failed: {_text(exc)}", snap, lines=lines)
        local = am_names(self.seams.snapshot_names(self.zk, uuid))
        holds: dict[str, set[str] | None] = {}        # destination -> am snapshots it keeps (None: unknown)
        sent = 0
        for dest in dests:
            ok, line, kept = self.destination(uuid, name, snap, dest, local)
            lines.append(f"{dest}: {line}")
            holds[dest] = kept
            sent += ok
        lines += self.prune_local(uuid, name, snap, local, holds, sent)
        ok = sent == len(dests) and not unknown
        message = f"{snap} sent to {sent} of {len(dests) + len(unknown)} destination(s)"
        return ab.VMResult(name, ok, message, snap, lines=lines)

    def destination(self, uuid: str, name: str, snap: str, dest_name: str,
                    local: list[str]) -> tuple[bool, str, set[str] | None]:
        """Send one snapshot to one destination; (sent, the result line, am… snapshots it keeps)."""
        conf = self.cfg.destinations[dest_name]
        lock = self.zk.lock(f"{DEST_LOCK}/{dest_name}", self.ctx.node)
        if not lock.acquire(timeout=60):
            return False, "FAILED: another send to this destination holds its lock", None
        remote: Any = None
        try:
            try:
                dest = self.seams.destination(conf)
            except Exception as exc:
                return False, f"FAILED: {_text(exc)}", None
            remote = self.seams.remote(dest)
            try:
                remote_ams = remote_snapshots(remote.vm(name))
            except Exception as exc:
                return False, f"FAILED: cannot read VM {name} on the destination: {_text(exc)}", None
            common = [s for s in remote_ams if s in local and s != snap]
            parent = common[-1] if common else None
            if remote_ams and parent is None:
                self.ctx.log(f"VM {name} -> {dest_name}: no am… snapshot on both sides; sending a full")
            try:
                self.seams.send_snapshot(self.zk, self.settings, uuid, snap, dest, parent, self.ctx.log)
            except TaskCancelled:
                raise
            except Exception as exc:
                return False, f"FAILED: send of {snap} failed: {_text(exc)}", set(remote_ams)
            kept = [*remote_ams, snap]
            removed = []
            for old in kept[:-self.cfg.keep_snapshots]:
                try:
                    remote.remove_snapshot(name, old)
                    removed.append(old)
                except Exception as exc:
                    self.ctx.log(f"VM {name} -> {dest_name}: could not remove {old} there: {_text(exc)}")
            kind = f"incremental from {parent}" if parent else "full"
            extra = f"; removed there: {', '.join(removed)}" if removed else ""
            return True, f"sent {snap} ({kind}){extra}", {s for s in kept if s not in removed}
        finally:
            with contextlib.suppress(Exception):
                lock.release()
            with contextlib.suppress(Exception):
                remote.close()

    def prune_local(self, uuid: str, name: str, snap: str, local: list[str],
                    holds: dict[str, set[str] | None], sent: int) -> list[str]:
        """Local am… snapshots go only when every destination is known not to hold them; the new
        snapshot goes when no destination received it (it can be no one's parent)."""
        if any(kept is None for kept in holds.values()):
            return []
        lines = []
        for old in local:
            if (old == snap and sent) or any(old in kept for kept in holds.values() if kept is not None):
                continue
            try:
                self.seams.remove_snapshot(self.zk, self.settings, uuid, old, True, self.ctx.log)
                lines.append(f"removed local snapshot {old}")
            except Exception as exc:
                lines.append(f"could not remove local snapshot {old}: {_text(exc)}")
        return lines


def _text(exc: BaseException) -> str:
    return secrets.mask(getattr(exc, "message", None) or str(exc) or type(exc).__name__)


def config_of(settings: Settings) -> AutomirrorSettings:
    cfg = settings.automirror
    if cfg is None:
        raise TaskFailed("Automirror is not configured: add an automirror section to pvc.conf on the "
                         "coordinators; nothing was done")
    return cfg


@task_kind(CLUSTER_AUTOMIRROR)
def automirror(ctx: TaskContext, email_recipients: list[str] | None = None, email_errors_only: bool = False,
               scheduled: str = "", now: float | None = None) -> dict[str, Any]:
    from pvc.cluster.vms import load_entries

    cfg = config_of(ctx.settings)
    recipients = ab.split_recipients(email_recipients)
    started = now if now is not None else time.time()
    results: list[ab.VMResult] = []
    general: list[str] = []
    with run_lock(ctx.zk, RUN_LOCK, ctx.node, "Automirror"):
        mirror = Mirror(ctx, cfg, now)
        chosen = []
        for entry in sorted(load_entries(ctx.zk), key=lambda e: e.record.name):
            dests = ab.automirror_destinations(tag_names(entry.record), cfg.mirror_tags,
                                               cfg.default_destination)
            if dests:
                chosen.append((entry.record, dests))
        cancelled: TaskCancelled | None = None
        try:
            for index, (record, dests) in enumerate(chosen):
                ctx.progress(index, len(chosen) + 1, f"Mirroring VM {record.name} to {', '.join(dests)}")
                try:
                    results.append(mirror.vm(record.uuid, record, dests))
                except TaskCancelled:
                    raise
                except Exception as exc:
                    results.append(ab.VMResult(record.name, False, f"unexpected error: {_text(exc)}"))
        except TaskCancelled as exc:
            cancelled = exc
            general.append("the run was cancelled")
    for result in results:
        ctx.log(f"VM {result.vm}: {'OK' if result.ok else 'FAILED'}: {result.message}")
        for line in result.lines:
            ctx.log(f"VM {result.vm}: {line}")
    subject, body = ab.automirror_report(ctx.settings.cluster.name, started, results, general)
    failed = bool(general) or any(not r.ok for r in results)
    mail_error = send_report(ctx, recipients, subject, body, "Automirror") \
        if failed or not email_errors_only else None
    if cancelled is not None:
        raise cancelled
    bad = [r.vm for r in results if not r.ok]
    status = (f"Automirror finished with errors: {len(bad)} of {len(results)} VM(s) failed ({', '.join(bad)})"
              if bad else f"Automirror finished: {len(results)} VM(s) mirrored")
    summary = {"status": status, "scheduled": scheduled, "report": body,
               "vms": [{"vm": r.vm, "ok": r.ok, "message": r.message, "snapshot": r.snapshot,
                        "details": r.lines} for r in results],
               "errors": general + ([mail_error] if mail_error else [])}
    if failed:
        raise TaskFailed(status, summary)
    return summary
