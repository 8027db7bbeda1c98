"""VM snapshots, the side effects: RBD snapshots of every disk at one instant, recorded with the XML.

Consistency (DESIGN D15), in this order, recorded in the record's `consistency`:
1. `fs-frozen`: the guest runs a QEMU guest agent that answers: its filesystems are frozen
   (virDomainFSFreeze, bounded by a short agent timeout) around the disk snapshots and always
   thawed in a `finally`;
2. `paused`: otherwise the domain's vCPUs are suspended for the few milliseconds the snapshot
   creations take (made in parallel, so the pause is about the slowest one, not the sum), then
   resumed; the pause is measured and logged;
3. `crash`: a VM that does not run, or one whose pause failed (the reason is logged).

The XML and metadata are those of the VM document read before the disks were snapshotted; the
record is written in one transaction that checks that document's version
(pvc.cluster.vmsnapshots.write_snapshot). If the VM changed meanwhile, the new RBD snapshots are
removed and the whole thing is tried once more. Any failure removes what was made (Reverter).

Usable from any task on any node: the libvirt of the VM's node is used (local when it runs here,
else that node's published libvirt URI).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

from kazoo.exceptions import LockTimeout

from pvc.adapters.ceph import Storage, StorageError, StorageNotFound, storage_from_settings
from pvc.adapters.ceph.base import SnapshotTaker
from pvc.adapters.hypervisor import DomainNotFound, Hypervisor, HypervisorError, LibvirtHypervisor
from pvc.cluster import vmsnapshots as snaps
from pvc.cluster.storage.docs import volume_info, write_volume
from pvc.cluster.vms.index import get_status, is_running
from pvc.core import schema
from pvc.core.config import Settings
from pvc.core.errors import Conflict, NotFound, PVCError
from pvc.core.records import SnapshotVolume, VMRecord, VMSnapshotRecord
from pvc.core.revert import Reverter
from pvc.core.zk import ZK

Log = Callable[[str], Any]
AGENT_TIMEOUT = 5          # seconds the guest agent may take to freeze or thaw
PAUSE_LOCK_TIMEOUT = 300.0  # seconds a snapshot waits for another one of the same VM to resume it
ATTEMPTS = 2               # the VM document changed while snapshotting: try once more


class SnapshotFailed(PVCError):
    """A snapshot operation failed part way; what it had made was removed (the message says so)."""


# Seams for the tests (and the bench): which Ceph and which libvirt a worker uses.
def storage_for(settings: Settings) -> Storage:
    return storage_from_settings(settings)


def hypervisor_for(uri: str) -> Hypervisor:
    return LibvirtHypervisor(uri)


def _read_vm(zk: ZK, uuid: str) -> tuple[VMRecord, int]:
    found = zk.get_doc(schema.vm(uuid))
    if found is None or not isinstance(found.data, dict):
        raise NotFound(f"VM {uuid} is not defined.")
    return VMRecord.model_validate(found.data), found.version


def _guest_hypervisor(zk: ZK, settings: Settings, this_node: str, uuid: str, log: Log) -> Hypervisor | None:
    """The hypervisor running the VM (None when it does not run anywhere)."""
    status = get_status(zk, uuid)
    if not is_running(status) or status is None or not status.node:
        return None
    if status.node == this_node:
        return hypervisor_for(settings.hypervisor.libvirt_uri)
    peer = zk.get(schema.node(status.node), None)
    uri = peer.get("libvirt_migration_uri") if isinstance(peer, dict) else None
    if not uri:
        log(f"VM runs on node {status.node}, whose libvirt URI is unknown here; no pause possible")
        return None
    log(f"VM runs on node {status.node}; pausing it through {uri}")
    return hypervisor_for(str(uri))


def _snap_all(take: SnapshotTaker, name: str, revert: Reverter, storage: Storage) -> None:
    """One RBD snapshot per volume, all at once; each made one gets its undo (also on failure)."""
    errors = []
    for (pool, volume), error in take(name).items():
        if error is None:
            revert.add(f"RBD snapshot {pool}/{volume}@{name}",
                       partial(_remove_rbd, storage, pool, volume, name))
        else:
            errors.append(f"{pool}/{volume}@{name}: {error.message}")
    if errors:
        raise SnapshotFailed(f"Could not create RBD snapshot(s) {'; '.join(errors)}")


def _remove_rbd(storage: Storage, pool: str, volume: str, name: str) -> None:
    try:
        storage.remove_snapshot(pool, volume, name)
    except StorageNotFound:
        pass


def take_disks(storage: Storage, hv: Hypervisor | None, uuid: str, volumes: Sequence[tuple[str, str]],
               name: str, revert: Reverter, log: Log) -> tuple[str, float | None]:
    """Snapshot every volume at one instant; (consistency, pause in ms when paused).

    The volumes are readied (opened) before the guest is frozen or paused and released after it
    runs again, so the pause covers only the snapshot creations, made in parallel.
    """
    try:
        with storage.prepared_snapshots(volumes) as take:
            return _take(storage, take, hv, uuid, len(volumes), name, revert, log)
    except StorageError as exc:
        raise SnapshotFailed(f"Could not snapshot the volumes ({name}): {exc.message}") from None


def _take(storage: Storage, take: SnapshotTaker, hv: Hypervisor | None, uuid: str, count: int, name: str,
          revert: Reverter, log: Log) -> tuple[str, float | None]:
    if hv is not None:
        frozen = False
        if hv.guest_agent_ready(uuid):
            try:
                frozen_count = hv.fs_freeze(uuid, AGENT_TIMEOUT)
                frozen = True
                log(f"froze {frozen_count} guest filesystem(s) through the QEMU guest agent")
            except HypervisorError as exc:
                log(f"guest agent freeze failed ({exc}); pausing the VM instead")
        if frozen:
            try:
                _snap_all(take, name, revert, storage)
            finally:
                try:
                    hv.fs_thaw(uuid, AGENT_TIMEOUT)
                    log("thawed the guest filesystems")
                except HypervisorError as exc:
                    log(f"WARNING: could not thaw the guest filesystems: {exc}")
            return "fs-frozen", None
        try:
            started = time.perf_counter()
            hv.suspend(uuid)
        except HypervisorError as exc:
            log(f"could not pause the VM ({exc}); its disks are snapshotted crash-consistent each")
        else:
            suspended = time.perf_counter()
            try:
                _snap_all(take, name, revert, storage)
            finally:
                snapped = time.perf_counter()
                _resume(hv, uuid, log)
                resumed = time.perf_counter()
            pause_ms = (resumed - started) * 1000
            steps = (f"suspend {(suspended - started) * 1000:.1f} ms, snapshots "
                     f"{(snapped - suspended) * 1000:.1f} ms, resume {(resumed - snapped) * 1000:.1f} ms")
            log(f"VM paused for {pause_ms:.1f} ms around {count} RBD snapshot(s) ({steps})")
            return "paused", pause_ms
    _snap_all(take, name, revert, storage)
    return "crash", None


def _resume(hv: Hypervisor, uuid: str, log: Log) -> None:
    for attempt in (1, 2):
        try:
            hv.resume(uuid)
            return
        except DomainNotFound:
            # stopped, removed or fenced meanwhile: there is nothing left to resume
            log("ERROR: the VM's domain went away while it was paused for its snapshot")
            raise SnapshotFailed("The VM's domain went away (the VM was stopped, removed or moved by "
                                 "force) while it was paused for its snapshot; the snapshot was not "
                                 "kept. Take it again if the VM still exists.") from None
        except HypervisorError as exc:
            if attempt == 2:
                log(f"ERROR: could not resume the VM after its snapshot: {exc}")
                raise SnapshotFailed(f"The VM could not be resumed after pausing it for its snapshot "
                                     f"({exc}); resume it with `virsh resume`.") from None
            time.sleep(0.05)


@contextmanager
def _pausing(zk: ZK, hv: Hypervisor | None, uuid: str, holder: str, log: Log) -> Iterator[None]:
    """One snapshot at a time pauses (or freezes) a running VM, cluster-wide: two at once would
    each resume the VM while the other still counts on it being paused (found by the chaos runner:
    the second resume fails with "domain is already running"). A VM that does not run is not
    paused, so needs no turn."""
    if hv is None:
        yield
        return
    lock = zk.lock(f"{schema.LOCKS}/vmsnapshot/{uuid}", holder)
    try:
        got = lock.acquire(timeout=PAUSE_LOCK_TIMEOUT)
    except LockTimeout:
        got = False
    if not got:
        raise SnapshotFailed(f"Another snapshot of VM {uuid} held the VM for over "
                             f"{PAUSE_LOCK_TIMEOUT:.0f} s; nothing was taken. Try again.")
    try:
        yield
    finally:
        try:
            lock.release()
        except Exception as exc:      # a lost session drops the lock with it
            log(f"WARNING: could not release the snapshot turn of VM {uuid}: {exc}")


def create_snapshot(zk: ZK, settings: Settings, this_node: str, uuid: str, name: str, origin: str,
                    log: Log, progress: Callable[[int, int, str], Any] | None = None,
                    details: dict[str, Any] | None = None) -> VMSnapshotRecord:
    """Take snapshot `name` of VM `uuid` (its XML, metadata and every RBD disk, consistently).

    Conflict when the name is taken or the VM has no RBD disk; SnapshotFailed (nothing left
    behind) when Ceph or the record write fails. `details` receives `pause_ms` (None unless paused)
    and `attempts`.
    """
    snaps.check_name(name)
    storage = storage_for(settings)
    for attempt in range(1, ATTEMPTS + 1):
        vm, version = _read_vm(zk, uuid)
        if zk.exists(schema.vm_snapshot(uuid, name)):
            raise Conflict(f'Snapshot "{name}" of VM "{vm.name}" already exists.')
        if not vm.rbd_volumes:
            raise Conflict(f'VM "{vm.name}" has no RBD disks; there is nothing to snapshot.')
        volumes = [snaps.split_ref(ref) for ref in vm.rbd_volumes]
        stats: dict[str, dict[str, Any]] = {}
        for pool, volume in volumes:
            try:
                stats[f"{pool}/{volume}"] = storage.volume_info(pool, volume)
            except StorageError as exc:
                raise SnapshotFailed(f'VM "{vm.name}": volume {pool}/{volume} cannot be snapshotted: '
                                     f"{exc.message}") from None
        if progress:
            progress(1, 3, f'Taking snapshot "{name}" of {len(volumes)} disk(s) of VM "{vm.name}"')
        hv = _guest_hypervisor(zk, settings, this_node, uuid, log)
        try:
            with Reverter(log) as revert, _pausing(zk, hv, uuid, f"{this_node}:{name}", log):
                consistency, pause_ms = take_disks(storage, hv, uuid, volumes, name, revert, log)
                refs = [SnapshotVolume(pool=p, volume=v, snap=name,
                                       size=int(stats[f"{p}/{v}"].get("size", 0))) for p, v in volumes]
                record = snaps.new_record(vm, name, refs, consistency, origin, version)
                if progress:
                    progress(2, 3, f'Recording snapshot "{name}" of VM "{vm.name}"')
                try:
                    snaps.write_snapshot(zk, uuid, record, version, stats)
                except snaps.VMChanged:
                    if attempt == ATTEMPTS:
                        raise SnapshotFailed(f'VM "{vm.name}" kept changing while snapshot "{name}" was '
                                             f"taken; nothing was kept. Try again.") from None
                    revert.revert(f"VM {vm.name} changed while its disks were snapshotted")
                    log("the VM document changed meanwhile; taking the snapshot again")
                    continue
                revert.commit()
        finally:
            if hv is not None:
                hv.close()
        _refresh_volumes(zk, storage, volumes)
        paused = f", paused {pause_ms:.1f} ms" if pause_ms is not None else ""
        result = f"consistency {consistency}{paused}"
        log(f'snapshot "{name}" of VM "{vm.name}" recorded ({result})')
        if details is not None:
            details.update(pause_ms=pause_ms, attempts=attempt)
        return record
    raise AssertionError("unreachable")


def _refresh_volumes(zk: ZK, storage: Storage, volumes: Sequence[tuple[str, str]]) -> None:
    """Best effort: the volume documents show the new snapshot count."""
    for pool, volume in volumes:
        try:
            write_volume(zk, pool, volume, volume_info(storage, pool, volume))
        except Exception:       # a figure, refreshed by the primary's next scan anyway
            continue


def remove_snapshot(zk: ZK, settings: Settings, uuid: str, name: str, force: bool, log: Log,
                    progress: Callable[[int, int, str], Any] | None = None) -> None:
    """Mark the record as removing, remove the RBD snapshots, then the record.

    Crash-safe: the mark is written before the first RBD snapshot goes, so a removal cut short
    (the worker died, an error) leaves a record that says so, and a repeat - the task is queued
    again after a worker's death - finishes it: RBD snapshots already gone are then expected.
    Otherwise a missing RBD snapshot is an error unless `force` (then the record goes anyway);
    on an error the record stays, so the remove can be repeated.
    """
    record = snaps.get_snapshot(zk, uuid, name)
    storage = storage_for(settings)
    if not force and record.state != "removing":
        missing = _missing_rbd(storage, record)
        if missing:         # refused before anything is written
            raise SnapshotFailed(f'Could not remove snapshot "{name}": {"; ".join(missing)}. Nothing was '
                                 f"changed; use force to drop the record anyway.")
    record, resumed = snaps.mark_removing(zk, uuid, name)
    if resumed:
        log(f'snapshot "{name}" was being removed already: finishing that removal')
    errors = []
    total = len(record.volumes) + 1
    for index, vol in enumerate(record.volumes, start=1):
        if progress:
            progress(index, total, f"Removing RBD snapshot {vol.ref}")
        try:
            storage.remove_snapshot(vol.pool, vol.volume, vol.snap)
        except StorageNotFound:
            # forced, removed by the removal this one finishes, or gone since the check above
            log(f"RBD snapshot {vol.ref} is already gone (ignored)")
        except StorageError as exc:
            errors.append(f"{vol.ref}: {exc.message}")
    if errors:
        raise SnapshotFailed(f'Could not remove snapshot "{name}": {"; ".join(errors)}. The snapshot '
                             f"record is kept, marked as being removed; repeat the removal to finish it.")
    snaps.drop_snapshot(zk, uuid, name)
    _refresh_volumes(zk, storage, [(v.pool, v.volume) for v in record.volumes])
    log(f'snapshot "{name}" removed')


def _missing_rbd(storage: Storage, record: VMSnapshotRecord) -> list[str]:
    """The record's RBD snapshots that are missing from Ceph, each as 'pool/volume@snap: why'."""
    missing = []
    for vol in record.volumes:
        try:
            if vol.snap not in storage.list_snapshots(vol.pool, vol.volume):
                missing.append(f"{vol.ref}: not found")
        except StorageNotFound:
            missing.append(f"{vol.ref}: volume {vol.pool}/{vol.volume} not found")
    return missing


def rename_snapshot(zk: ZK, settings: Settings, uuid: str, name: str, new_name: str,
                    log: Log) -> VMSnapshotRecord:
    """Rename the RBD snapshots, then move the documents; undo the RBD renames on failure."""
    record = snaps.get_snapshot(zk, uuid, name)
    snaps.check_name(new_name)
    if zk.exists(schema.vm_snapshot(uuid, new_name)):
        raise Conflict(f'Snapshot "{new_name}" of VM {uuid} already exists.')
    storage = storage_for(settings)
    with Reverter(log) as revert:
        for vol in record.volumes:
            try:
                storage.rename_snapshot(vol.pool, vol.volume, vol.snap, new_name)
            except StorageError as exc:
                raise SnapshotFailed(f"Could not rename RBD snapshot {vol.ref} to {new_name}: "
                                     f"{exc.message}") from None
            revert.add(f"RBD snapshot {vol.ref} renamed to {new_name}",
                       partial(storage.rename_snapshot, vol.pool, vol.volume, new_name, vol.snap))
        new = snaps.rename_documents(zk, uuid, name, new_name)
        revert.commit()
    log(f'snapshot "{name}" renamed to "{new_name}"')
    return new


def rollback_snapshot(zk: ZK, settings: Settings, uuid: str, name: str, force: bool, with_meta: bool,
                      log: Log, progress: Callable[[int, int, str], Any] | None = None) -> VMRecord:
    """Roll the disks and the XML of a stopped VM back to snapshot `name`.

    Everything is checked before the first disk is touched: the VM's state, that it does not run,
    that no client has a disk open, that the snapshot's XML parses. Disks the snapshot does not
    hold are refused, or with `force` left out of the restored XML (detached; the volume list is
    rebuilt from that XML). `with_meta` restores the captured metadata too.
    """
    from pvc.cluster.vms import transitions as tr
    from pvc.cluster.vms import writes
    from pvc.core import domainxml

    vm, _version = _read_vm(zk, uuid)
    record = snaps.get_snapshot(zk, uuid, name)
    extra = snaps.check_rollback(vm, record, force)
    if is_running(get_status(zk, uuid)):
        raise Conflict(f'VM "{vm.name}" is still running; a snapshot is only rolled back once it is down.')
    if not record.xml:
        raise SnapshotFailed(f'Snapshot "{name}" of VM "{vm.name}" holds no XML; nothing was changed.')
    xml = record.xml if domainxml.parse(record.xml).name == vm.name else \
        snaps.rename_xml(record.xml, vm.name, {})
    domain = domainxml.parse(xml)
    try:        # this node's domain XML policy (D14) may have been tightened since the snapshot
        domainxml.check_domain(xml, domainxml.DomainPolicy.from_settings(settings))
    except PVCError as exc:
        raise SnapshotFailed(f'The XML of snapshot "{name}" is refused by the domain XML policy: '
                             f"{exc.message}; nothing was changed.") from None
    storage = storage_for(settings)
    for vol in record.volumes:
        try:
            present = storage.list_snapshots(vol.pool, vol.volume)
            users = storage.watchers(vol.pool, vol.volume)
        except StorageError as exc:
            raise SnapshotFailed(f"Volume {vol.pool}/{vol.volume} cannot be rolled back: {exc.message}; "
                                 f"nothing was changed.") from None
        if vol.snap not in present:
            raise SnapshotFailed(f"RBD snapshot {vol.ref} is missing; nothing was changed.")
        if users:
            raise Conflict(f"Volume {vol.pool}/{vol.volume} is open by {', '.join(users)}; all I/O must stop "
                           f"before a rollback. Nothing was changed.")
    total = len(record.volumes) + 1
    for index, vol in enumerate(record.volumes, start=1):
        if progress:
            progress(index, total, f"Rolling back RBD volume {vol.pool}/{vol.volume} to {vol.snap}")
        try:
            storage.rollback_snapshot(vol.pool, vol.volume, vol.snap)
        except StorageError as exc:
            raise SnapshotFailed(f"Rollback of {vol.ref} failed: {exc.message}. Disks rolled back so far: "
                                 f"{', '.join(v.ref for v in record.volumes[:index - 1]) or 'none'}; the "
                                 f"XML was not changed. Repeat the rollback.") from None
    if progress:
        progress(total, total, f'Restoring the configuration of VM "{vm.name}" from snapshot "{name}"')
    meta = {k: v for k, v in record.meta.items() if k in snaps.META_FIELDS and k != "description"} \
        if with_meta else {}

    def restore(current: VMRecord) -> VMRecord:
        if current.state not in snaps.ROLLBACK_STATES:
            raise Conflict(f'VM "{current.name}" left the stopped states (now {current.state}) during the '
                           f"rollback; its disks were rolled back but its XML was not.")
        new = tr.replace_definition(current, domain, xml)
        return VMRecord.model_validate({**new.doc(), **meta}) if meta else new

    restored = writes.apply(zk, uuid, restore)
    _refresh_volumes(zk, storage, [(v.pool, v.volume) for v in record.volumes])
    if extra:
        log(f"disks not in the snapshot were detached: {', '.join(extra)}")
    log(f'VM "{vm.name}" rolled back to snapshot "{name}"' + (" with its metadata" if with_meta else ""))
    return restored
