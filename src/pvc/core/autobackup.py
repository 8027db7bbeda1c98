"""Autobackup and automirror decisions, pure: which VMs, full or incremental, what retention removes,
which `ab…` snapshots are orphans, the `.autobackup.json` document and the report text.

Upstream's rules (full if none yet, forced, or the newest full sits at index >= full_interval - 1;
incrementals diff against the newest full; fulls beyond full_retention go with their incrementals),
with its defect removed: only successful entries whose files are still on the target count, so a
failed or lost full never becomes a parent and never pushes a good chain out of retention.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pvc.core.records import BackupRecord

AUTOBACKUP_PREFIX = "ab"
AUTOMIRROR_PREFIX = "am"
STATE_FILE = ".autobackup.json"
FAILED_FAULT_PREFIX = "AUTOBACKUP_FAILED"


def failed_fault(vm: str) -> str:
    """The fault a VM's failed autobackup raises: upper case like every other per-entry fault id
    (`VM_FAILED_WEB1`, pvc.cluster.faults.fault_name)."""
    return f"{FAILED_FAULT_PREFIX}_{vm.upper()}"


def failed_fault_ids(vm: str) -> list[str]:
    """Every id a VM's failed-autobackup fault may have: ours, and the mixed-case one earlier
    versions raised (`AUTOBACKUP_FAILED_web1`), so clearing finds either."""
    return list(dict.fromkeys((failed_fault(vm), f"{FAILED_FAULT_PREFIX}_{vm}")))


# -- selection ---------------------------------------------------------------------------------------

def autobackup_selected(tag_names: Iterable[str], backup_tags: Sequence[str]) -> bool:
    """Upstream: a VM is backed up when any of its tag names is one of backup_tags."""
    return any(name in backup_tags for name in tag_names)


def automirror_destinations(tag_names: Iterable[str], mirror_tags: Sequence[str],
                            default_destination: str) -> list[str]:
    """Upstream: a tag `T` or `T:<dest>` with T in mirror_tags picks the default destination or
    <dest>; several tags, several destinations. Empty: the VM is not mirrored."""
    out: list[str] = []
    for name in tag_names:
        base, sep, dest = name.partition(":")
        if base not in mirror_tags:
            continue
        chosen = dest if sep and dest else default_destination
        if chosen not in out:
            out.append(chosen)
    return out


def split_recipients(values: Iterable[str] | str | None) -> list[str]:
    """email_recipients as upstream's clients send it (repeated keys) or as one comma-separated
    value; ValueError names an entry that is not a plain address (no spaces or line breaks)."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for item in items:
        for part in str(item).split(","):
            address = part.strip()
            if not address:
                continue
            if "@" not in address or any(c.isspace() or c in "<>\"" for c in address):
                raise ValueError(f"email recipient '{address}' is not a plain address like ops@example.com")
            if address not in out:
                out.append(address)
    return out


# -- full or incremental -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    type: str                    # "full" or "incremental"
    parent: str | None
    reason: str


def newest_first(records: Iterable[BackupRecord]) -> list[BackupRecord]:
    return sorted(records, key=lambda r: (r.started, r.snapshot), reverse=True)


def good_entries(records: Iterable[BackupRecord], on_target: set[str] | None = None) -> list[BackupRecord]:
    """Successful entries (newest first) whose directory is still on the target (when known)."""
    return [r for r in newest_first(records)
            if r.result and (on_target is None or r.snapshot in on_target)]


def decide(records: Iterable[BackupRecord], full_interval: int, force_full: bool,
           parents_in_ceph: set[str], on_target: set[str] | None = None) -> Decision:
    """Full or incremental for the next backup of one VM.

    `parents_in_ceph`: the VM's snapshot names that still exist (an incremental needs its parent's
    RBD snapshots); `on_target`: the snapshot directories present on the target (None: unknown).
    """
    good = good_entries(records, on_target)
    fulls = [r for r in good if r.type == "full"]
    if force_full:
        return Decision("full", None, "full backup forced")
    if not fulls:
        return Decision("full", None, "no good full backup yet")
    newest = fulls[0]
    index = good.index(newest)
    if index >= full_interval - 1:
        return Decision("full", None, f"the newest full ({newest.snapshot}) is {index} backups old "
                                      f"(full_interval {full_interval})")
    if newest.snapshot not in parents_in_ceph:
        return Decision("full", None, f"the newest full's snapshot {newest.snapshot} is gone from the "
                                      "cluster, so no incremental can be made against it")
    return Decision("incremental", newest.snapshot, f"incremental against {newest.snapshot}")


# -- retention ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Removal:
    record: BackupRecord
    reason: str


def retention(records: Iterable[BackupRecord], full_retention: int, on_target: set[str] | None,
              now: float, failed_retention_days: int) -> list[Removal]:
    """What to remove (VM snapshot, directory and catalogue entry) for one VM.

    - good fulls beyond `full_retention` (newest first), and every incremental of them;
    - incrementals whose parent is not a good full any more (their chain cannot be restored);
    - successful entries whose directory is gone from the target (`on_target` known), but only
      when a newer good full exists there: the newest valid chain is never touched;
    - failed entries older than `failed_retention_days` (kept until then for the report).
    """
    ordered = newest_first(records)
    good = good_entries(ordered, on_target)
    good_fulls = [r for r in good if r.type == "full"]
    keep_fulls = {r.snapshot for r in good_fulls[:full_retention]}
    newest_full = good_fulls[0] if good_fulls else None
    out: dict[str, Removal] = {}

    def mark(record: BackupRecord, reason: str) -> None:
        out.setdefault(record.snapshot, Removal(record, reason))

    for record in good_fulls[full_retention:]:
        mark(record, f"full beyond full_retention {full_retention}")
    for record in ordered:
        if record.snapshot in out:
            continue
        if record.result and on_target is not None and record.snapshot not in on_target:
            if newest_full is not None and record.started < newest_full.started:
                mark(record, "its files are gone from the target")
            continue
        if record.type == "incremental" and record.result and record.parent not in keep_fulls:
            if newest_full is not None or record.parent in out:
                mark(record, f"its parent {record.parent} is not a retained good full")
            continue
        if not record.result and now - (record.finished or record.started) > failed_retention_days * 86400:
            mark(record, f"failed more than {failed_retention_days} days ago")
    return [out[r.snapshot] for r in ordered if r.snapshot in out]


# -- orphans -------------------------------------------------------------------------------------------

def orphans(snapshot_names: Iterable[str], records: Iterable[BackupRecord],
            prefix: str = AUTOBACKUP_PREFIX, busy: Iterable[str] = ()) -> list[str]:
    """`ab…` snapshots of a VM that no retained good full accounts for: no catalogue entry, a
    failed one, or an incremental (whose snapshot should have gone after its export). `busy`:
    snapshots a running backup is working on."""
    retained = {r.snapshot for r in records if r.result and r.type == "full" and r.snapshot_retained}
    skip = set(busy)
    return sorted(n for n in snapshot_names
                  if n.startswith(prefix) and n[len(prefix):].isdigit() and n not in retained
                  and n not in skip)


# -- .autobackup.json ----------------------------------------------------------------------------------

def datestring_of(snapshot: str) -> str:
    return snapshot[len(AUTOBACKUP_PREFIX):] if snapshot.startswith(AUTOBACKUP_PREFIX) else snapshot


def state_entry(record: BackupRecord, snapshot_json: dict[str, Any] | None = None) -> dict[str, Any]:
    """One `tracked_backups` entry in upstream's shape (its snapshot.json plus result, message,
    datestring, runtime_secs); our checksums ride along under `pvc_files`."""
    entry: dict[str, Any] = dict(snapshot_json or {})
    runtime = round((record.finished or record.started) - record.started, 1)
    entry.update({
        "type": record.type,
        "snapshot_name": record.snapshot,
        "incremental_parent": record.parent,
        "result": record.result,
        "message": record.message,
        "datestring": datestring_of(record.snapshot),
        "runtime_secs": runtime,
        "export_files": [[f.path, f.size] for f in record.files] or entry.get("export_files", []),
        "export_size_bytes": record.bytes or entry.get("export_size_bytes", 0),
        "pvc_files": [f.model_dump() for f in record.files],
    })
    return entry


def state_document(records: Iterable[BackupRecord],
                   snapshot_jsons: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    jsons = snapshot_jsons or {}
    return {"tracked_backups": [state_entry(r, jsons.get(r.snapshot)) for r in newest_first(records)]}


def parse_state(text: str, source: str = STATE_FILE) -> list[dict[str, Any]]:
    """The `tracked_backups` of a `.autobackup.json` (ours or upstream's); ValueError names the problem."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{source}: not JSON ({exc})") from None
    tracked = doc.get("tracked_backups") if isinstance(doc, dict) else None
    if not isinstance(tracked, list) or not all(isinstance(e, dict) and e.get("snapshot_name")
                                                for e in tracked):
        raise ValueError(f"{source}: no tracked_backups list of entries with a snapshot_name")
    return tracked


def record_from_state(vm: str, entry: dict[str, Any], target: str) -> BackupRecord:
    """A catalogue entry for a backup found only in a target's `.autobackup.json` (an upstream tree,
    or a catalogue lost with its cluster)."""
    name = str(entry["snapshot_name"])
    try:
        started = time.mktime(time.strptime(datestring_of(name), "%Y%m%d%H%M%S"))
    except ValueError:
        started = 0.0
    files = [{"path": str(f[0]), "size": int(f[1])} for f in entry.get("export_files") or []
             if isinstance(f, list | tuple) and len(f) == 2]
    return BackupRecord.model_validate({
        "vm": vm, "snapshot": name,
        "type": "incremental" if entry.get("type") == "incremental" else "full",
        "parent": entry.get("incremental_parent") or None, "origin": "autobackup",
        "result": bool(entry.get("result", True)), "message": str(entry.get("message") or ""),
        "started": started, "finished": started + float(entry.get("runtime_secs") or 0),
        "bytes": int(entry.get("export_size_bytes") or 0),
        "files": entry.get("pvc_files") or files, "target": target,
        "snapshot_retained": entry.get("type") != "incremental",
    })


# -- reports -------------------------------------------------------------------------------------------

def human_size(size: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if size < 1024 or unit == "T":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size}B"


def _when(stamp: float) -> str:
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(stamp))


@dataclass
class VMResult:
    """One VM's outcome in a run, for the report and the task result."""

    vm: str
    ok: bool
    message: str
    snapshot: str = ""
    type: str = ""
    lines: list[str] = field(default_factory=list)


def autobackup_report(cluster: str, started: float, results: Sequence[VMResult],
                      history: dict[str, list[BackupRecord]], general: Sequence[str] = ()) -> tuple[str, str]:
    """(subject, body) of the autobackup email: per VM, its backups newest first (date, success or
    failure, runtime, snapshot, type, files and size), as upstream's."""
    failed = [r for r in results if not r.ok]
    outcome = "with errors" if failed or general else "successfully"
    subject = f"PVC Autobackup report for cluster '{cluster}': finished {outcome}"
    lines = [f"Autobackup report for cluster '{cluster}', run started {_when(started)}", ""]
    lines += [f"Error: {line}" for line in general]
    if general:
        lines.append("")
    for result in results:
        lines.append(f"VM {result.vm}: {'OK' if result.ok else 'FAILED'}: {result.message}")
        for line in result.lines:
            lines.append(f"    {line}")
        for record in newest_first(history.get(result.vm, [])):
            runtime = round((record.finished or record.started) - record.started)
            state = "Success" if record.result else "Failure"
            lines.append(f"    {_when(record.started)}: {state} in {runtime} seconds, ID {record.snapshot}, "
                         f"type {record.type}")
            if record.result:
                lines.append(f"        {len(record.files)} files totalling {human_size(record.bytes)}")
            elif record.message:
                lines.append(f"        {record.message}")
        lines.append("")
    if not results:
        lines.append("No VM carries one of the backup tags.")
    return subject, "\n".join(lines) + "\n"


def automirror_report(cluster: str, started: float, results: Sequence[VMResult],
                      general: Sequence[str] = ()) -> tuple[str, str]:
    failed = [r for r in results if not r.ok]
    outcome = "with errors" if failed or general else "successfully"
    subject = f"PVC Automirror report for cluster '{cluster}': finished {outcome}"
    lines = [f"Automirror report for cluster '{cluster}', run started {_when(started)}", ""]
    lines += [f"Error: {line}" for line in general]
    for result in results:
        lines.append(f"VM {result.vm}: {'OK' if result.ok else 'FAILED'}: {result.message}")
        lines += [f"    {line}" for line in result.lines]
    if not results:
        lines.append("No VM carries one of the mirror tags.")
    return subject, "\n".join(lines) + "\n"
