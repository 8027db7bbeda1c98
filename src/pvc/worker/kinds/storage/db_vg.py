"""`osd.add_db_vg`: the `osd-db` volume group that holds external bluestore DB volumes.

Deliberate difference from upstream: the volume group is made on the whole device (wipefs +
pvcreate + vgcreate) rather than on a GPT partition made by sgdisk.
"""

from __future__ import annotations

from typing import Any

from pvc.adapters import osd as osd_adapter
from pvc.adapters.osd import OsdError, SystemdOsdService
from pvc.core.taskkinds import OSD_ADD_DB_VG
from pvc.worker.kinds.storage import common
from pvc.worker.kinds.storage.common import Stages, fail_on, on_node
from pvc.worker.registry import TaskContext, TaskFailed, task_kind


@task_kind(OSD_ADD_DB_VG)
def osd_add_db_vg(ctx: TaskContext, node: str, device: str, **_: Any) -> dict[str, Any]:
    """Create the `osd-db` volume group that holds external bluestore DB volumes."""
    on_node(ctx, node)
    service = common.osd_service_for(ctx.settings)
    if not isinstance(service, SystemdOsdService):
        raise TaskFailed(f"An OSD database volume group needs LVM block devices; node {ctx.node} runs "
                         f"its OSDs in direct mode (storage.osd_service: direct), which has no external "
                         f"DB volumes")
    stages = Stages(ctx, 3)
    stages.start(f"Creating new OSD database volume group on device {device}")
    try:
        if service.db_vg_exists():
            raise TaskFailed("Ceph OSD database VG already exists")
        real = service.resolve(device)
        stages(f"Checking device {real}")
        service.check_unpartitioned(real)
        stages(f'Creating LVM PV and VG "{osd_adapter.DB_VG}" on device {real}')
        service.create_db_vg(real)
    except OsdError as exc:
        raise fail_on(exc) from None
    stages("Done")
    return {"status": f"Successfully created new OSD DB volume group on device {real}"}
