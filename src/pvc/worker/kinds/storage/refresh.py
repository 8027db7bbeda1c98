"""`osd.refresh`: re-import an existing OSD on this node (after a reinstall or a moved disk),
start it and record it again."""

from __future__ import annotations

from typing import Any

from pvc.adapters.ceph import Storage, StorageError
from pvc.adapters.osd import DirectOsdService, OsdError, PreparedOsd, SystemdOsdService
from pvc.core.taskkinds import OSD_REFRESH
from pvc.worker.kinds.storage import common
from pvc.worker.kinds.storage.common import OSD_UP_TIMEOUT, Stages, fail_on
from pvc.worker.kinds.storage.osds import osd_doc, read_osd_map, wait_up_in, write_osd
from pvc.worker.registry import TaskContext, TaskFailed, task_kind


@task_kind(OSD_REFRESH)
def osd_refresh(ctx: TaskContext, osd_id: int, device: str = "", timeout: float = OSD_UP_TIMEOUT,
                **_: Any) -> dict[str, Any]:
    """Re-import an existing OSD on this node (after a reinstall or a moved disk) and start it."""
    osd_id = int(osd_id)
    service, storage = common.osd_service_for(ctx.settings), common.storage_for(ctx.settings)
    doc = osd_doc(ctx, osd_id)
    if doc and doc.get("node") and doc["node"] != ctx.node:
        raise TaskFailed(f"OSD {osd_id} is on node {doc['node']}, not on {ctx.node}")
    try:
        osd_map = read_osd_map(storage)
    except StorageError as exc:
        raise fail_on(exc, "Failed to read the OSD map") from None
    if osd_id not in osd_map:
        raise TaskFailed(f"Could not find OSD {osd_id} in the cluster")
    if isinstance(service, SystemdOsdService):
        return _refresh_systemd(ctx, storage, service, osd_id, doc, device, osd_map, timeout)
    assert isinstance(service, DirectOsdService)
    stages = Stages(ctx, 5)
    stages.start(f"Refreshing/reimporting OSD {osd_id} from {service.data_dir(osd_id)}")
    try:
        stages(f"Checking the data of OSD {osd_id}")
        info = service.launch_info(osd_id)
        if not info:
            raise TaskFailed(f"OSD {osd_id} has no data directory on node {ctx.node} "
                             f"({service.data_dir(osd_id)})")
        stages(f"Stopping OSD {osd_id}")
        service.stop(osd_id)
        stages(f"Starting OSD {osd_id}")
        service.start(osd_id)
        stages(f"Updating OSD {osd_id} in PVC")
        write_osd(ctx, service, osd_id, ctx.node, str(info.get("block") or (doc or {}).get("device", "")),
                   PreparedOsd(id=osd_id, fsid=str(osd_map[osd_id].get("uuid", ""))), keep=doc)
        stages(f"Waiting for OSD {osd_id} to come up and in")
        wait_up_in(ctx, storage, service, [osd_id], timeout)
    except (StorageError, OsdError) as exc:
        raise fail_on(exc) from None
    return {"status": f"Successfully reimported OSD(s) {osd_id} on device {service.data_dir(osd_id)}",
            "osds": [osd_id]}


def _refresh_systemd(ctx: TaskContext, storage: Storage, service: SystemdOsdService, osd_id: int,
                     doc: dict[str, Any] | None, device: str, osd_map: dict[int, dict[str, Any]],
                     timeout: float) -> dict[str, Any]:
    try:
        real = service.resolve(device or (doc or {}).get("device", ""))
        found = service.list_osds(real)
    except OsdError as exc:
        raise fail_on(exc) from None
    if osd_id not in {o.id for o in found}:
        raise TaskFailed(f"Could not find OSD {osd_id} on device {real}")
    stages = Stages(ctx, 1 + 3 * len(found))
    stages.start(f"Refreshing/reimporting OSD(s) {','.join(str(o.id) for o in found)} on device {real}")
    try:
        for osd in found:
            stages("Querying for OSD on device")
            expected = str(osd_map.get(osd.id, {}).get("uuid", ""))
            if expected and osd.fsid != expected:
                raise TaskFailed(f"OSD {osd.id} FSID {expected} does not match volume FSID {osd.fsid}; OSD "
                                 f"cannot be imported")
            stages(f"Activating OSD {osd.id}")
            service.activate(osd.id, osd.fsid)
            stages(f"Updating OSD {osd.id} in PVC")
            write_osd(ctx, service, osd.id, ctx.node, real, osd, is_split=len(found) > 1,
                       keep=osd_doc(ctx, osd.id))
        wait_up_in(ctx, storage, service, [o.id for o in found], timeout)
    except (StorageError, OsdError) as exc:
        raise fail_on(exc) from None
    return {"status": f"Successfully reimported OSD(s) {','.join(str(o.id) for o in found)} on device {real}",
            "osds": [o.id for o in found]}
