"""Cluster faults: raised by daemons, listed, acknowledged and deleted by administrators."""

from __future__ import annotations

import hashlib
from typing import Any

from pvc.cluster.common import timestamp
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


def fault_id(key: str) -> str:
    """A stable id per fault condition, so a recurring fault updates one entry."""
    return hashlib.md5(key.encode()).hexdigest()


def raise_fault(zk: ZK, key: str, health_delta: int, message: str) -> FaultRecord:
    """Create the fault, or refresh last_reported/message of the existing one."""
    fid = fault_id(key)
    now = timestamp()

    def change(doc: dict[str, Any] | None) -> dict[str, Any]:
        if doc is None:
            return FaultRecord(id=fid, first_reported=now, last_reported=now,
                               health_delta=health_delta, message=message).doc()
        return {**doc, "last_reported": now, "health_delta": health_delta, "message": message}

    return FaultRecord.model_validate(zk.update(schema.fault(fid), change, create=True))


def clear_fault(zk: ZK, key: str) -> None:
    """The condition behind `key` is over: remove its fault (absent is fine)."""
    zk.delete(schema.fault(fault_id(key)))


def load_faults(zk: ZK) -> list[FaultRecord]:
    ids = zk.children(schema.FAULTS)
    docs = zk.get_many([schema.fault(i) for i in ids])
    return [FaultRecord.model_validate(d) for d in docs.values() if isinstance(d, dict)]


def fault_view(fault: FaultRecord) -> dict[str, Any]:
    view = fault.doc()
    if fault.status == "ack":
        view["health_delta"] = 0
    return view


def list_faults(zk: ZK, sort_key: str | None = None) -> list[dict[str, Any]]:
    key = sort_key or "last_reported"
    if key not in SORT_KEYS:
        raise InvalidInput(f"sort_key: '{key}' is not one of {', '.join(SORT_KEYS)}")
    views = [fault_view(f) for f in load_faults(zk)]
    reverse = key in ("last_reported", "first_reported", "health_delta", "acknowledged_at")
    return sorted(views, key=lambda v: (v[SORT_KEYS[key]], v["id"]), reverse=reverse)


def get_fault(zk: ZK, fid: str) -> FaultRecord:
    data = zk.get(schema.fault(fid), None) if _valid_id(fid) else None
    if not isinstance(data, dict):
        raise NotFound(f"No fault with ID {fid} found")
    return FaultRecord.model_validate(data)


def _valid_id(fid: str) -> bool:
    return bool(fid) and "/" not in fid and fid not in (".", "..")


def ack_fault(zk: ZK, fid: str) -> str:
    get_fault(zk, fid)
    now = timestamp()
    zk.update(schema.fault(fid), lambda d: {**d, "status": "ack", "acknowledged_at": d.get(
        "acknowledged_at") or now})
    return f"Successfully acknowledged fault(s) {fid}."


def ack_all(zk: ZK) -> str:
    faults = load_faults(zk)
    for fault in faults:
        if fault.status != "ack":
            ack_fault(zk, fault.id)
    return f"Successfully acknowledged {len(faults)} fault(s)."


def delete_fault(zk: ZK, fid: str) -> str:
    get_fault(zk, fid)
    zk.delete(schema.fault(fid))
    return f"Successfully deleted fault(s) {fid}."


def delete_all(zk: ZK) -> str:
    faults = load_faults(zk)
    for fault in faults:
        zk.delete(schema.fault(fault.id))
    return f"Successfully deleted {len(faults)} fault(s)."
