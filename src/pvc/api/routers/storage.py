"""Storage routes (pvc-facts §8.3 "Storage"): Ceph status, OSDs, pools, volumes, snapshots, benchmarks.

Decisions and writes live in pvc.cluster.storage; these routes parse inputs, call it and shape
answers as PVC clients expect (element GETs are one-element arrays, an empty list is a 404).
Reads come from ZooKeeper; changes go through the Storage adapter (`get_storage`, 503 when Ceph
cannot be reached) and are synchronous, except the long OSD and benchmark jobs, which are tasks
(202 + Location). An object named in the URL that does not exist is a 404; one named in the
inputs (e.g. `pool` of POST /storage/ceph/volume) is bad input, a 400.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import Field, WithJsonSchema
from starlette.datastructures import UploadFile

from pvc.adapters.ceph import Storage
from pvc.api.auth import require_auth
from pvc.api.common import get_storage, get_zk, ok, responses, task_accepted
from pvc.api.errors import ArgumentError, message
from pvc.api.models import (
    OSD,
    CephReport,
    Message,
    OSDState,
    Pool,
    Snapshot,
    StorageBenchmark,
    TaskAccepted,
    Volume,
)
from pvc.api.params import Bool, Inputs, inputs
from pvc.api.routers.cluster import CONFIRM, CONFIRM_TEXT
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import storage as st
from pvc.cluster import tasks as tasks_mod
from pvc.core import vocabulary
from pvc.core.errors import InvalidInput, NotFound
from pvc.core.records import TaskRecord
from pvc.core.zk import ZK

router = APIRouter(prefix="/storage", tags=["storage"], dependencies=[Depends(require_auth)])

NOT_FOUND = (404,)
COPY_CHUNK = 4 << 20

Flag = vocabulary.OsdFlag
ImageFormat = vocabulary.ImageFormat
Tier = vocabulary.PoolTier
UploadField = Annotated[Any, WithJsonSchema({"type": "string", "format": "binary"})]

LIMIT_HELP = "A regex on the {what}; fuzzy unless anchored with ^ or $"
DEVICE_HELP = ("The block device (e.g. /dev/sdb, /dev/disk/by-path/...), a detect string "
               "(detect:NAME:HUMAN-SIZE:INDEX), or on nodes running OSDs directly a file (file:PATH[:SIZE])")
FORCE_SPACE_HELP = "Allow filling the pool beyond 80 % (never beyond its free space)"
DB_RATIO_HELP = ("Create an OSD DB LV of this fraction of the OSD size (e.g. 0.05); excludes ext_db_size; "
                 "needs the node's osd-db volume group")
DB_SIZE_HELP = "Create an OSD DB LV of this size (e.g. 20G); excludes ext_db_ratio"
POOL_PGS_HELP = "The number of placement groups, a power of two (e.g. 32, 64, 128); others are refused"
POOL_REPLCFG_HELP = ("The replication configuration, e.g. 'copies=3,mincopies=2' (mincopies at most copies; "
                     "copies at most the hosts holding OSDs of the tier, unless force)")
POOL_FORCE_HELP = ("Create the pool even with more copies than hosts holding OSDs of its tier (hosts still "
                   "to be added); until they exist its placement groups stay degraded")



def _accepted(zk: ZK, task: TaskRecord) -> JSONResponse:
    return task_accepted(tasks_mod.accepted(task, nodes_mod.primary_node(zk)))


def _listing(items: list[dict[str, Any]], thing: str) -> JSONResponse:
    if not items:
        raise NotFound(f"{thing} not found.")
    return ok(items)


# Every pool statistic upstream's client formats (it int()s and float()s them), with its value
# before the first statistics pass (a pool just added has none yet).
POOL_STAT_DEFAULTS: dict[str, int | float] = {
    "id": 0, "stored_bytes": 0, "free_bytes": 0, "used_bytes": 0, "used_percent": 0.0, "num_objects": 0,
    "num_object_clones": 0, "num_object_copies": 0, "num_objects_missing_on_primary": 0,
    "num_objects_unfound": 0, "num_objects_degraded": 0, "read_ops": 0, "read_bytes": 0, "write_ops": 0,
    "write_bytes": 0,
}


# The volume statistics upstream's client formats (with a width) or joins, until `rbd info` is read.
VOLUME_STAT_DEFAULTS: dict[str, Any] = {"size": "", "objects": 0, "order": 0, "format": 0, "features": []}


def wire_volume(item: dict[str, Any]) -> dict[str, Any]:
    """A volume item whose formatted statistics are never null or missing."""
    stats = item.get("stats") if isinstance(item.get("stats"), dict) else {}
    filled = {key: default if stats.get(key) is None else stats[key]
              for key, default in VOLUME_STAT_DEFAULTS.items()}
    return {**item, "stats": {**stats, **filled}}


def wire_pool(item: dict[str, Any]) -> dict[str, Any]:
    """A pool item whose statistics are all numbers: zeros until the first statistics pass."""
    stats = item.get("stats") if isinstance(item.get("stats"), dict) else {}
    filled = {key: default if stats.get(key) is None else stats[key]
              for key, default in POOL_STAT_DEFAULTS.items()}
    return {**item, "stats": {**stats, **filled}}


@contextmanager
def _named_in_inputs() -> Iterator[None]:
    """Objects named by inputs (not the URL) that do not exist are bad input: 400, not 404."""
    try:
        yield
    except NotFound as exc:
        raise InvalidInput(exc.message) from None


# -- inputs -----------------------------------------------------------------------------------------

class LimitInputs(Inputs):
    limit: str | None = Field(None, description=LIMIT_HELP.format(what="name"))


class OsdLimitInputs(Inputs):
    limit: str | None = Field(None, description=LIMIT_HELP.format(what="OSD ID"))


class BenchmarkListInputs(Inputs):
    job: str | None = Field(None, description="Only the benchmark job with this exact name")


class BenchmarkInputs(Inputs):
    pool: str = Field(description="The storage pool to benchmark")
    name: str | None = Field(None, description="The job name [default: the start time and primary node]")


class OptionInputs(Inputs):
    option: Flag = Field(description="The OSD flag to set or unset (as `ceph osd set/unset`)")
    action: Literal["set", "unset"] = Field(description="Set or unset the flag")


class DbVgInputs(Inputs):
    node: str = Field(description="The node to create the OSD DB volume group (osd-db) on")
    device: str = Field(description=DEVICE_HELP)


class OsdAddInputs(Inputs):
    node: str = Field(description="The node to create the OSD(s) on")
    device: str = Field(description=DEVICE_HELP + "; all data on it is destroyed")
    weight: float = Field(description="The CRUSH weight of each OSD (usually its size in TiB)")
    ext_db_ratio: float | None = Field(None, description=DB_RATIO_HELP)
    ext_db_size: str | None = Field(None, description=DB_SIZE_HELP)
    osd_count: int | None = Field(None, description="Split the device into this many OSDs [default: 1]")


class OsdReplaceInputs(Inputs):
    new_device: str = Field(description=DEVICE_HELP + " to rebuild the OSD on")
    old_device: str | None = Field(None, description="The old block device, if it is known and still valid")
    weight: float | None = Field(None, description="The CRUSH weight of the new OSD [default: the old one]")
    ext_db_ratio: float | None = Field(None, description=DB_RATIO_HELP)
    ext_db_size: str | None = Field(None, description=DB_SIZE_HELP)
    confirm: str = Field(alias=CONFIRM, description=CONFIRM_TEXT)


class OsdRefreshInputs(Inputs):
    device: str = Field(description=DEVICE_HELP + " holding the OSD's existing volumes")


class OsdRemoveInputs(Inputs):
    force: Bool = Field(False, description="Go on even if Ceph says the OSD is not safe to destroy, or a "
                                           "step fails")
    confirm: str = Field(alias=CONFIRM, description=CONFIRM_TEXT)


class OsdStateInputs(Inputs):
    state: Literal["in", "out"] = Field(description="Set the OSD in or out")


class PoolAddInputs(Inputs):
    pool: str = Field(description="The name of the pool")
    pgs: int = Field(description=POOL_PGS_HELP)
    replcfg: str = Field(description=POOL_REPLCFG_HELP)
    tier: Tier = Field("default", description="The device class the pool's data lives on")
    force: Bool = Field(False, description=POOL_FORCE_HELP)


class PoolElementAddInputs(Inputs):
    pgs: int = Field(description=POOL_PGS_HELP)
    replcfg: str = Field(description=POOL_REPLCFG_HELP)
    tier: Tier = Field("default", description="The device class the pool's data lives on")
    force: Bool = Field(False, description=POOL_FORCE_HELP)


class PoolPgsInputs(Inputs):
    pgs: int = Field(description="The new number of placement groups (a power of two)")


class ConfirmInputs(Inputs):
    confirm: str = Field(alias=CONFIRM, description=CONFIRM_TEXT)


class VolumeListInputs(Inputs):
    limit: str | None = Field(None, description=LIMIT_HELP.format(what="volume name"))
    pool: str | None = Field(None, description="Only volumes of this pool")


class VolumeAddInputs(Inputs):
    volume: str = Field(description="The name of the volume")
    pool: str = Field(description="The pool to create the volume in")
    size: str = Field(description="The size: bytes, or with a binary unit K, M, G, T ... (e.g. 10G)")
    force: Bool = Field(False, description=FORCE_SPACE_HELP)


class VolumeElementAddInputs(Inputs):
    size: str = Field(description="The size: bytes, or with a binary unit K, M, G, T ... (e.g. 10G)")
    force: Bool = Field(False, description=FORCE_SPACE_HELP)


class VolumeModifyInputs(Inputs):
    new_size: str | None = Field(None, description="Resize the volume to this size (shrinking needs force "
                                                   "and no VM using it)")
    new_name: str | None = Field(None, description="Rename the volume (not while a VM uses it)")
    force: Bool = Field(False, description=FORCE_SPACE_HELP + "; allow shrinking")


class VolumeCloneInputs(Inputs):
    new_volume: str = Field(description="The name of the copy")
    force: Bool = Field(False, description=FORCE_SPACE_HELP)


class UploadInputs(Inputs):
    image_format: ImageFormat = Field(
        description="The format of the image file; non-raw images are converted to raw")
    file_size: int | None = Field(
        None, ge=0, description="The size of the image file in bytes (accepted for compatibility; the "
                                "uploaded file's own size is used)")
    file: UploadField = Field(
        None, description="The image file, as a multipart form part named 'file'; a raw image must be "
                          "exactly the size of the volume")


class SnapshotListInputs(Inputs):
    limit: str | None = Field(None, description=LIMIT_HELP.format(what="snapshot name"))
    pool: str | None = Field(None, description="Only snapshots in this pool")
    volume: str | None = Field(None, description="Only snapshots of volumes with this name")


class SnapshotAddInputs(Inputs):
    snapshot: str = Field(description="The name of the snapshot")
    volume: str = Field(description="The volume to snapshot")
    pool: str = Field(description="The pool of the volume")


class SnapshotRenameInputs(Inputs):
    new_name: str = Field(description="The new name of the snapshot")


# -- placeholders and reports ---------------------------------------------------------------------------

NULL = {"type": "null"}


@router.get("", summary="Storage root (a null placeholder, as upstream)", responses=responses(NULL, 200))
def storage_root() -> JSONResponse:
    return ok(None)


@router.get("/ceph", summary="Ceph root (a null placeholder, as upstream)", responses=responses(NULL, 200))
def ceph_root() -> JSONResponse:
    return ok(None)


NO_REPORT = {503: {"description": "No Ceph report yet (the primary writes one every keepalive once it can "
                                  "reach Ceph), or ZooKeeper is unavailable", "model": Message}}


@router.get("/ceph/status", summary="Return the status of the Ceph cluster (`ceph status` text)",
            responses={**responses(CephReport, 200), **NO_REPORT})
def ceph_status(zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok(st.ceph_report(zk, "status"))


@router.get("/ceph/utilization", summary="Return the utilization of the Ceph cluster (`ceph df` text)",
            responses={**responses(CephReport, 200), **NO_REPORT})
def ceph_utilization(zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok(st.ceph_report(zk, "utilization"))


# -- benchmarks and options ---------------------------------------------------------------------------

@router.get("/ceph/benchmark", summary="List storage benchmark results (newest first)",
            responses=responses(list[StorageBenchmark], 200, *NOT_FOUND))
def benchmark_list(params: BenchmarkListInputs = inputs(BenchmarkListInputs),
                   zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _listing(st.list_benchmarks(zk, params.job), "Benchmark")


@router.post("/ceph/benchmark", summary="Run a storage benchmark on a pool (a task on the primary)",
             responses=responses(TaskAccepted, 202))
def benchmark_run(params: BenchmarkInputs = inputs(BenchmarkInputs),
                  zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _accepted(zk, st.run_benchmark(zk, params.pool, params.name))


@router.post("/ceph/option", summary="Set or unset an OSD flag (noout, ...) on the Ceph cluster",
             responses=responses(Message, 200))
def ceph_option(params: OptionInputs = inputs(OptionInputs), storage: Storage = Depends(get_storage)
                ) -> JSONResponse:
    return message(st.set_flag(storage, params.option, params.action == "set"))


# -- OSDs ---------------------------------------------------------------------------------------------

@router.post("/ceph/osddb", summary="Create the OSD DB volume group on a node's device (a task on the node)",
             responses=responses(TaskAccepted, 202))
def osd_db_vg(params: DbVgInputs = inputs(DbVgInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _accepted(zk, st.add_db_vg(zk, params.node, params.device))


@router.get("/ceph/osd", summary="Return a list of Ceph OSDs",
            responses=responses(list[OSD], 200, *NOT_FOUND))
def osd_list(params: OsdLimitInputs = inputs(OsdLimitInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _listing(st.list_osds(zk, params.limit), "OSD")


@router.post("/ceph/osd", summary="Add OSD(s) on a node's block device (a task on the node)",
             responses=responses(TaskAccepted, 202))
def osd_add(params: OsdAddInputs = inputs(OsdAddInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    task = st.add_osd(zk, params.node, params.device, params.weight, params.ext_db_ratio,
                      params.ext_db_size or None, params.osd_count)
    return _accepted(zk, task)


@router.get("/ceph/osd/{osdid}", summary="Return information about OSD {osdid} (a one-element array)",
            responses=responses(list[OSD], 200, *NOT_FOUND))
def osd_get(osdid: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok([st.get_osd_item(zk, osdid)])


@router.post("/ceph/osd/{osdid}", summary="Replace OSD {osdid} with a new block device (a task on its node)",
             responses=responses(TaskAccepted, 202, *NOT_FOUND))
def osd_replace(osdid: str, params: OsdReplaceInputs = inputs(OsdReplaceInputs),
                zk: ZK = Depends(get_zk)) -> JSONResponse:
    task = st.replace_osd(zk, osdid, params.new_device, params.old_device or None, params.weight,
                          params.ext_db_ratio, params.ext_db_size or None)
    return _accepted(zk, task)


@router.put("/ceph/osd/{osdid}",
            summary="Refresh (re-import) OSD {osdid} from its device (a task on its node)",
            responses=responses(TaskAccepted, 202, *NOT_FOUND))
def osd_refresh(osdid: str, params: OsdRefreshInputs = inputs(OsdRefreshInputs),
                zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _accepted(zk, st.refresh_osd(zk, osdid, params.device))


@router.delete("/ceph/osd/{osdid}", summary="Remove OSD {osdid} from the cluster (a task on its node)",
               responses=responses(TaskAccepted, 202, *NOT_FOUND))
def osd_remove(osdid: str, params: OsdRemoveInputs = inputs(OsdRemoveInputs),
               zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _accepted(zk, st.remove_osd(zk, osdid, params.force))


@router.get("/ceph/osd/{osdid}/state", summary="Return whether OSD {osdid} is up and in",
            responses=responses(OSDState, 200, *NOT_FOUND))
def osd_state(osdid: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok(st.osd_state(zk, osdid))


@router.post("/ceph/osd/{osdid}/state", summary="Set OSD {osdid} in or out",
             responses=responses(Message, 200, *NOT_FOUND))
def osd_set_state(osdid: str, params: OsdStateInputs = inputs(OsdStateInputs), zk: ZK = Depends(get_zk),
                  storage: Storage = Depends(get_storage)) -> JSONResponse:
    return message(st.set_osd_in(zk, storage, osdid, params.state == "in"))


# -- pools --------------------------------------------------------------------------------------------

@router.get("/ceph/pool", summary="Return a list of pools", responses=responses(list[Pool], 200, *NOT_FOUND))
def pool_list(params: LimitInputs = inputs(LimitInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _listing([wire_pool(p) for p in st.list_pools(zk, params.limit)], "Pool")


@router.post("/ceph/pool", summary="Create a replicated RBD pool", responses=responses(Message, 200))
def pool_add(params: PoolAddInputs = inputs(PoolAddInputs), zk: ZK = Depends(get_zk),
             storage: Storage = Depends(get_storage)) -> JSONResponse:
    return message(st.add_pool(zk, storage, params.pool, params.pgs, params.replcfg, params.tier,
                               params.force))


@router.get("/ceph/pool/{pool}", summary="Return information about pool {pool} (a one-element array)",
            responses=responses(list[Pool], 200, *NOT_FOUND))
def pool_get(pool: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok([wire_pool(st.pool_item(zk, pool))])


@router.post("/ceph/pool/{pool}", summary="Create the replicated RBD pool {pool}",
             responses=responses(Message, 200))
def pool_add_named(pool: str, params: PoolElementAddInputs = inputs(PoolElementAddInputs),
                   zk: ZK = Depends(get_zk), storage: Storage = Depends(get_storage)) -> JSONResponse:
    return message(st.add_pool(zk, storage, pool, params.pgs, params.replcfg, params.tier, params.force))


@router.put("/ceph/pool/{pool}", summary="Set the placement group count of pool {pool}",
            responses=responses(Message, 200, *NOT_FOUND))
def pool_set_pgs(pool: str, params: PoolPgsInputs = inputs(PoolPgsInputs), zk: ZK = Depends(get_zk),
                 storage: Storage = Depends(get_storage)) -> JSONResponse:
    return message(st.set_pool_pgs(zk, storage, pool, params.pgs))


@router.delete("/ceph/pool/{pool}",
               summary="Remove pool {pool} with all its volumes (not while VMs use them)",
               responses=responses(Message, 200, *NOT_FOUND))
def pool_remove(pool: str, params: ConfirmInputs = inputs(ConfirmInputs), zk: ZK = Depends(get_zk),
                storage: Storage = Depends(get_storage)) -> JSONResponse:
    return message(st.remove_pool(zk, storage, pool))


# -- volumes ------------------------------------------------------------------------------------------

@router.get("/ceph/volume", summary="Return a list of RBD volumes",
            responses=responses(list[Volume], 200, *NOT_FOUND))
def volume_list(params: VolumeListInputs = inputs(VolumeListInputs),
                zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _listing([wire_volume(v) for v in st.list_volumes(zk, params.pool or None, params.limit)],
                    "Volume")


@router.post("/ceph/volume", summary="Create an RBD volume", responses=responses(Message, 200))
def volume_add(params: VolumeAddInputs = inputs(VolumeAddInputs), zk: ZK = Depends(get_zk),
               storage: Storage = Depends(get_storage)) -> JSONResponse:
    with _named_in_inputs():
        return message(st.add_volume(zk, storage, params.pool, params.volume, params.size, params.force))


@router.get("/ceph/volume/{pool}/{volume}", summary="Return information about RBD volume {volume} in pool "
                                                    "{pool} (a one-element array)",
            responses=responses(list[Volume], 200, *NOT_FOUND))
def volume_get(pool: str, volume: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok([wire_volume(st.volume_item(zk, pool, volume))])


@router.post("/ceph/volume/{pool}/{volume}", summary="Create RBD volume {volume} in pool {pool}",
             responses=responses(Message, 200, *NOT_FOUND))
def volume_add_named(pool: str, volume: str, params: VolumeElementAddInputs = inputs(VolumeElementAddInputs),
                     zk: ZK = Depends(get_zk), storage: Storage = Depends(get_storage)) -> JSONResponse:
    return message(st.add_volume(zk, storage, pool, volume, params.size, params.force))


@router.put("/ceph/volume/{pool}/{volume}", summary="Resize or rename RBD volume {volume} in pool {pool}",
            responses=responses(Message, 200, *NOT_FOUND, 409))
def volume_modify(pool: str, volume: str, params: VolumeModifyInputs = inputs(VolumeModifyInputs),
                  zk: ZK = Depends(get_zk), storage: Storage = Depends(get_storage)) -> JSONResponse:
    if params.new_size and params.new_name:
        raise InvalidInput("new_size, new_name: give only one of them (one change at a time)")
    if params.new_size:
        return message(st.resize_volume(zk, storage, pool, volume, params.new_size, params.force))
    if params.new_name:
        return message(st.rename_volume(zk, storage, pool, volume, params.new_name))
    raise InvalidInput("new_size, new_name: give one of them (the change to make)")


@router.delete("/ceph/volume/{pool}/{volume}", summary="Remove RBD volume {volume} from pool {pool} (not "
                                                       "while a VM uses it or a VM snapshot owns one of its "
                                                       "snapshots)",
               responses=responses(Message, 200, 400, *NOT_FOUND, 409))
def volume_remove(pool: str, volume: str, zk: ZK = Depends(get_zk),
                  storage: Storage = Depends(get_storage)) -> JSONResponse:
    return message(st.remove_volume(zk, storage, pool, volume))


@router.post("/ceph/volume/{pool}/{volume}/scan", summary="Read RBD volume {volume} in pool {pool} from Ceph "
                                                           "into PVC (e.g. after an import)",
             responses=responses(Message, 200, 400, *NOT_FOUND))
def volume_scan(pool: str, volume: str, zk: ZK = Depends(get_zk),
                storage: Storage = Depends(get_storage)) -> JSONResponse:
    return message(st.scan_volume(zk, storage, pool, volume))


@router.post("/ceph/volume/{pool}/{volume}/clone", summary="Copy RBD volume {volume} in pool {pool} to a new "
                                                            "volume",
             responses=responses(Message, 200, *NOT_FOUND))
def volume_clone(pool: str, volume: str, params: VolumeCloneInputs = inputs(VolumeCloneInputs),
                 zk: ZK = Depends(get_zk), storage: Storage = Depends(get_storage)) -> JSONResponse:
    return message(st.clone_volume(zk, storage, pool, volume, params.new_volume, params.force))


def _upload(zk: ZK, storage: Storage, pool: str, volume: str, image_format: str, upload: UploadFile) -> str:
    """Check, then stream the spooled upload into the volume (raw), or convert it from a named
    copy on local disk (qemu-img needs a path); the upload is never held whole in memory."""
    source = upload.file
    source.seek(0, 2)
    size = source.tell()
    source.seek(0)
    st.check_upload(zk, storage, pool, volume, image_format, size)
    if image_format == "raw":
        return st.write_upload(zk, storage, pool, volume, image_format, source=source)
    with tempfile.NamedTemporaryFile(prefix=f"pvc-upload-{volume}-", suffix=f".{image_format}") as copy:
        shutil.copyfileobj(source, copy, COPY_CHUNK)
        copy.flush()
        return st.write_upload(zk, storage, pool, volume, image_format, path=copy.name)


@router.post("/ceph/volume/{pool}/{volume}/upload", summary="Write a disk image into RBD volume {volume} in "
                                                             "pool {pool} (multipart field 'file')",
             responses=responses(Message, 200, *NOT_FOUND))
async def volume_upload(pool: str, volume: str, params: UploadInputs = inputs(UploadInputs),
                        zk: ZK = Depends(get_zk), storage: Storage = Depends(get_storage)) -> JSONResponse:
    upload = params.file
    if not isinstance(upload, UploadFile):
        raise ArgumentError({"file": "an image file is required, sent as a multipart/form-data part named "
                                     "'file'"})
    text = await run_in_threadpool(_upload, zk, storage, pool, volume, params.image_format, upload)
    return message(text)


# -- snapshots ----------------------------------------------------------------------------------------

@router.get("/ceph/snapshot", summary="Return a list of RBD snapshots",
            responses=responses(list[Snapshot], 200, *NOT_FOUND))
def snapshot_list(params: SnapshotListInputs = inputs(SnapshotListInputs),
                  zk: ZK = Depends(get_zk)) -> JSONResponse:
    items = st.list_snapshots(zk, params.pool or None, params.volume or None, params.limit)
    return _listing(items, "Volume snapshot")


@router.post("/ceph/snapshot", summary="Create an RBD snapshot", responses=responses(Message, 200))
def snapshot_add(params: SnapshotAddInputs = inputs(SnapshotAddInputs), zk: ZK = Depends(get_zk),
                 storage: Storage = Depends(get_storage)) -> JSONResponse:
    with _named_in_inputs():
        return message(st.add_snapshot(zk, storage, params.pool, params.volume, params.snapshot))


SNAPSHOT = "/ceph/snapshot/{pool}/{volume}/{snapshot}"
OF = "of RBD volume {volume} in pool {pool}"


@router.get(SNAPSHOT, summary=f"Return information about snapshot {{snapshot}} {OF} (a one-element array)",
            responses=responses(list[Snapshot], 200, *NOT_FOUND))
def snapshot_get(pool: str, volume: str, snapshot: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok([st.snapshot_item(zk, pool, volume, snapshot)])


@router.post(SNAPSHOT, summary=f"Create snapshot {{snapshot}} {OF}",
             responses=responses(Message, 200, 400, *NOT_FOUND))
def snapshot_add_named(pool: str, volume: str, snapshot: str, zk: ZK = Depends(get_zk),
                       storage: Storage = Depends(get_storage)) -> JSONResponse:
    return message(st.add_snapshot(zk, storage, pool, volume, snapshot))


@router.put(SNAPSHOT, summary=f"Rename snapshot {{snapshot}} {OF} (not while a VM snapshot owns it)",
            responses=responses(Message, 200, *NOT_FOUND, 409))
def snapshot_rename(pool: str, volume: str, snapshot: str,
                    params: SnapshotRenameInputs = inputs(SnapshotRenameInputs), zk: ZK = Depends(get_zk),
                    storage: Storage = Depends(get_storage)) -> JSONResponse:
    return message(st.rename_snapshot(zk, storage, pool, volume, snapshot, params.new_name))


@router.delete(SNAPSHOT, summary=f"Remove snapshot {{snapshot}} {OF} (not while a VM snapshot owns it)",
               responses=responses(Message, 200, 400, *NOT_FOUND, 409))
def snapshot_remove(pool: str, volume: str, snapshot: str, zk: ZK = Depends(get_zk),
                    storage: Storage = Depends(get_storage)) -> JSONResponse:
    return message(st.remove_snapshot(zk, storage, pool, volume, snapshot))


@router.post(SNAPSHOT + "/rollback", summary="Roll RBD volume {volume} in pool {pool} back to snapshot "
                                             "{snapshot} (its VMs must be stopped)",
             responses=responses(Message, 200, 400, *NOT_FOUND))
def snapshot_rollback(pool: str, volume: str, snapshot: str, zk: ZK = Depends(get_zk),
                      storage: Storage = Depends(get_storage)) -> JSONResponse:
    return message(st.rollback_snapshot(zk, storage, pool, volume, snapshot))
