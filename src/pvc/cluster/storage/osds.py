"""OSDs, OSD flags and the cluster's Ceph status.

Adding, replacing, refreshing and removing OSDs (and DB volume groups) are tasks for the OSD's
node's worker (pvc.worker.kinds.storage); here they are only validated and submitted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pvc.adapters.ceph import OSD_FLAGS, Storage
from pvc.cluster import tasks as tasks_mod
from pvc.cluster.nodes import get_node, primary_node
from pvc.cluster.storage.common import (
    StorageDown,
    ceph,
    check_db_options,
    check_device,
    check_weight,
    name_filter,
    read_doc,
    set_stats,
)
from pvc.core import schema
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.records import TaskRecord
from pvc.core.taskkinds import (
    OSD_ADD,
    OSD_ADD_DB_VG,
    OSD_REFRESH,
    OSD_REMOVE,
    OSD_REPLACE,
    DbVgArgs,
    OsdAddArgs,
    OsdRefreshArgs,
    OsdRemoveArgs,
    OsdReplaceArgs,
)
from pvc.core.zk import ZK

MAX_OSDS_PER_DEVICE = 16


def get_osd(zk: ZK, osd_id: str | int) -> dict[str, Any]:
    text = str(osd_id)
    doc = read_doc(zk, schema.osd(text)) if re.fullmatch(r"\d{1,9}", text) else None
    if doc is None:
        raise NotFound(f'No OSD with ID "{osd_id}" is present in the cluster.')
    return doc


def osd_view(doc: Mapping[str, Any], osd_id: str) -> dict[str, Any]:
    """The OSD item: {id, fsid, node, device, is_split, db_device, stats}."""
    stats = doc.get("stats")
    return {
        "id": str(doc.get("id", osd_id)),
        "fsid": doc.get("fsid", ""),
        "node": doc.get("node", ""),
        "device": doc.get("device", ""),
        "is_split": bool(doc.get("is_split", False)),
        "db_device": doc.get("db_device") or "",
        "stats": stats if isinstance(stats, dict) else {},
    }


def list_osds(zk: ZK, limit: str | None = None) -> list[dict[str, Any]]:
    """OSDs whose ID matches limit (fuzzy regex), sorted by numeric ID."""
    keep = name_filter(limit)
    ids = [i for i in zk.children(schema.CEPH_OSDS) if keep(i)]
    docs = zk.get_many([schema.osd(i) for i in ids])
    out = [osd_view(docs[schema.osd(i)], i) for i in ids if isinstance(docs.get(schema.osd(i)), dict)]
    return sorted(out, key=lambda item: (int(item["id"]) if item["id"].isdigit() else 1 << 40, item["id"]))


def get_osd_item(zk: ZK, osd_id: str) -> dict[str, Any]:
    """One OSD (exact ID; upstream matched this fuzzily, so '1' also returned 10, 11, ...)."""
    try:
        return osd_view(get_osd(zk, osd_id), osd_id)
    except NotFound:
        raise NotFound("OSD not found.") from None


def osd_state(zk: ZK, osd_id: str) -> dict[str, Any]:
    """{id, in, up} as 0/1 from the OSD's statistics (0 until the first statistics arrive)."""
    item = get_osd_item(zk, osd_id)

    def flag(key: str) -> int:
        value = item["stats"].get(key, 0)
        return 1 if value in (1, True, "1", "up", "in") else 0

    return {"id": item["id"], "in": flag("in"), "up": flag("up")}


def ceph_report(zk: ZK, kind: str) -> dict[str, Any]:
    """`{type, primary_node, ceph_data}` for GET /storage/ceph/status (kind 'status') or
    /utilization (kind 'utilization'), from what the primary last reported."""
    doc = read_doc(zk, schema.CEPH_STATUS)
    key = "status_text" if kind == "status" else "util_text"
    if doc is None or not isinstance(doc.get(key), str):
        raise StorageDown("No Ceph status has been reported yet: the primary node reports it every keepalive "
                          "once it can reach Ceph.")
    return {"type": kind, "primary_node": primary_node(zk) or doc.get("node", ""),
            "ceph_data": doc[key].rstrip()}


def set_osd_in(zk: ZK, storage: Storage, osd_id: str, is_in: bool) -> str:
    get_osd(zk, osd_id)
    with ceph(f"set OSD {osd_id} {'in' if is_in else 'out'}"):
        storage.set_osd_in(int(osd_id), is_in)
    set_stats(zk, schema.osd(osd_id), **{"in": 1 if is_in else 0})
    return f"Set OSD {osd_id} {'online' if is_in else 'offline'}."


def set_flag(storage: Storage, option: str, enabled: bool) -> str:
    if option not in OSD_FLAGS:
        raise InvalidInput(f"option: '{option}' is not one of {', '.join(OSD_FLAGS)}")
    with ceph(f'{"set" if enabled else "unset"} OSD property "{option}"'):
        storage.set_flag(option, enabled)
    return f'{"Set" if enabled else "Unset"} OSD property "{option}".'


def _node_input(zk: ZK, node: str | None, field: str = "node") -> str:
    if not node:
        raise InvalidInput(f"{field}: a node is required")
    try:
        return get_node(zk, node).name
    except NotFound:
        raise InvalidInput(f"{field}: no node named '{node}' is in the cluster") from None


def _osd_node(zk: ZK, osd_id: str) -> str:
    doc = get_osd(zk, osd_id)
    node = doc.get("node") or ""
    if not node or not zk.exists(schema.node(node)):
        raise Conflict(f"OSD {osd_id} has no known node ({node or 'none recorded'}); cannot route the task.")
    return str(node)


def add_osd(zk: ZK, node: str, device: str, weight: float, ext_db_ratio: float | None = None,
            ext_db_size: str | None = None, osd_count: int | None = None) -> TaskRecord:
    """Queue `osd.add` on the node (ext_db_size is passed on in bytes)."""
    node = _node_input(zk, node)
    device = check_device(device)
    weight = check_weight(weight)
    ratio, db_size = check_db_options(ext_db_ratio, ext_db_size)
    count = 1 if osd_count is None else osd_count
    if not 1 <= count <= MAX_OSDS_PER_DEVICE:
        raise InvalidInput(f"osd_count: {count} must be between 1 and {MAX_OSDS_PER_DEVICE}")
    for osd in list_osds(zk):
        if osd["node"] == node and osd["device"] == device:
            raise Conflict(f'Block device "{device}" on node "{node}" is already used by OSD {osd["id"]}.')
    args = OsdAddArgs(node=node, device=device, weight=weight, ext_db_ratio=ratio, ext_db_size=db_size,
                      osd_count=count)
    return tasks_mod.submit(zk, OSD_ADD, args, target=node)


def add_db_vg(zk: ZK, node: str, device: str) -> TaskRecord:
    """Queue `osd.add_db_vg` (the `osd-db` volume group) on the node."""
    node = _node_input(zk, node)
    device = check_device(device)
    return tasks_mod.submit(zk, OSD_ADD_DB_VG, DbVgArgs(node=node, device=device), target=node)


def replace_osd(zk: ZK, osd_id: str, new_device: str, old_device: str | None = None,
                weight: float | None = None, ext_db_ratio: float | None = None,
                ext_db_size: str | None = None) -> TaskRecord:
    """Queue `osd.replace` on the OSD's node; an option left None means "as the old OSD"."""
    new_device = check_device(new_device, "new_device")
    old = check_device(old_device, "old_device") if old_device else None
    if weight is not None:
        check_weight(weight)
    ratio, db_size = check_db_options(ext_db_ratio, ext_db_size)
    node = _osd_node(zk, osd_id)
    args = OsdReplaceArgs(osd_id=int(osd_id), new_device=new_device, old_device=old, weight=weight,
                          ext_db_ratio=ratio, ext_db_size=db_size)
    return tasks_mod.submit(zk, OSD_REPLACE, args, target=node)


def refresh_osd(zk: ZK, osd_id: str, device: str) -> TaskRecord:
    """Queue `osd.refresh` (re-import the OSD's LVs) on its node."""
    device = check_device(device)
    node = _osd_node(zk, osd_id)
    return tasks_mod.submit(zk, OSD_REFRESH, OsdRefreshArgs(osd_id=int(osd_id), device=device), target=node)


def remove_osd(zk: ZK, osd_id: str, force: bool = False) -> TaskRecord:
    """Queue `osd.remove` on the OSD's node."""
    node = _osd_node(zk, osd_id)
    return tasks_mod.submit(zk, OSD_REMOVE, OsdRemoveArgs(osd_id=int(osd_id), force=force), target=node)
