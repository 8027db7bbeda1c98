"""Storage operations (pvc-facts §6): pools, volumes, snapshots, OSDs, flags and benchmarks.

pvcapid runs these on the primary coordinator, which can reach Ceph, through a `Storage` adapter.
Every operation validates all of its input and the cluster's state first (nothing changes when it
is refused), then acts on Ceph, then mirrors the result into the /ceph documents in ZooKeeper,
which the primary node daemon keeps refreshing with statistics:

    /ceph/pools/<p>           {name, pgs, tier, copies, mincopies, stats{id, stored_bytes, free_bytes, ...}}
    /ceph/volumes/<p>/<v>     {name, pool, stats: `rbd info --format json`}
    /ceph/snapshots/<p>/<v>/<s> {pool, volume, snapshot, stats: `rbd info` of the snapshot}
    /ceph/osds/<id>           {id, node, device, db_device, stats{...}}   (written by OSD tasks)
    /ceph/benchmarks/<job>    {id, job, pool, test_format, benchmark_result} (by the benchmark task)

Long operations (OSD add/replace/refresh/remove, DB volume groups, benchmarks) are tasks for a
node's worker; here they are only validated and submitted. Adapter errors become PVC errors in
one place (`ceph()`): not found -> 404, exists/refused -> 400, Ceph unreachable -> 503.

The package is split per object: `common` (checks, limits, adapter errors, `ceph df` figures),
`pools`, `volumes`, `snapshots`, `osds` (with flags and the Ceph status), `benchmarks`; `users`
(which VMs use a volume) and `docs` (writing volume and snapshot documents) are shared by them.
"""

from __future__ import annotations

from pvc.adapters.ceph import IMAGE_FORMATS, OSD_FLAGS
from pvc.cluster.storage.benchmarks import benchmark_view, list_benchmarks, run_benchmark
from pvc.cluster.storage.common import (
    MAX_COPIES,
    MAX_NAME,
    MAX_PGS,
    SAFE_RATIO,
    TIERS,
    PoolSpace,
    StorageDown,
    VolumeInUse,
    ceph,
    check_db_options,
    check_device,
    check_name,
    check_osd_id,
    check_pgs,
    check_space,
    check_tier,
    check_weight,
    df_space,
    df_stats,
    human_size,
    parse_replcfg,
    parse_volume_size,
)
from pvc.cluster.storage.osds import (
    MAX_OSDS_PER_DEVICE,
    add_db_vg,
    add_osd,
    ceph_report,
    get_osd,
    get_osd_item,
    list_osds,
    osd_state,
    osd_view,
    refresh_osd,
    remove_osd,
    replace_osd,
    set_flag,
    set_osd_in,
)
from pvc.cluster.storage.pools import (
    add_pool,
    get_pool,
    list_pools,
    pool_item,
    pool_space,
    pool_view,
    remove_pool,
    set_pool_pgs,
)
from pvc.cluster.storage.snapshots import (
    add_snapshot,
    get_snapshot,
    list_snapshots,
    remove_snapshot,
    rename_snapshot,
    rollback_snapshot,
    snapshot_item,
    snapshot_view,
)
from pvc.cluster.storage.users import volume_users, volumes_in_use
from pvc.cluster.storage.volumes import (
    add_volume,
    check_upload,
    clone_volume,
    get_volume,
    list_volumes,
    remove_volume,
    rename_volume,
    resize_volume,
    scan_volume,
    volume_item,
    volume_view,
    write_upload,
)

__all__ = [
    "IMAGE_FORMATS",
    "MAX_COPIES",
    "MAX_NAME",
    "MAX_OSDS_PER_DEVICE",
    "MAX_PGS",
    "OSD_FLAGS",
    "SAFE_RATIO",
    "TIERS",
    "PoolSpace",
    "StorageDown", "VolumeInUse",
    "add_db_vg",
    "add_osd",
    "add_pool",
    "add_snapshot",
    "add_volume",
    "benchmark_view",
    "ceph",
    "ceph_report",
    "check_db_options",
    "check_device",
    "check_name",
    "check_osd_id",
    "check_pgs",
    "check_space",
    "check_tier",
    "check_upload",
    "check_weight",
    "clone_volume",
    "df_space",
    "df_stats",
    "get_osd",
    "get_osd_item",
    "get_pool",
    "get_snapshot",
    "get_volume",
    "human_size",
    "list_benchmarks",
    "list_osds",
    "list_pools",
    "list_snapshots",
    "list_volumes",
    "osd_state",
    "osd_view",
    "parse_replcfg",
    "parse_volume_size",
    "pool_item",
    "pool_space",
    "pool_view",
    "refresh_osd",
    "remove_osd",
    "remove_pool",
    "remove_snapshot",
    "remove_volume",
    "rename_snapshot",
    "rename_volume",
    "replace_osd",
    "resize_volume",
    "rollback_snapshot",
    "run_benchmark",
    "scan_volume",
    "set_flag",
    "set_osd_in",
    "set_pool_pgs",
    "snapshot_item",
    "snapshot_view",
    "volume_item",
    "volume_users",
    "volume_view",
    "volumes_in_use",
    "write_upload",
]
