"""`osd.add`: new OSD(s) on a device of this node, in CRUSH, started, recorded, up and in.

Systemd mode uses ceph-volume (one device may be split into several OSDs, optionally with DB
volumes in the `osd-db` volume group); direct mode makes one bluestore OSD on a file.
"""

from __future__ import annotations

import uuid
from typing import Any

from pvc.adapters import osd as osd_adapter
from pvc.adapters.ceph import Storage, StorageError
from pvc.adapters.osd import DirectOsdService, OsdError, PreparedOsd, SystemdOsdService
from pvc.core import schema
from pvc.core.taskkinds import OSD_ADD
from pvc.worker.kinds.storage import common
from pvc.worker.kinds.storage.common import OSD_UP_TIMEOUT, Stages, fail_on, on_node, task_reverter
from pvc.worker.kinds.storage.osds import crush_add, new_osd_id, osd_key, purge, wait_up_in, write_osd
from pvc.worker.registry import TaskContext, TaskFailed, task_kind


@task_kind(OSD_ADD)
def osd_add(ctx: TaskContext, node: str, device: str, weight: float, ext_db_ratio: float | None = None,
            ext_db_size: int | None = None, osd_count: int | None = None,
            timeout: float = OSD_UP_TIMEOUT, **_: Any) -> dict[str, Any]:
    """Create OSD(s) on a device of this node, put them in CRUSH, start them, wait until up+in."""
    on_node(ctx, node)
    count = int(osd_count or 1)
    if ext_db_ratio is not None and ext_db_size:
        raise TaskFailed("Invalid configuration: both an ext_db_size and ext_db_ratio were specified")
    service, storage = common.osd_service_for(ctx.settings), common.storage_for(ctx.settings)
    if isinstance(service, SystemdOsdService):
        return _add_systemd(ctx, storage, service, device, float(weight), count, ext_db_ratio,
                            int(ext_db_size) if ext_db_size else None, timeout)
    assert isinstance(service, DirectOsdService)
    if count > 1:
        raise TaskFailed(f"osd_count {count}: splitting a device into several OSDs needs LVM block devices; "
                         f"this node runs OSDs in direct mode (one OSD per file)")
    if ext_db_ratio is not None or ext_db_size:
        raise TaskFailed("An external OSD DB volume needs LVM block devices; this node runs OSDs in direct "
                         "mode (storage.osd_service: direct)")
    stages = Stages(ctx, 8)
    stages.start(f"Adding 1 new OSD(s) on device {device} with weight {weight}")
    osd_id = add_direct(ctx, stages, storage, service, device, float(weight), timeout)
    stages("Done")
    return {"status": f"Successfully created 1 new OSD(s) {osd_id} on device {device}", "osds": [osd_id]}


def add_direct(ctx: TaskContext, stages: Stages, storage: Storage, service: DirectOsdService,
                device: str, weight: float, timeout: float) -> int:
    """Seven stages: a bluestore OSD on a file, registered, in CRUSH, running, recorded, up+in."""
    with task_reverter(ctx) as revert:
        try:
            stages(f"Preparing block file for device {device}")
            block = service.resolve(device)
            created = service.prepare_block(block)
            if created:
                ctx.log(f"created sparse file {block.path} of {block.size} bytes")
            revert.add(f"release {block.path}", lambda: service.discard_block(block.path, created))

            stages("Creating OSD in the cluster")
            osd_uuid = str(uuid.uuid4())
            osd_id = new_osd_id(storage, osd_uuid)
            revert.add(f"purge OSD {osd_id}", lambda: purge(storage, osd_id))
            key = osd_key(storage, osd_id)

            stages(f"Creating bluestore for OSD {osd_id} on {block.path}")
            revert.add(f"remove the data directory of OSD {osd_id}", lambda: service.remove_data(osd_id))
            service.mkfs(osd_id, osd_uuid, key, block.path, created)

            stages(f"Adding OSD {osd_id} to CRUSH map")
            crush_add(storage, osd_id, weight, ctx.node)

            stages(f"Starting OSD {osd_id}")
            revert.add(f"stop OSD {osd_id}", lambda: service.stop(osd_id))
            service.start(osd_id)

            stages(f"Adding OSD {osd_id} to PVC")
            revert.add(f"delete OSD {osd_id} from PVC", lambda: ctx.zk.delete(schema.osd(osd_id)))
            write_osd(ctx, service, osd_id, ctx.node, str(block.path),
                       PreparedOsd(id=osd_id, fsid=osd_uuid))

            stages(f"Waiting for OSD {osd_id} to come up and in")
            wait_up_in(ctx, storage, service, [osd_id], timeout)
        except (StorageError, OsdError) as exc:
            raise fail_on(exc) from None
        revert.commit()
    return osd_id


def _discard_prepared(storage: Storage, service: SystemdOsdService, device: str) -> None:
    """Undo ceph-volume batch: its OSDs are registered in the cluster and live on the device."""
    for osd in service.list_osds(device):
        if service.running(osd.id):
            service.stop(osd.id)
        purge(storage, osd.id)
    service.zap(device)


def _add_systemd(ctx: TaskContext, storage: Storage, service: SystemdOsdService, device: str, weight: float,
                 count: int, ext_db_ratio: float | None, ext_db_size: int | None,
                 timeout: float) -> dict[str, Any]:
    with_db = ext_db_ratio is not None or ext_db_size is not None
    stages = Stages(ctx, 5 + 3 * count + (3 * count + 1 if with_db else 0))
    stages.start(f"Adding {count} new OSD(s) on device {device} with weight {weight}")
    with task_reverter(ctx) as revert:
        try:
            real = service.resolve(device)
            if real != device:
                ctx.log(f"Determined block device {real} from detect string {device}")
            if with_db and not service.db_vg_exists():
                raise TaskFailed(f"No OSD database volume group '{osd_adapter.DB_VG}' on node {ctx.node}; "
                                 f"create it first (pvc storage osd create-db-vg)")
            service.check_unpartitioned(real)

            stages(f"Zapping block device {real}")
            service.zap(real)

            stages(f"Preparing OSD(s) on device {real}")
            revert.add(f"remove the OSD(s) prepared on {real}",
                       lambda: _discard_prepared(storage, service, real))
            service.batch_prepare(real, count, osd_adapter.device_class(real))

            stages(f"Querying OSD(s) on device {real}")
            created = service.list_osds(real)
            if not created:
                raise TaskFailed(f"ceph-volume lvm batch created no OSD on {real}")

            if with_db:
                for osd in created:
                    stages(f"Preparing DB LV for OSD {osd.id}")
                    size = osd_adapter.db_size_bytes(service.size_of(osd.lv_path), ext_db_ratio, ext_db_size)
                    assert size is not None
                    lv = osd_adapter.db_lv_name(osd.id)
                    stages(f"Preparing Bluestore DB volume for OSD {osd.id} on {lv}")
                    service.create_db_lv(osd.id, size)
                    revert.add(f"remove {lv}", lambda lv=lv: service.remove_db_lv(lv))
                    stages(f"Attaching Bluestore DB volume to OSD {osd.id}")
                    service.attach_db(osd.id, osd.fsid, lv)
                stages(f"Requerying OSD(s) on device {real}")
                created = service.list_osds(real)

            for osd in created:
                stages(f"Adding OSD {osd.id} to CRUSH map")
                crush_add(storage, osd.id, weight, ctx.node)
                stages(f"Activating OSD {osd.id}")
                revert.add(f"stop OSD {osd.id}", lambda i=osd.id: service.stop(i))
                service.activate(osd.id, osd.fsid)
                stages(f"Adding OSD {osd.id} to PVC")
                revert.add(f"delete OSD {osd.id} from PVC", lambda i=osd.id: ctx.zk.delete(schema.osd(i)))
                write_osd(ctx, service, osd.id, ctx.node, real, osd, is_split=count > 1)

            stages("Waiting for new OSD(s) to come up and in")
            wait_up_in(ctx, storage, service, [o.id for o in created], timeout)
        except (StorageError, OsdError) as exc:
            raise fail_on(exc) from None
        revert.commit()
    ids = [o.id for o in created]
    stages("Done")
    return {"status": f"Successfully created {len(ids)} new OSD(s) {','.join(map(str, ids))} on device "
                      f"{real}", "osds": ids}
