"""Cluster faults: raised by daemons, listed, acknowledged and deleted by administrators.

As upstream PVC 1.0 (pvc-facts §11.2): a fault's id is its name, one per condition
(`DEAD_NODE_<NODE>`, `VM_FAILED_<VM>`, `CEPH_WARN_<CHECK>`, ...), so a recurring condition
updates one entry; times are local `YYYY-MM-DD HH:MM:SS`; while the cluster is in maintenance no
new fault is raised, but existing ones are still updated. Acknowledging (status `ack`, reported
delta 0) and deleting (gone until it fires again) keep upstream's meaning.

Our addition: a fault whose condition has ended is *resolved* (`active` false, `resolved_at` set)
by whoever detects the end (`resolve_fault`; `clear_fault` is its older name), so it stops
lowering cluster health without a human. It stays listed (`GET /faults?all=true`) until the
primary prunes it after `faults.fault_retention_days`; if it fires again it is a new occurrence
(active, status `new`, reported anew).

Cluster health = max(0, 100 - the deltas of the faults that are active and not acknowledged).
The interface for code that detects conditions is `raise_fault(zk, name, delta, message)` and
`resolve_fault(zk, name)`; everything else here serves the API and the primary's checks.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from kazoo.exceptions import NoNodeError

from pvc.cluster.clusterinfo import get_cluster
from pvc.core import schema
from pvc.core.errors import InvalidInput, NotFound
from pvc.core.records import FaultRecord
from pvc.core.zk import ZK

SORT_KEYS = {
    "first_reported": "first_reported",
    "last_reported": "last_reported",
    "acknowledged_at": "acknowledged_at",
    "status": "status",
    "health_delta": "health_delta",
    "message": "message",
}


_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@+-]")


def fault_id(name: str) -> str:
    """The id of the fault named `name`: the name itself (upstream's ids), with any character that
    cannot stand in a URL path or a ZooKeeper node name replaced by `_`."""
    fid = _UNSAFE.sub("_", name or "")
    if not fid.strip("."):
        raise ValueError(f"{name!r} is not a fault name")
    return fid


def fault_time() -> str:
    """Now as upstream writes fault times: local time, to the second."""
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def fault_name(prefix: str, entry: Any = "") -> str:
    """Upstream's fault name for a condition about `entry`: `<PREFIX>_<ENTRY>` in capitals
    (`DEAD_NODE_HV2`, `VM_FAILED_WEB1`), or the prefix alone when there is no entry."""
    entry = str(entry)
    return f"{prefix}_{entry.upper()}" if entry else prefix


def parse_time(text: str) -> datetime | None:
    """A fault time (local, to the second) as a datetime; None if it is not one."""
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return None


class _Refused(Exception):
    """Raised inside a compare-and-set to leave the fault as it is (maintenance)."""


def raise_fault(zk: ZK, name: str, health_delta: int, message: str) -> FaultRecord | None:
    """Create the fault `name`, or refresh last_reported, delta and message of the active one.

    A resolved fault that fires again becomes a new occurrence: active, status `new`, first
    reported now. In maintenance mode an active fault is refreshed, but no new one is created and
    no resolved one comes back (None is returned), as upstream raises none then.
    """
    fid = fault_id(name)
    maintenance = get_cluster(zk).maintenance
    now = fault_time()

    def fresh() -> dict[str, Any]:
        if maintenance:
            raise _Refused
        return FaultRecord(id=fid, first_reported=now, last_reported=now,
                           health_delta=health_delta, message=message).doc()

    def change(doc: dict[str, Any] | None) -> dict[str, Any]:
        if not isinstance(doc, dict) or doc.get("active") is False:
            return fresh()
        return {**doc, "last_reported": now, "health_delta": health_delta, "message": message}

    try:
        return FaultRecord.model_validate(zk.update(schema.fault(fid), change, create=True))
    except _Refused:
        return None


def resolve_fault(zk: ZK, name: str) -> bool:
    """The condition behind fault `name` is over: mark it resolved (it stops lowering health and
    is kept for the retention period). False if there was no active fault of that name."""
    now = fault_time()
    changed = False

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        nonlocal changed
        if not isinstance(doc, dict) or doc.get("active") is False:
            changed = False
            return doc
        changed = True
        return {**doc, "active": False, "resolved_at": now}

    try:
        zk.update(schema.fault(fault_id(name)), change)
    except NoNodeError:
        return False
    return changed


def clear_fault(zk: ZK, name: str) -> None:
    """The older name of `resolve_fault` (HA and the VM reconciler call it when a condition ends)."""
    resolve_fault(zk, name)


def counts(fault: FaultRecord) -> bool:
    """Whether the fault lowers cluster health now: active and not acknowledged."""
    return fault.active and fault.status != "ack"


def cluster_health(faults: list[FaultRecord]) -> int:
    """As upstream, 100 minus the deltas of the faults that count, never below 0."""
    return max(0, 100 - sum(f.health_delta for f in faults if counts(f)))


def load_faults(zk: ZK, resolved: bool = False) -> list[FaultRecord]:
    """The active faults; with `resolved`, the resolved ones too."""
    ids = zk.children(schema.FAULTS)
    docs = zk.get_many([schema.fault(i) for i in ids])
    found = [FaultRecord.model_validate(d) for d in docs.values() if isinstance(d, dict)]
    return found if resolved else [f for f in found if f.active]


def prune_resolved(zk: ZK, retention_days: float, now: datetime | None = None) -> list[str]:
    """Delete the faults resolved more than `retention_days` ago; their ids."""
    limit = (now or datetime.now()) - timedelta(days=retention_days)
    pruned = []
    for fault in load_faults(zk, resolved=True):
        resolved_at = parse_time(fault.resolved_at)
        if fault.active or resolved_at is None or resolved_at > limit:
            continue

        def gone(doc: dict[str, Any] | None, when: str = fault.resolved_at) -> dict[str, Any] | None:
            # fired again meanwhile: keep it
            if isinstance(doc, dict) and (doc.get("active") is not False or doc.get("resolved_at") != when):
                raise _Refused
            return doc

        try:
            zk.update(schema.fault(fault.id), gone)
        except (_Refused, NoNodeError):
            continue
        zk.delete(schema.fault(fault.id))
        pruned.append(fault.id)
    return pruned


def fault_view(fault: FaultRecord) -> dict[str, Any]:
    """A fault as the API shows it: upstream's keys (the delta 0 once it no longer counts:
    acknowledged or resolved) plus ours, `active` and `resolved_at`."""
    view = fault.doc()
    if not counts(fault):
        view["health_delta"] = 0
    return view


def list_faults(zk: ZK, sort_key: str | None = None, resolved: bool = False) -> list[dict[str, Any]]:
    """The active faults (with `resolved`, every fault kept), sorted by `sort_key`."""
    key = sort_key or "last_reported"
    if key not in SORT_KEYS:
        raise InvalidInput(f"sort_key: '{key}' is not one of {', '.join(SORT_KEYS)}")
    views = [fault_view(f) for f in load_faults(zk, resolved)]
    reverse = key in ("last_reported", "first_reported", "health_delta", "acknowledged_at")
    return sorted(views, key=lambda v: (v[SORT_KEYS[key]], v["first_reported"], v["id"]), reverse=reverse)


def get_fault(zk: ZK, fid: str) -> FaultRecord:
    data = zk.get(schema.fault(fid), None) if _valid_id(fid) else None
    if not isinstance(data, dict):
        raise NotFound(f"No fault with ID {fid} found")
    return FaultRecord.model_validate(data)


def _valid_id(fid: str) -> bool:
    return bool(fid) and "/" not in fid and fid not in (".", "..")


def ack_fault(zk: ZK, fid: str) -> str:
    get_fault(zk, fid)
    now = fault_time()
    zk.update(schema.fault(fid), lambda d: {**d, "status": "ack", "acknowledged_at": d.get(
        "acknowledged_at") or now})
    return f"Successfully acknowledged fault(s) {fid}."


def ack_all(zk: ZK) -> str:
    """Acknowledge every fault kept, resolved ones included (as upstream: all of them)."""
    faults = load_faults(zk, resolved=True)
    for fault in faults:
        if fault.status != "ack":
            ack_fault(zk, fault.id)
    return f"Successfully acknowledged {len(faults)} fault(s)."


def delete_fault(zk: ZK, fid: str) -> str:
    get_fault(zk, fid)
    zk.delete(schema.fault(fid))
    return f"Successfully deleted fault(s) {fid}."


def delete_all(zk: ZK) -> str:
    """Delete every fault kept, resolved ones included."""
    faults = load_faults(zk, resolved=True)
    for fault in faults:
        zk.delete(schema.fault(fault.id))
    return f"Successfully deleted {len(faults)} fault(s)."
