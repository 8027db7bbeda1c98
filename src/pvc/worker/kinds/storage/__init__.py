"""Storage tasks a node's worker runs (pvc-facts §6): OSD add/remove/replace/refresh, the OSD DB
volume group, and the storage benchmark.

OSD tasks run on the node that owns the disk (the API routes them there); cluster-side steps go
through the Storage adapter, node-side ones through this node's OSD service
(pvc.adapters.osd: `systemd` mode on real nodes, `direct` mode in the lab). Progress stages and
messages follow upstream PVC's, so `--wait` shows what an administrator knows.

Every step that changes something registers how to undo it (pvc.core.revert.Reverter); when a
later step fails or the task is cancelled, the undos run in reverse order, so a failed `osd.add`
leaves no half-made OSD behind. Removal has a point of no return (destroying the OSD in Ceph):
before it a failure or a cancel puts the OSD back in and running; after it the task finishes (a
cancel is ignored) and, with `force`, steps that fail are logged and skipped.

Deliberate differences from upstream: `osd.remove` without force fails if the OSD does not become
safe to destroy in time instead of removing it anyway after 60 s; the `osd-db` volume group is made
on the whole device (wipefs + pvcreate + vgcreate) rather than on a GPT partition made by sgdisk;
a benchmark's volume is removed also when the benchmark fails or is cancelled.

One module per kind (`add`, `remove`, `replace`, `refresh`, `db_vg`, `benchmark`); `osds` holds
the OSD steps they share and `common` the adapters (replaced there by tests), progress and revert.
Importing the package registers the kinds.
"""

from __future__ import annotations

from pvc.worker.kinds.storage.add import osd_add
from pvc.worker.kinds.storage.benchmark import storage_benchmark
from pvc.worker.kinds.storage.common import Stages
from pvc.worker.kinds.storage.db_vg import osd_add_db_vg
from pvc.worker.kinds.storage.refresh import osd_refresh
from pvc.worker.kinds.storage.remove import osd_remove
from pvc.worker.kinds.storage.replace import osd_replace

__all__ = [
    "Stages",
    "osd_add",
    "osd_add_db_vg",
    "osd_refresh",
    "osd_remove",
    "osd_replace",
    "storage_benchmark",
]
