"""OSD steps shared by the OSD kinds: Ceph commands and waits (cluster side), and the OSD
documents in ZooKeeper (/ceph/osds/<id>)."""

from __future__ import annotations

import time
from typing import Any

from pvc.adapters.ceph import Storage, StorageError, StorageNotFound
from pvc.adapters.osd import OsdError, OsdService, PreparedOsd
from pvc.core import schema
from pvc.worker.kinds.storage import common
from pvc.worker.registry import TaskContext, TaskFailed

DOWN_TIMEOUT = 30.0           # a stopped OSD must be marked down by then (else we mark it)
OSD_CAPS = ["mon", "allow profile osd", "mgr", "allow profile osd", "osd", "allow *"]


# ------------------------------------------------------------------------------ Ceph (cluster)

def read_osd_map(storage: Storage) -> dict[int, dict[str, Any]]:
    dump = storage.mon_command("osd dump") or {}
    return {int(o["osd"]): o for o in dump.get("osds", [])}


def new_osd_id(storage: Storage, osd_uuid: str) -> int:
    answer = storage.mon_command("osd new", uuid=osd_uuid)
    value = answer.get("osdid") if isinstance(answer, dict) else answer
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise OsdError(f"ceph osd new gave no OSD id (answer: {answer!r})") from None


def osd_key(storage: Storage, osd_id: int) -> str:
    """The OSD's cephx key, created in the mons (it never appears on a command line)."""
    answer = storage.mon_command("auth get-or-create", entity=f"osd.{osd_id}", caps=OSD_CAPS)
    entry = answer[0] if isinstance(answer, list) and answer else answer
    key = entry.get("key") if isinstance(entry, dict) else None
    if not key:
        raise OsdError(f"ceph auth get-or-create osd.{osd_id} returned no key")
    return str(key)


def crush_add(storage: Storage, osd_id: int, weight: float, node: str) -> None:
    storage.mon_command("osd crush add", id=osd_id, weight=float(weight),
                        args=["root=default", f"host={node}"])


def crush_weight(storage: Storage, osd_id: int) -> float | None:
    tree = storage.mon_command("osd tree") or {}
    for item in tree.get("nodes", []):
        if item.get("id") == osd_id and item.get("type") == "osd":
            return float(item.get("crush_weight", 0)) or None
    return None


def mgr_backed(storage: Storage, verb: str, osd_id: int) -> None:
    """`osd destroy`/`osd purge` are mgr commands whose safety check we already made; the mons
    take the `-actual` forms (what the mgr sends after its check)."""
    error: StorageError | None = None
    for prefix in (f"osd {verb}-actual", f"osd {verb}"):
        try:
            storage.mon_command(prefix, id=osd_id, yes_i_really_mean_it=True)
            return
        except StorageNotFound:
            return
        except StorageError as exc:
            error = error or exc
    assert error is not None
    raise error


def purge(storage: Storage, osd_id: int) -> None:
    mgr_backed(storage, "purge", osd_id)


def safe_to_destroy(storage: Storage, osd_id: int) -> tuple[bool, str]:
    try:
        answer = storage.mon_command("osd safe-to-destroy", ids=[str(osd_id)]) or {}
    except StorageError as exc:
        return False, exc.message
    if osd_id in answer.get("safe_to_destroy", []):
        return True, ""
    detail = ", ".join(f"{k}: {v}" for k, v in answer.items() if k != "safe_to_destroy" and v)
    return False, detail or "not safe yet"


def wait_up_in(ctx: TaskContext, storage: Storage, service: OsdService, ids: list[int],
                timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        osds = read_osd_map(storage)
        pending = [i for i in ids if not (osds.get(i, {}).get("up") and osds.get(i, {}).get("in"))]
        if not pending:
            return
        for osd_id in pending:
            if not service.running(osd_id):
                raise TaskFailed(f"OSD {osd_id} stopped before it came up: "
                                 f"{service.describe_failure(osd_id)}")
        if time.monotonic() > deadline:
            states = ", ".join(f"osd.{i} {'up' if osds.get(i, {}).get('up') else 'down'}/"
                               f"{'in' if osds.get(i, {}).get('in') else 'out'}" for i in pending)
            raise TaskFailed(f"OSD(s) {', '.join(map(str, pending))} did not come up and in within "
                             f"{timeout:.0f}s ({states})")
        ctx.check_cancelled()
        time.sleep(common.POLL)


def wait_safe(ctx: TaskContext, storage: Storage, osd_id: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        safe, detail = safe_to_destroy(storage, osd_id)
        if safe:
            return
        if time.monotonic() > deadline:
            raise TaskFailed(f"OSD {osd_id} did not become safe to remove within {timeout:.0f}s "
                             f"({detail}): Ceph still needs its data; wait for recovery and retry, or "
                             f"remove it with force")
        ctx.check_cancelled()
        time.sleep(common.POLL)


def wait_down(storage: Storage, osd_id: int, timeout: float = DOWN_TIMEOUT) -> None:
    """A stopped OSD reports itself down; if the mons did not hear it, mark it down ourselves."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not read_osd_map(storage).get(osd_id, {}).get("up"):
            return
        time.sleep(common.POLL)
    storage.mon_command("osd down", ids=[str(osd_id)])


# ------------------------------------------------------------------------------------ ZooKeeper

def osd_doc(ctx: TaskContext, osd_id: int) -> dict[str, Any] | None:
    doc = ctx.zk.get(schema.osd(osd_id), None)
    return doc if isinstance(doc, dict) else None


def write_osd(ctx: TaskContext, service: OsdService, osd_id: int, node: str, device: str,
               prepared: PreparedOsd | None = None, db_device: str = "", is_split: bool = False,
               keep: dict[str, Any] | None = None) -> None:
    doc = {**(keep or {}), "id": str(osd_id), "node": node, "device": device,
           "db_device": db_device or (prepared.db_device if prepared else ""),
           "fsid": prepared.fsid if prepared else (keep or {}).get("fsid", ""),
           "is_split": is_split, "service": service.mode, "stats": (keep or {}).get("stats", {})}
    if prepared and prepared.vg:
        doc.update(vg=prepared.vg, lv=prepared.lv, cluster_fsid=prepared.cluster_fsid)
    ctx.zk.put(schema.osd(osd_id), doc)


def osds_on_device(ctx: TaskContext, node: str, device: str) -> list[dict[str, Any]]:
    docs = [osd_doc(ctx, int(i)) for i in ctx.zk.children(schema.CEPH_OSDS) if str(i).isdigit()]
    return sorted((d for d in docs if d and d.get("node") == node and d.get("device") == device),
                  key=lambda d: int(d["id"]))
