"""`osd.replace`: rebuild an OSD on a new device.

Systemd mode keeps the OSD's id and CRUSH place (upstream): every OSD split from the same device
is taken out and stopped (undone on failure or cancel), then, past the point of no return,
destroyed and rebuilt on the new device with the same ids and FSIDs. Direct mode removes the OSD
and adds a new one on the new file with the same weight.
"""

from __future__ import annotations

import uuid
from typing import Any

from pvc.adapters import osd as osd_adapter
from pvc.adapters.ceph import Storage, StorageError
from pvc.adapters.osd import DirectOsdService, OsdError, PreparedOsd, SystemdOsdService
from pvc.core.taskkinds import OSD_REPLACE
from pvc.worker.kinds.storage import common
from pvc.worker.kinds.storage.add import add_direct
from pvc.worker.kinds.storage.common import (
    OSD_UP_TIMEOUT,
    SAFE_TIMEOUT,
    Stages,
    fail_on,
    on_node,
    task_reverter,
    tolerant,
)
from pvc.worker.kinds.storage.osds import (
    crush_add,
    crush_weight,
    mgr_backed,
    osd_doc,
    osds_on_device,
    read_osd_map,
    wait_down,
    wait_safe,
    wait_up_in,
    write_osd,
)
from pvc.worker.kinds.storage.remove import remove_osd_steps, remove_stage_count
from pvc.worker.registry import TaskContext, TaskFailed, task_kind


@task_kind(OSD_REPLACE)
def osd_replace(ctx: TaskContext, osd_id: int, new_device: str, old_device: str | None = None,
                weight: float | None = None, ext_db_ratio: float | None = None,
                ext_db_size: int | None = None, timeout: float = OSD_UP_TIMEOUT,
                safe_timeout: float = SAFE_TIMEOUT, **_: Any) -> dict[str, Any]:
    """Rebuild an OSD on a new device: systemd keeps its id and CRUSH place (upstream); direct mode
    removes it and adds a new OSD on the new file with the same weight."""
    osd_id = int(osd_id)
    service, storage = common.osd_service_for(ctx.settings), common.storage_for(ctx.settings)
    doc = osd_doc(ctx, osd_id)
    if doc is None:
        raise TaskFailed(f"OSD {osd_id} is not known to PVC")
    on_node(ctx, doc.get("node", ""))
    try:
        weight = float(weight) if weight else (crush_weight(storage, osd_id) or 1.0)
    except StorageError as exc:
        raise fail_on(exc, "Failed to read the CRUSH weight") from None
    if isinstance(service, SystemdOsdService):
        db_size = int(ext_db_size) if ext_db_size else None
        return _replace_systemd(ctx, storage, service, osd_id, doc, new_device, old_device, weight,
                                ext_db_ratio, db_size, timeout, safe_timeout)
    assert isinstance(service, DirectOsdService)
    if ext_db_ratio is not None or ext_db_size:
        raise TaskFailed("An external OSD DB volume needs LVM block devices; this node runs OSDs in "
                         "direct mode")
    stages = Stages(ctx, remove_stage_count(service, doc, False) + 7 + 1)
    stages.start(f"Replacing OSD {osd_id} with device {new_device}")
    remove_osd_steps(ctx, stages, storage, service, osd_id, doc, False, safe_timeout)
    new_id = add_direct(ctx, stages, storage, service, new_device, weight, timeout)
    stages("Done")
    return {"status": f"Successfully replaced OSD {osd_id} with OSD {new_id} on new device {new_device}",
            "osds": [new_id]}


def _replace_systemd(ctx: TaskContext, storage: Storage, service: SystemdOsdService, osd_id: int,
                     doc: dict[str, Any], new_device: str, old_device: str | None, weight: float,
                     ext_db_ratio: float | None, ext_db_size: int | None, timeout: float,
                     safe_timeout: float) -> dict[str, Any]:
    block = doc.get("device", "")
    peers = osds_on_device(ctx, ctx.node, block) or [doc]
    ids = [int(p["id"]) for p in peers]
    with_db = ext_db_ratio is not None or ext_db_size is not None or any(p.get("db_device") for p in peers)
    stages = Stages(ctx, 3 + 10 * len(ids) + (2 * len(ids) if with_db else 0))
    stages.start(f"Replacing OSD(s) {','.join(map(str, ids))} with device {new_device}")
    try:
        new = service.resolve(new_device)
        service.check_unpartitioned(new)
        osd_map = read_osd_map(storage)
        fsids = {i: str(osd_map.get(i, {}).get("uuid") or next(
            (p.get("fsid") for p in peers if int(p["id"]) == i), "")) for i in ids}
        real_old = _old_device(ctx, service, osd_id, (old_device, block))
    except (StorageError, OsdError) as exc:
        raise fail_on(exc) from None

    _take_out(ctx, stages, storage, service, ids, safe_timeout)
    stages.irreversible()

    try:
        for i in ids:
            stages(f"Destroying OSD {i}")
            mgr_backed(storage, "destroy", i)
        stages(f"Zapping old disk {real_old} if possible")
        if real_old:
            try:
                service.zap(real_old)
            except OsdError as exc:
                ctx.log(f"Failed to zap old disk {real_old} ({exc.message}); proceeding anyways")
        _rebuild(ctx, stages, storage, service, new, peers, fsids, weight, ext_db_ratio, ext_db_size)
        stages("Waiting for the OSD(s) to come up and in")
        wait_up_in(ctx, storage, service, ids, timeout)
    except (StorageError, OsdError) as exc:
        raise fail_on(exc) from None
    stages("Done")
    return {"status": f"Successfully replaced OSD(s) {','.join(map(str, ids))} on new disk {new}",
            "osds": ids}


def _old_device(ctx: TaskContext, service: SystemdOsdService, osd_id: int,
                candidates: tuple[str | None, str]) -> str | None:
    """The device the OSD lives on now (the one given, else the recorded one), to zap it later."""
    for candidate in candidates:
        if candidate and osd_id in {o.id for o in service.list_osds(candidate)}:
            return candidate
    ctx.log("No valid old block device found for OSD(s); skipping zap")
    return None


def _take_out(ctx: TaskContext, stages: Stages, storage: Storage, service: SystemdOsdService, ids: list[int],
              safe_timeout: float) -> None:
    """Set the OSDs out and stop them; undone on failure or cancel. Not being safe to destroy in
    time does not stop a replacement (the OSD is being replaced because it is failing)."""
    with task_reverter(ctx) as revert:
        for i in ids:
            stages(f"Setting OSD {i} out")
            tolerant(ctx, False, f"set OSD {i} out", lambda i=i: storage.set_osd_in(i, False))
            revert.add(f"set OSD {i} in", lambda i=i: storage.set_osd_in(i, True))
            stages(f"Waiting for OSD {i} to be safe to remove")
            try:
                wait_safe(ctx, storage, i, safe_timeout)
            except TaskFailed as exc:
                ctx.log(f"{exc}; proceeding anyway (the OSD is being replaced)")
            stages(f"Stopping OSD {i}")
            was_running = service.running(i)
            tolerant(ctx, False, f"stop OSD {i}", lambda i=i: service.stop(i))
            if was_running:
                revert.add(f"start OSD {i}", lambda i=i: service.start(i))
            tolerant(ctx, True, f"mark OSD {i} down", lambda i=i: wait_down(storage, i))
        revert.commit()


def _rebuild(ctx: TaskContext, stages: Stages, storage: Storage, service: SystemdOsdService, new: str,
             peers: list[dict[str, Any]], fsids: dict[int, str], weight: float, ext_db_ratio: float | None,
             ext_db_size: int | None) -> None:
    """The destroyed OSDs again on the new disk, with their ids and FSIDs: one LV each (and a DB
    volume when asked for or when they had one), back in CRUSH, activated, recorded."""
    ids = [int(p["id"]) for p in peers]
    stages(f"Preparing LVM volume group on new disk {new}")
    vg = f"ceph-{uuid.uuid4()}"
    service.make_block_vg(new, vg)
    osd_mb = service.size_of(new) // len(ids) // osd_adapter.MIB // 4 * 4
    if ext_db_ratio is not None:
        db_bytes: int | None = int(osd_mb * ext_db_ratio) // 4 * 4 * osd_adapter.MIB
    elif ext_db_size is not None:
        db_bytes = ext_db_size
    elif peers[0].get("db_device"):
        db_bytes = service.size_of(str(peers[0]["db_device"]))
    else:
        db_bytes = None
    for i in ids:
        stages(f"Preparing LVM logical volume for OSD {i} on new disk {new}")
        data = service.create_block_lv(vg, fsids[i], osd_mb)
        stages(f"Preparing OSD {i} on new disk {new}")
        service.prepare_existing(i, fsids[i], data)
    for i in ids:
        db_lv = ""
        if db_bytes:
            db_lv = osd_adapter.db_lv_name(i)
            stages(f"Preparing Bluestore DB volume for OSD {i} on {db_lv}")
            try:
                service.remove_db_lv(db_lv)
            except OsdError:
                pass            # there was none
            service.create_db_lv(i, db_bytes)
            stages(f"Attaching Bluestore DB volume to OSD {i}")
            service.attach_db(i, fsids[i], db_lv)
        stages(f"Updating OSD {i} in CRUSH map")
        crush_add(storage, i, weight, ctx.node)
        stages(f"Activating OSD {i}")
        service.activate(i, fsids[i])
        stages(f"Updating OSD {i} in PVC")
        prepared = next((o for o in service.list_osds(new) if o.id == i), PreparedOsd(id=i, fsid=fsids[i]))
        old = next(p for p in peers if int(p["id"]) == i)
        write_osd(ctx, service, i, ctx.node, new, prepared, db_device=db_lv, is_split=len(ids) > 1, keep=old)
