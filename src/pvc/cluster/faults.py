"""Cluster faults: raised by daemons, listed, acknowledged and deleted by administrators.

As upstream PVC 1.0 (pvc-facts §11.2): a fault's id is its name, one per condition
(`DEAD_NODE_<node>`, `VM_FAILED_<vm>`, `CEPH_WARN_<check>`, ...), so a recurring condition
updates one entry; times are local `YYYY-MM-DD HH:MM:SS`; while the cluster is in maintenance no
new fault is raised, but existing ones are still updated. Our addition: `clear_fault` deletes a
fault whose condition has ended (upstream keeps it until an administrator deletes it).

The interface for code that detects conditions is `raise_fault(zk, name, delta, message)` and
`clear_fault(zk, name)`; everything else here serves the API.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

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


def raise_fault(zk: ZK, name: str, health_delta: int, message: str) -> FaultRecord | None:
    """Create the fault `name`, or refresh last_reported, delta and message of the existing one.

    In maintenance mode an existing fault is refreshed but no new one is created (None is
    returned), as upstream.
    """
    fid = fault_id(name)
    path = schema.fault(fid)
    if not zk.exists(path) and get_cluster(zk).maintenance:
        return None
    now = fault_time()

    def change(doc: dict[str, Any] | None) -> dict[str, Any]:
        if doc is None:
            return FaultRecord(id=fid, first_reported=now, last_reported=now,
                               health_delta=health_delta, message=message).doc()
        return {**doc, "last_reported": now, "health_delta": health_delta, "message": message}

    return FaultRecord.model_validate(zk.update(path, change, create=True))


def clear_fault(zk: ZK, name: str) -> None:
    """The condition behind fault `name` is over: remove the fault (absent is fine)."""
    zk.delete(schema.fault(fault_id(name)))


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
