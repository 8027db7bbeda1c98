"""Storage tasks a node's worker runs (pvc-facts §6): OSD add/remove/replace/refresh, the OSD DB
volume group, and the storage benchmark.

OSD tasks run on the node that owns the disk (the API routes them there); cluster-side steps go
through the Storage adapter, node-side ones through this node's OSD service
(pvc.adapters.osd: `systemd` mode on real nodes, `direct` mode in the lab). Progress stages and
messages follow upstream PVC's, so `--wait` shows what an administrator knows.

Every step that changes something registers how to undo it; when a later step fails or the task
is cancelled, the undos run in reverse order (Incus's "reverter"), so a failed `osd.add` leaves no
half-made OSD behind. Removal has a point of no return (destroying the OSD in Ceph): before it a
failure or a cancel puts the OSD back in and running; after it the task finishes (a cancel is
ignored) and, with `force`, steps that fail are logged and skipped.

Deliberate differences from upstream: `osd.remove` without force fails if the OSD does not become
safe to destroy in time instead of removing it anyway after 60 s; the `osd-db` volume group is made
on the whole device (wipefs + pvcreate + vgcreate) rather than on a GPT partition made by sgdisk;
a benchmark's volume is removed also when the benchmark fails or is cancelled.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pvc.adapters import osd as osd_adapter
from pvc.adapters.ceph import Storage, StorageError, StorageExists, StorageNotFound
from pvc.adapters.osd import (
    BENCHMARK_TESTS,
    BENCHMARK_VOLUME,
    DirectOsdService,
    FioRunner,
    OsdError,
    OsdService,
    PreparedOsd,
    SystemdOsdService,
)
from pvc.core import schema
from pvc.core.config import Settings
from pvc.core.errors import PVCError
from pvc.core.units import parse_size
from pvc.worker.registry import TaskCancelled, TaskContext, TaskFailed, task_kind

OSD_UP_TIMEOUT = 300.0        # a new or restarted OSD must be up and in by then
SAFE_TIMEOUT = 600.0          # how long removal waits for `osd safe-to-destroy`
DOWN_TIMEOUT = 30.0           # a stopped OSD must be marked down by then (else we mark it)
VOLUME_BUSY_TIMEOUT = 60.0    # a killed fio's watch on the benchmark volume expires within ~30 s
POLL = 1.0
OSD_CAPS = ["mon", "allow profile osd", "mgr", "allow profile osd", "osd", "allow *"]


# -------------------------------------------------------------------------- adapters (patchable)

def storage_for(settings: Settings) -> Storage:
    """This worker's Storage (patchable in tests); one per configuration and process."""
    from pvc.adapters.ceph import storage_from_settings

    return storage_from_settings(settings)


def osd_service_for(settings: Settings) -> OsdService:
    return osd_adapter.service_for(settings)


def fio_runner_for(settings: Settings) -> FioRunner:
    cfg = settings.storage
    return FioRunner(cfg.ceph_config_file, cfg.ceph_keyring_file, cfg.client_user)


# ---------------------------------------------------------------------------- progress, revert

class Stages:
    """Numbered progress; past the point of no return a cancel request is logged, not obeyed."""

    def __init__(self, ctx: TaskContext, total: int) -> None:
        self.ctx, self.total, self.current = ctx, total, 0
        self.cancellable = True

    def start(self, status: str) -> None:
        self._report(status)

    def __call__(self, status: str) -> None:
        self.current = min(self.current + 1, self.total)
        self._report(status)

    def _report(self, status: str) -> None:
        try:
            self.ctx.progress(self.current, self.total, status)
        except TaskCancelled:
            if self.cancellable:
                raise
            self.ctx.log("cancel requested past the point of no return; finishing the task")

    def irreversible(self) -> None:
        self.cancellable = False


class Reverter:
    """Undo steps registered as work proceeds; on an exception they run in reverse order."""

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self.steps: list[tuple[str, Callable[[], Any]]] = []

    def add(self, what: str, undo: Callable[[], Any]) -> None:
        self.steps.append((what, undo))

    def commit(self) -> None:
        self.steps.clear()

    def __enter__(self) -> Reverter:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, _tb: Any) -> bool:
        if exc_type is None or not self.steps:
            return False
        reason = "cancelled" if isinstance(exc, TaskCancelled) else f"failed: {exc}"
        self.ctx.log(f"{reason}; reverting {len(self.steps)} step(s)")
        for what, undo in reversed(self.steps):
            try:
                undo()
                self.ctx.log(f"reverted: {what}")
            except Exception as error:
                self.ctx.log(f"could not revert ({what}): {getattr(error, 'message', error)}")
        self.steps.clear()
        return False


def _fail_on(exc: Exception, what: str | None = None) -> TaskFailed:
    text = getattr(exc, "message", None) or str(exc)
    return TaskFailed(f"{what}: {text}" if what else text)


def _tolerant(ctx: TaskContext, force: bool, what: str, step: Callable[[], Any]) -> None:
    """Run a step; with force a failure is logged and skipped, else it fails the task."""
    try:
        step()
    except (StorageError, OsdError) as exc:
        if not force:
            raise _fail_on(exc, f"Failed to {what}") from None
        ctx.log(f"Failed to {what} ({exc.message}); ignoring it due to force flag")


def _on_node(ctx: TaskContext, node: str) -> None:
    if node and node != ctx.node:
        raise TaskFailed(f"This task is for node {node} but ran on node {ctx.node}")


# ------------------------------------------------------------------------------ Ceph (cluster)

def _osd_map(storage: Storage) -> dict[int, dict[str, Any]]:
    dump = storage.mon_command("osd dump") or {}
    return {int(o["osd"]): o for o in dump.get("osds", [])}


def _osd_new(storage: Storage, osd_uuid: str) -> int:
    answer = storage.mon_command("osd new", uuid=osd_uuid)
    value = answer.get("osdid") if isinstance(answer, dict) else answer
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise OsdError(f"ceph osd new gave no OSD id (answer: {answer!r})") from None


def _osd_key(storage: Storage, osd_id: int) -> str:
    """The OSD's cephx key, created in the mons (it never appears on a command line)."""
    answer = storage.mon_command("auth get-or-create", entity=f"osd.{osd_id}", caps=OSD_CAPS)
    entry = answer[0] if isinstance(answer, list) and answer else answer
    key = entry.get("key") if isinstance(entry, dict) else None
    if not key:
        raise OsdError(f"ceph auth get-or-create osd.{osd_id} returned no key")
    return str(key)


def _crush_add(storage: Storage, osd_id: int, weight: float, node: str) -> None:
    storage.mon_command("osd crush add", id=osd_id, weight=float(weight),
                        args=["root=default", f"host={node}"])


def _crush_weight(storage: Storage, osd_id: int) -> float | None:
    tree = storage.mon_command("osd tree") or {}
    for item in tree.get("nodes", []):
        if item.get("id") == osd_id and item.get("type") == "osd":
            return float(item.get("crush_weight", 0)) or None
    return None


def _mgr_backed(storage: Storage, verb: str, osd_id: int) -> None:
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


def _purge(storage: Storage, osd_id: int) -> None:
    _mgr_backed(storage, "purge", osd_id)


def _safe_to_destroy(storage: Storage, osd_id: int) -> tuple[bool, str]:
    try:
        answer = storage.mon_command("osd safe-to-destroy", ids=[str(osd_id)]) or {}
    except StorageError as exc:
        return False, exc.message
    if osd_id in answer.get("safe_to_destroy", []):
        return True, ""
    detail = ", ".join(f"{k}: {v}" for k, v in answer.items() if k != "safe_to_destroy" and v)
    return False, detail or "not safe yet"


def _wait_up_in(ctx: TaskContext, storage: Storage, service: OsdService, ids: list[int],
                timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        osds = _osd_map(storage)
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
        time.sleep(POLL)


def _wait_safe(ctx: TaskContext, storage: Storage, osd_id: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        safe, detail = _safe_to_destroy(storage, osd_id)
        if safe:
            return
        if time.monotonic() > deadline:
            raise TaskFailed(f"OSD {osd_id} did not become safe to remove within {timeout:.0f}s "
                             f"({detail}): Ceph still needs its data; wait for recovery and retry, or "
                             f"remove it with force")
        ctx.check_cancelled()
        time.sleep(POLL)


def _wait_down(storage: Storage, osd_id: int, timeout: float = DOWN_TIMEOUT) -> None:
    """A stopped OSD reports itself down; if the mons did not hear it, mark it down ourselves."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _osd_map(storage).get(osd_id, {}).get("up"):
            return
        time.sleep(POLL)
    storage.mon_command("osd down", ids=[str(osd_id)])


# ------------------------------------------------------------------------------------ ZooKeeper

def _osd_doc(ctx: TaskContext, osd_id: int) -> dict[str, Any] | None:
    doc = ctx.zk.get(schema.osd(osd_id), None)
    return doc if isinstance(doc, dict) else None


def _write_osd(ctx: TaskContext, service: OsdService, osd_id: int, node: str, device: str,
               prepared: PreparedOsd | None = None, db_device: str = "", is_split: bool = False,
               keep: dict[str, Any] | None = None) -> None:
    doc = {**(keep or {}), "id": str(osd_id), "node": node, "device": device,
           "db_device": db_device or (prepared.db_device if prepared else ""),
           "fsid": prepared.fsid if prepared else (keep or {}).get("fsid", ""),
           "is_split": is_split, "service": service.mode, "stats": (keep or {}).get("stats", {})}
    if prepared and prepared.vg:
        doc.update(vg=prepared.vg, lv=prepared.lv, cluster_fsid=prepared.cluster_fsid)
    ctx.zk.put(schema.osd(osd_id), doc)


def _osds_on_device(ctx: TaskContext, node: str, device: str) -> list[dict[str, Any]]:
    docs = [_osd_doc(ctx, int(i)) for i in ctx.zk.children(schema.CEPH_OSDS) if str(i).isdigit()]
    return sorted((d for d in docs if d and d.get("node") == node and d.get("device") == device),
                  key=lambda d: int(d["id"]))


# ----------------------------------------------------------------------------------- osd.add

@task_kind("osd.add")
def osd_add(ctx: TaskContext, node: str, device: str, weight: float, ext_db_ratio: float | None = None,
            ext_db_size: int | None = None, osd_count: int | None = None,
            timeout: float = OSD_UP_TIMEOUT, **_: Any) -> dict[str, Any]:
    """Create OSD(s) on a device of this node, put them in CRUSH, start them, wait until up+in."""
    _on_node(ctx, node)
    count = int(osd_count or 1)
    if ext_db_ratio is not None and ext_db_size:
        raise TaskFailed("Invalid configuration: both an ext_db_size and ext_db_ratio were specified")
    service, storage = osd_service_for(ctx.settings), storage_for(ctx.settings)
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
    osd_id = _add_direct(ctx, stages, storage, service, device, float(weight), timeout)
    stages("Done")
    return {"status": f"Successfully created 1 new OSD(s) {osd_id} on device {device}", "osds": [osd_id]}


def _add_direct(ctx: TaskContext, stages: Stages, storage: Storage, service: DirectOsdService,
                device: str, weight: float, timeout: float) -> int:
    """Seven stages: a bluestore OSD on a file, registered, in CRUSH, running, recorded, up+in."""
    with Reverter(ctx) as revert:
        try:
            stages(f"Preparing block file for device {device}")
            block = service.resolve(device)
            created = service.prepare_block(block)
            if created:
                ctx.log(f"created sparse file {block.path} of {block.size} bytes")
            revert.add(f"release {block.path}", lambda: service.discard_block(block.path, created))

            stages("Creating OSD in the cluster")
            osd_uuid = str(uuid.uuid4())
            osd_id = _osd_new(storage, osd_uuid)
            revert.add(f"purge OSD {osd_id}", lambda: _purge(storage, osd_id))
            key = _osd_key(storage, osd_id)

            stages(f"Creating bluestore for OSD {osd_id} on {block.path}")
            revert.add(f"remove the data directory of OSD {osd_id}", lambda: service.remove_data(osd_id))
            service.mkfs(osd_id, osd_uuid, key, block.path, created)

            stages(f"Adding OSD {osd_id} to CRUSH map")
            _crush_add(storage, osd_id, weight, ctx.node)

            stages(f"Starting OSD {osd_id}")
            revert.add(f"stop OSD {osd_id}", lambda: service.stop(osd_id))
            service.start(osd_id)

            stages(f"Adding OSD {osd_id} to PVC")
            revert.add(f"delete OSD {osd_id} from PVC", lambda: ctx.zk.delete(schema.osd(osd_id)))
            _write_osd(ctx, service, osd_id, ctx.node, str(block.path),
                       PreparedOsd(id=osd_id, fsid=osd_uuid))

            stages(f"Waiting for OSD {osd_id} to come up and in")
            _wait_up_in(ctx, storage, service, [osd_id], timeout)
        except (StorageError, OsdError) as exc:
            raise _fail_on(exc) from None
        revert.commit()
    return osd_id


def _discard_prepared(storage: Storage, service: SystemdOsdService, device: str) -> None:
    """Undo ceph-volume batch: its OSDs are registered in the cluster and live on the device."""
    for osd in service.list_osds(device):
        if service.running(osd.id):
            service.stop(osd.id)
        _purge(storage, osd.id)
    service.zap(device)


def _add_systemd(ctx: TaskContext, storage: Storage, service: SystemdOsdService, device: str, weight: float,
                 count: int, ext_db_ratio: float | None, ext_db_size: int | None,
                 timeout: float) -> dict[str, Any]:
    with_db = ext_db_ratio is not None or ext_db_size is not None
    stages = Stages(ctx, 5 + 3 * count + (3 * count + 1 if with_db else 0))
    stages.start(f"Adding {count} new OSD(s) on device {device} with weight {weight}")
    with Reverter(ctx) as revert:
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
                _crush_add(storage, osd.id, weight, ctx.node)
                stages(f"Activating OSD {osd.id}")
                revert.add(f"stop OSD {osd.id}", lambda i=osd.id: service.stop(i))
                service.activate(osd.id, osd.fsid)
                stages(f"Adding OSD {osd.id} to PVC")
                revert.add(f"delete OSD {osd.id} from PVC", lambda i=osd.id: ctx.zk.delete(schema.osd(i)))
                _write_osd(ctx, service, osd.id, ctx.node, real, osd, is_split=count > 1)

            stages("Waiting for new OSD(s) to come up and in")
            _wait_up_in(ctx, storage, service, [o.id for o in created], timeout)
        except (StorageError, OsdError) as exc:
            raise _fail_on(exc) from None
        revert.commit()
    ids = [o.id for o in created]
    stages("Done")
    return {"status": f"Successfully created {len(ids)} new OSD(s) {','.join(map(str, ids))} on device "
                      f"{real}", "osds": ids}


# -------------------------------------------------------------------------------- osd.remove

@task_kind("osd.remove")
def osd_remove(ctx: TaskContext, osd_id: int, force: bool = False, safe_timeout: float = SAFE_TIMEOUT,
               **_: Any) -> dict[str, Any]:
    """Take an OSD out, wait until Ceph no longer needs it, stop and purge it, clean its disk."""
    osd_id = int(osd_id)
    service, storage = osd_service_for(ctx.settings), storage_for(ctx.settings)
    doc = _osd_doc(ctx, osd_id)
    if doc and doc.get("node") and doc["node"] != ctx.node:
        raise TaskFailed(f"OSD {osd_id} is on node {doc['node']}, not on {ctx.node}")
    stages = Stages(ctx, _remove_stages(service, doc, force) + 1)
    stages.start(f"Removing OSD {osd_id}")
    _remove(ctx, stages, storage, service, osd_id, doc, force, safe_timeout)
    stages("Done")
    return {"status": f"Successfully removed OSD {osd_id}", "osd": osd_id}


def _remove_stages(service: OsdService, doc: dict[str, Any] | None, force: bool) -> int:
    stages = 7 + (0 if force else 1)
    if isinstance(service, SystemdOsdService) and doc and doc.get("db_device"):
        stages += 1
    return stages


def _remove(ctx: TaskContext, stages: Stages, storage: Storage, service: OsdService, osd_id: int,
            doc: dict[str, Any] | None, force: bool, safe_timeout: float) -> None:
    try:
        known = osd_id in _osd_map(storage)
    except StorageError as exc:
        raise _fail_on(exc, "Failed to read the OSD map") from None
    if not known:
        if not force:
            raise TaskFailed(f"OSD {osd_id} not found in Ceph")
        ctx.log(f"OSD {osd_id} not found in Ceph; ignoring error due to force flag")

    with Reverter(ctx) as revert:
        stages(f"Setting OSD {osd_id} out")
        if known:
            _tolerant(ctx, force, f"set OSD {osd_id} out", lambda: storage.set_osd_in(osd_id, False))
            revert.add(f"set OSD {osd_id} in", lambda: storage.set_osd_in(osd_id, True))
        if not force:
            stages(f"Waiting for OSD {osd_id} to be safe to remove")
            _wait_safe(ctx, storage, osd_id, safe_timeout)
        stages(f"Stopping OSD {osd_id}")
        was_running = service.running(osd_id)
        _tolerant(ctx, force, f"stop OSD {osd_id} process", lambda: service.stop(osd_id))
        if was_running:
            revert.add(f"start OSD {osd_id}", lambda: service.start(osd_id))
        if known:
            _tolerant(ctx, force, f"mark OSD {osd_id} down", lambda: _wait_down(storage, osd_id))
        revert.commit()

    # The point of no return: from here the OSD's data is given up.
    stages.irreversible()
    hint = "" if force else f"; retry the removal of OSD {osd_id} with force to finish it"

    def step(what: str, action: Callable[[], Any]) -> None:
        try:
            action()
        except (StorageError, OsdError) as exc:
            if not force:
                raise _fail_on(exc, f"Failed to {what}{hint}") from None
            ctx.log(f"Failed to {what} ({exc.message}); ignoring error due to force flag")

    stages(f"Destroying OSD {osd_id}")
    step(f"destroy OSD {osd_id}", lambda: _mgr_backed(storage, "destroy", osd_id))
    stages(f"Removing OSD {osd_id} from CRUSH map")
    step(f"remove OSD {osd_id} from the CRUSH map", lambda: storage.mon_command("osd crush rm",
                                                                                 name=f"osd.{osd_id}"))
    stages(f"Purging OSD {osd_id}")
    step(f"purge OSD {osd_id}", lambda: _purge(storage, osd_id))

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
    others = [d["id"] for d in _osds_on_device(ctx, ctx.node, device) if int(d["id"]) != osd_id]
    if others:
        ctx.log(f"Found {len(others)} OSD(s) still remaining on {device}; skipping zap")
        return
    ctx.log(f"Found no peer split OSD(s) on {device}; zapping disk")
    service.zap(device)


# ------------------------------------------------------------------------------- osd.replace

@task_kind("osd.replace")
def osd_replace(ctx: TaskContext, osd_id: int, new_device: str, old_device: str | None = None,
                weight: float | None = None, ext_db_ratio: float | None = None,
                ext_db_size: int | None = None, timeout: float = OSD_UP_TIMEOUT,
                safe_timeout: float = SAFE_TIMEOUT, **_: Any) -> dict[str, Any]:
    """Rebuild an OSD on a new device: systemd keeps its id and CRUSH place (upstream); direct mode
    removes it and adds a new OSD on the new file with the same weight."""
    osd_id = int(osd_id)
    service, storage = osd_service_for(ctx.settings), storage_for(ctx.settings)
    doc = _osd_doc(ctx, osd_id)
    if doc is None:
        raise TaskFailed(f"OSD {osd_id} is not known to PVC")
    _on_node(ctx, doc.get("node", ""))
    try:
        weight = float(weight) if weight else (_crush_weight(storage, osd_id) or 1.0)
    except StorageError as exc:
        raise _fail_on(exc, "Failed to read the CRUSH weight") from None
    if isinstance(service, SystemdOsdService):
        db_size = int(ext_db_size) if ext_db_size else None
        return _replace_systemd(ctx, storage, service, osd_id, doc, new_device, old_device, weight,
                                ext_db_ratio, db_size, timeout, safe_timeout)
    assert isinstance(service, DirectOsdService)
    if ext_db_ratio is not None or ext_db_size:
        raise TaskFailed("An external OSD DB volume needs LVM block devices; this node runs OSDs in "
                         "direct mode")
    stages = Stages(ctx, _remove_stages(service, doc, False) + 7 + 1)
    stages.start(f"Replacing OSD {osd_id} with device {new_device}")
    _remove(ctx, stages, storage, service, osd_id, doc, False, safe_timeout)
    new_id = _add_direct(ctx, stages, storage, service, new_device, weight, timeout)
    stages("Done")
    return {"status": f"Successfully replaced OSD {osd_id} with OSD {new_id} on new device {new_device}",
            "osds": [new_id]}


def _replace_systemd(ctx: TaskContext, storage: Storage, service: SystemdOsdService, osd_id: int,
                     doc: dict[str, Any], new_device: str, old_device: str | None, weight: float,
                     ext_db_ratio: float | None, ext_db_size: int | None, timeout: float,
                     safe_timeout: float) -> dict[str, Any]:
    block = doc.get("device", "")
    peers = _osds_on_device(ctx, ctx.node, block) or [doc]
    ids = [int(p["id"]) for p in peers]
    with_db = ext_db_ratio is not None or ext_db_size is not None or any(p.get("db_device") for p in peers)
    stages = Stages(ctx, 3 + 10 * len(ids) + (2 * len(ids) if with_db else 0))
    stages.start(f"Replacing OSD(s) {','.join(map(str, ids))} with device {new_device}")
    try:
        new = service.resolve(new_device)
        service.check_unpartitioned(new)
        osd_map = _osd_map(storage)
        fsids = {i: str(osd_map.get(i, {}).get("uuid") or next(
            (p.get("fsid") for p in peers if int(p["id"]) == i), "")) for i in ids}
        real_old = None
        for candidate in (old_device, block):
            if candidate and osd_id in {o.id for o in service.list_osds(candidate)}:
                real_old = candidate
                break
        if real_old is None:
            ctx.log("No valid old block device found for OSD(s); skipping zap")
    except (StorageError, OsdError) as exc:
        raise _fail_on(exc) from None

    with Reverter(ctx) as revert:
        for i in ids:
            stages(f"Setting OSD {i} out")
            _tolerant(ctx, False, f"set OSD {i} out", lambda i=i: storage.set_osd_in(i, False))
            revert.add(f"set OSD {i} in", lambda i=i: storage.set_osd_in(i, True))
            stages(f"Waiting for OSD {i} to be safe to remove")
            try:
                _wait_safe(ctx, storage, i, safe_timeout)
            except TaskFailed as exc:
                ctx.log(f"{exc}; proceeding anyway (the OSD is being replaced)")
            stages(f"Stopping OSD {i}")
            was_running = service.running(i)
            _tolerant(ctx, False, f"stop OSD {i}", lambda i=i: service.stop(i))
            if was_running:
                revert.add(f"start OSD {i}", lambda i=i: service.start(i))
            _tolerant(ctx, True, f"mark OSD {i} down", lambda i=i: _wait_down(storage, i))
        revert.commit()
    stages.irreversible()

    try:
        for i in ids:
            stages(f"Destroying OSD {i}")
            _mgr_backed(storage, "destroy", i)
        stages(f"Zapping old disk {real_old} if possible")
        if real_old:
            try:
                service.zap(real_old)
            except OsdError as exc:
                ctx.log(f"Failed to zap old disk {real_old} ({exc.message}); proceeding anyways")
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
            _crush_add(storage, i, weight, ctx.node)
            stages(f"Activating OSD {i}")
            service.activate(i, fsids[i])
            stages(f"Updating OSD {i} in PVC")
            prepared = next((o for o in service.list_osds(new) if o.id == i),
                            PreparedOsd(id=i, fsid=fsids[i]))
            old = next(p for p in peers if int(p["id"]) == i)
            _write_osd(ctx, service, i, ctx.node, new, prepared, db_device=db_lv, is_split=len(ids) > 1,
                       keep=old)
        stages("Waiting for the OSD(s) to come up and in")
        _wait_up_in(ctx, storage, service, ids, timeout)
    except (StorageError, OsdError) as exc:
        raise _fail_on(exc) from None
    stages("Done")
    return {"status": f"Successfully replaced OSD(s) {','.join(map(str, ids))} on new disk {new}",
            "osds": ids}


# ------------------------------------------------------------------------------- osd.refresh

@task_kind("osd.refresh")
def osd_refresh(ctx: TaskContext, osd_id: int, device: str = "", timeout: float = OSD_UP_TIMEOUT,
                **_: Any) -> dict[str, Any]:
    """Re-import an existing OSD on this node (after a reinstall or a moved disk) and start it."""
    osd_id = int(osd_id)
    service, storage = osd_service_for(ctx.settings), storage_for(ctx.settings)
    doc = _osd_doc(ctx, osd_id)
    if doc and doc.get("node") and doc["node"] != ctx.node:
        raise TaskFailed(f"OSD {osd_id} is on node {doc['node']}, not on {ctx.node}")
    try:
        osd_map = _osd_map(storage)
    except StorageError as exc:
        raise _fail_on(exc, "Failed to read the OSD map") from None
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
        _write_osd(ctx, service, osd_id, ctx.node, str(info.get("block") or (doc or {}).get("device", "")),
                   PreparedOsd(id=osd_id, fsid=str(osd_map[osd_id].get("uuid", ""))), keep=doc)
        stages(f"Waiting for OSD {osd_id} to come up and in")
        _wait_up_in(ctx, storage, service, [osd_id], timeout)
    except (StorageError, OsdError) as exc:
        raise _fail_on(exc) from None
    return {"status": f"Successfully reimported OSD(s) {osd_id} on device {service.data_dir(osd_id)}",
            "osds": [osd_id]}


def _refresh_systemd(ctx: TaskContext, storage: Storage, service: SystemdOsdService, osd_id: int,
                     doc: dict[str, Any] | None, device: str, osd_map: dict[int, dict[str, Any]],
                     timeout: float) -> dict[str, Any]:
    try:
        real = service.resolve(device or (doc or {}).get("device", ""))
        found = service.list_osds(real)
    except OsdError as exc:
        raise _fail_on(exc) from None
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
            _write_osd(ctx, service, osd.id, ctx.node, real, osd, is_split=len(found) > 1,
                       keep=_osd_doc(ctx, osd.id))
        _wait_up_in(ctx, storage, service, [o.id for o in found], timeout)
    except (StorageError, OsdError) as exc:
        raise _fail_on(exc) from None
    return {"status": f"Successfully reimported OSD(s) {','.join(str(o.id) for o in found)} on device {real}",
            "osds": [o.id for o in found]}


# ----------------------------------------------------------------------------- osd.add_db_vg

@task_kind("osd.add_db_vg")
def osd_add_db_vg(ctx: TaskContext, node: str, device: str, **_: Any) -> dict[str, Any]:
    """Create the `osd-db` volume group that holds external bluestore DB volumes."""
    _on_node(ctx, node)
    service = osd_service_for(ctx.settings)
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
        raise _fail_on(exc) from None
    stages("Done")
    return {"status": f"Successfully created new OSD DB volume group on device {real}"}


# ------------------------------------------------------------------------------ storage.benchmark

def _create_benchmark_volume(ctx: TaskContext, storage: Storage, pool: str, size: int) -> None:
    try:
        storage.create_volume(pool, BENCHMARK_VOLUME, size)
        return
    except StorageExists:
        if storage.watchers(pool, BENCHMARK_VOLUME):
            raise TaskFailed(f'A benchmark is already running on pool "{pool}" (volume "{BENCHMARK_VOLUME}" '
                             f"is in use)") from None
    ctx.log(f'removing a left-over volume "{BENCHMARK_VOLUME}" from pool "{pool}"')
    storage.remove_volume(pool, BENCHMARK_VOLUME)
    storage.create_volume(pool, BENCHMARK_VOLUME, size)


def _remove_benchmark_volume(storage: Storage, pool: str, timeout: float = VOLUME_BUSY_TIMEOUT) -> None:
    """Remove the test volume; a just-killed fio's watch can hold it for up to ~30 s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            storage.remove_volume(pool, BENCHMARK_VOLUME)
            return
        except StorageNotFound:
            return
        except StorageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(POLL)


@task_kind("storage.benchmark")
def storage_benchmark(ctx: TaskContext, pool: str, name: str | None = None, **_: Any) -> dict[str, Any]:
    """Upstream's 8 fio tests against a fresh RBD volume; results under /ceph/benchmarks/<job>."""
    job = name or f"{datetime.now().isoformat(timespec='seconds')}_{ctx.node}"
    cfg = ctx.settings.storage
    stages = Stages(ctx, 13)
    stages.start(f"Running storage benchmark '{job}' on pool '{pool}'")
    fio, storage = fio_runner_for(ctx.settings), storage_for(ctx.settings)
    path = schema.benchmark(job)
    with Reverter(ctx) as revert:
        try:
            size = parse_size(cfg.benchmark_size, "storage.benchmark_size")
            fio.check()
            stages("Storing running status")
            if ctx.zk.exists(path):
                raise TaskFailed(f'A benchmark job named "{job}" already exists')
            ctx.zk.put(path, {"id": job, "job": job, "pool": pool, "test_format": 2, "node": ctx.node,
                              "benchmark_result": "Running"})
            revert.add(f"remove benchmark record {job}", lambda: ctx.zk.delete(path))
            stages("Creating benchmark volume")
            _create_benchmark_volume(ctx, storage, pool, size)
            results: dict[str, Any] = {}
            try:
                for test in BENCHMARK_TESTS:
                    stages(f"Running benchmark job '{test}'")
                    results[test] = fio.run_test(test, pool, BENCHMARK_VOLUME, cfg.benchmark_runtime,
                                                 poll=ctx.check_cancelled)
            except BaseException:
                try:
                    _remove_benchmark_volume(storage, pool)
                except Exception as exc:
                    ctx.log(f'could not remove volume "{BENCHMARK_VOLUME}" from pool "{pool}": {exc}')
                raise
            stages("Cleaning up benchmark volume")
            _remove_benchmark_volume(storage, pool)
            stages("Storing results")
            ctx.zk.put(path, {"id": job, "job": job, "pool": pool, "test_format": 2, "node": ctx.node,
                              "benchmark_result": results})
        except (StorageError, OsdError, PVCError) as exc:
            raise _fail_on(exc, f"Storage benchmark {job} failed") from None
        revert.commit()
    stages("Done")
    return {"status": f"Storage benchmark {job} completed successfully", "job": job, "pool": pool}
