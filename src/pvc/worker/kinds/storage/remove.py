"""`osd.remove`: take an OSD out, wait until Ceph no longer needs it, stop it; then, past the
point of no return, destroy and purge it and clean its disk.

Before the point of no return a failure or a cancel puts the OSD back in and running; after it
the task finishes (a cancel is ignored) and, with `force`, steps that fail are logged and skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvc.adapters.ceph import Storage, StorageError
from pvc.adapters.osd import DirectOsdService, OsdError, OsdService, SystemdOsdService
from pvc.core import schema
from pvc.core.taskkinds import OSD_REMOVE
from pvc.worker.kinds.storage import common
from pvc.worker.kinds.storage.common import SAFE_TIMEOUT, Stages, fail_on, task_reverter, tolerant
from pvc.worker.kinds.storage.osds import (
    mgr_backed,
    osd_doc,
    osds_on_device,
    purge,
    read_osd_map,
    wait_down,
    wait_safe,
)
from pvc.worker.registry import TaskContext, TaskFailed, task_kind


@task_kind(OSD_REMOVE)
def osd_remove(ctx: TaskContext, osd_id: int, force: bool = False, safe_timeout: float = SAFE_TIMEOUT,
               **_: Any) -> dict[str, Any]:
    """Take an OSD out, wait until Ceph no longer needs it, stop and purge it, clean its disk."""
    osd_id = int(osd_id)
    service, storage = common.osd_service_for(ctx.settings), common.storage_for(ctx.settings)
    doc = osd_doc(ctx, osd_id)
    if doc and doc.get("node") and doc["node"] != ctx.node:
        raise TaskFailed(f"OSD {osd_id} is on node {doc['node']}, not on {ctx.node}")
    stages = Stages(ctx, remove_stage_count(service, doc, force) + 1)
    stages.start(f"Removing OSD {osd_id}")
    remove_osd_steps(ctx, stages, storage, service, osd_id, doc, force, safe_timeout)
    stages("Done")
    return {"status": f"Successfully removed OSD {osd_id}", "osd": osd_id}


def remove_stage_count(service: OsdService, doc: dict[str, Any] | None, force: bool) -> int:
    stages = 7 + (0 if force else 1)
    if isinstance(service, SystemdOsdService) and doc and doc.get("db_device"):
        stages += 1
    return stages


def remove_osd_steps(ctx: TaskContext, stages: Stages, storage: Storage, service: OsdService, osd_id: int,
            doc: dict[str, Any] | None, force: bool, safe_timeout: float) -> None:
    try:
        known = osd_id in read_osd_map(storage)
    except StorageError as exc:
        raise fail_on(exc, "Failed to read the OSD map") from None
    if not known:
        if not force:
            raise TaskFailed(f"OSD {osd_id} not found in Ceph")
        ctx.log(f"OSD {osd_id} not found in Ceph; ignoring error due to force flag")

    with task_reverter(ctx) as revert:
        stages(f"Setting OSD {osd_id} out")
        if known:
            tolerant(ctx, force, f"set OSD {osd_id} out", lambda: storage.set_osd_in(osd_id, False))
            revert.add(f"set OSD {osd_id} in", lambda: storage.set_osd_in(osd_id, True))
        if not force:
            stages(f"Waiting for OSD {osd_id} to be safe to remove")
            wait_safe(ctx, storage, osd_id, safe_timeout)
        stages(f"Stopping OSD {osd_id}")
        was_running = service.running(osd_id)
        tolerant(ctx, force, f"stop OSD {osd_id} process", lambda: service.stop(osd_id))
        if was_running:
            revert.add(f"start OSD {osd_id}", lambda: service.start(osd_id))
        if known:
            tolerant(ctx, force, f"mark OSD {osd_id} down", lambda: wait_down(storage, osd_id))
        revert.commit()

    # The point of no return: from here the OSD's data is given up.
    stages.irreversible()
    hint = "" if force else f"; retry the removal of OSD {osd_id} with force to finish it"

    def step(what: str, action: Callable[[], Any]) -> None:
        try:
            action()
        except (StorageError, OsdError) as exc:
            if not force:
                raise fail_on(exc, f"Failed to {what}{hint}") from None
            ctx.log(f"Failed to {what} ({exc.message}); ignoring error due to force flag")

    stages(f"Destroying OSD {osd_id}")
    step(f"destroy OSD {osd_id}", lambda: mgr_backed(storage, "destroy", osd_id))
    stages(f"Removing OSD {osd_id} from CRUSH map")
    step(f"remove OSD {osd_id} from the CRUSH map", lambda: storage.mon_command("osd crush rm",
                                                                                 name=f"osd.{osd_id}"))
    stages(f"Purging OSD {osd_id}")
    step(f"purge OSD {osd_id}", lambda: purge(storage, osd_id))

    device = (doc or {}).get("device", "")
    if isinstance(service, SystemdOsdService):
        db_device = (doc or {}).get("db_device", "")
        if db_device:
            stages(f"Removing OSD DB logical volume {db_device}")
            step(f"remove OSD DB logical volume {db_device}", lambda: service.remove_db_lv(db_device))
        stages(f"Zapping old disk {device or '(unknown)'} if possible")
        step(f"zap {device}", lambda: _zap_if_alone(ctx, service, osd_id, device))
    elif isinstance(service, DirectOsdService):
        stages(f"Removing the data of OSD {osd_id}")
        step(f"remove the data of OSD {osd_id}", lambda: service.remove_data(osd_id))
    stages(f"Deleting OSD {osd_id} from PVC")
    ctx.zk.delete(schema.osd(osd_id))


def _zap_if_alone(ctx: TaskContext, service: SystemdOsdService, osd_id: int, device: str) -> None:
    if not device:
        ctx.log(f"No device recorded for OSD {osd_id}; skipping zap")
        return
    if osd_id not in {o.id for o in service.list_osds(device)}:
        ctx.log(f"Could not find OSD {osd_id} on device {device}; skipping zap")
        return
    others = [d["id"] for d in osds_on_device(ctx, ctx.node, device) if int(d["id"]) != osd_id]
    if others:
        ctx.log(f"Found {len(others)} OSD(s) still remaining on {device}; skipping zap")
        return
    ctx.log(f"Found no peer split OSD(s) on {device}; zapping disk")
    service.zap(device)
