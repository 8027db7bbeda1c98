"""VM tasks that must run on the VM's node: RBD lock flush, live device (un)plug, live disk resize.

They run in pvcworkerd on the node named in the task (pvc.cluster.vms routes them there), through
this node's hypervisor adapter (settings.hypervisor.libvirt_uri) and storage adapter. Hot (un)plug
is not persisted: the CLI writes the changed XML to the VM record separately, as upstream does.
"""

from __future__ import annotations

from typing import Any

from pvc.adapters.ceph import StorageError, StorageNotFound, secret_uuid
from pvc.adapters.ceph.base import image_guarded
from pvc.adapters.hypervisor import Hypervisor, HypervisorError, LibvirtHypervisor
from pvc.core import domainxml, schema
from pvc.core.errors import PVCError
from pvc.core.records import VMRecord
from pvc.core.taskkinds import VM_BLOCK_RESIZE, VM_DEVICE_ATTACH, VM_DEVICE_DETACH, VM_FLUSH_LOCKS
from pvc.core.units import parse_size
from pvc.core.vocabulary import VM_STOPPED_STATES
from pvc.worker.kinds.storage import common as storage_common
from pvc.worker.registry import TaskContext, TaskFailed, task_kind


def hypervisor_for(ctx: TaskContext) -> Hypervisor:
    """This node's hypervisor (a seam for the unit tests)."""
    return LibvirtHypervisor(ctx.settings.hypervisor.libvirt_uri)


def _record(ctx: TaskContext, uuid: str) -> VMRecord:
    data = ctx.zk.get(schema.vm(uuid), None)
    if not isinstance(data, dict):
        raise TaskFailed(f"VM {uuid} is not defined")
    return VMRecord.model_validate(data)


@task_kind(VM_FLUSH_LOCKS)
def flush_locks(ctx: TaskContext, uuid: str, domain: str = "", force_unlock: bool = False,
                **_: Any) -> dict[str, Any]:
    """Remove stale RBD locks of the VM's volumes (left by a node that died while running it).

    Breaking a lock also blocklists its holder (librbd), so a client that was in fact still alive
    cannot write behind the next owner's back; that is why a VM that may run (a state outside
    VM_STOPPED_STATES, where it cannot be running anywhere) is refused.
    """
    record = _record(ctx, uuid)
    name = domain or record.name
    if record.state not in VM_STOPPED_STATES and not force_unlock:
        raise TaskFailed(f"VM {name} is in state {record.state}; its RBD locks are only flushed while it "
                         f"cannot run ({', '.join(VM_STOPPED_STATES)}), unless forced")
    volumes = list(record.rbd_volumes)
    ctx.progress(0, len(volumes) + 1, f"Flushing RBD locks of VM {name}")
    if not volumes:
        return {"status": f"VM {name} has no RBD volumes; no locks to flush", "volumes": [], "freed": []}
    storage = storage_common.storage_for(ctx.settings)
    freed: list[dict[str, str]] = []
    errors: list[str] = []
    for index, ref in enumerate(volumes, start=1):
        pool, _, volume = ref.partition("/")
        ctx.progress(index, len(volumes) + 1, f"Flushing RBD locks of volume {ref}")
        try:
            lockers = storage.lockers(pool, volume)
        except StorageNotFound:
            ctx.log(f"volume {ref} does not exist; nothing to flush")
            continue
        except StorageError as exc:
            errors.append(f"{ref}: {exc.message}")
            continue
        for locker in lockers:
            try:
                storage.break_lock(pool, volume, locker)
            except StorageNotFound:
                continue                 # released meanwhile
            except StorageError as exc:
                errors.append(f"{ref} lock {locker.client}: {exc.message}")
                continue
            freed.append({"volume": ref, "client": locker.client, "cookie": locker.cookie,
                          "address": locker.address})
            ctx.log(f"freed lock of {locker.client} ({locker.address}) on {ref}")
    result = {"volumes": volumes, "freed": freed}
    if errors:
        raise TaskFailed(f"Could not flush all RBD locks of VM {name}: {'; '.join(errors)}",
                         {**result, "errors": errors})
    what = f"{len(freed)} lock(s)" if freed else "no locks (none were held)"
    return {"status": f"Flushed {what} on {len(volumes)} volume(s) of VM {name}", **result}


def _rbd_access(ctx: TaskContext, xml: str) -> str:
    """An rbd disk attached live needs the monitors and the libvirt secret, as at VM start."""
    cfg = ctx.settings.storage
    storage = storage_common.storage_for(ctx.settings)
    try:
        hosts = storage.mon_addresses()
        secret = secret_uuid(storage.fsid(), cfg.secret_uuid)
    except StorageError as exc:
        raise TaskFailed(f"Cannot reach Ceph for the disk's monitors: {exc.message}") from None
    try:
        return domainxml.fill_rbd_device(xml, hosts, cfg.client_user, secret)
    except PVCError as exc:
        raise TaskFailed(f"Invalid device XML: {exc.message}") from None


def _device(ctx: TaskContext, uuid: str, xml: str, attach: bool, domain: str) -> dict[str, Any]:
    record = _record(ctx, uuid)
    name = domain or record.name
    verb = "attach" if attach else "detach"
    if record.state != "start" or record.node != ctx.node:
        raise TaskFailed(f"VM {name} is not running on node {ctx.node} (state {record.state}, node "
                         f"{record.node or 'none'}); live device {verb} needs a running VM")
    if attach:  # this node's own domain XML policy (D14): a task written into ZooKeeper bypasses the API
        try:
            domainxml.check_device(xml, domainxml.DomainPolicy.from_settings(ctx.settings))
        except PVCError as exc:
            raise TaskFailed(f"Device attach on VM {name} refused: {exc.message}") from None
    ctx.progress(0, 1, f"{verb.capitalize()}ing a device {'to' if attach else 'from'} VM {name}")
    hv = hypervisor_for(ctx)
    try:
        if not hv.is_running(uuid):
            raise TaskFailed(f"VM {name} is not running on node {ctx.node}; live device {verb} needs "
                             "a running VM")
        if attach and "rbd" in xml:
            xml = _rbd_access(ctx, xml)
        (hv.attach_device if attach else hv.detach_device)(uuid, xml)
    except HypervisorError as exc:
        raise TaskFailed(f"Device {verb} on VM {name} failed: {exc}") from None
    finally:
        hv.close()
    return {"status": f"Device {verb}ed {'to' if attach else 'from'} VM {name}"}


@task_kind(VM_DEVICE_ATTACH)
def device_attach(ctx: TaskContext, uuid: str, xml: str, domain: str = "", **_: Any) -> dict[str, Any]:
    return _device(ctx, uuid, xml, True, domain)


@task_kind(VM_DEVICE_DETACH)
def device_detach(ctx: TaskContext, uuid: str, xml: str, domain: str = "", **_: Any) -> dict[str, Any]:
    return _device(ctx, uuid, xml, False, domain)


@task_kind(VM_BLOCK_RESIZE)
def block_resize(ctx: TaskContext, uuid: str, pool: str, volume: str, size: int | str, domain: str = "",
                 **_: Any) -> dict[str, Any]:
    """Tell the running VM its RBD disk grew (libvirt blockResize), after the volume was resized."""
    record = _record(ctx, uuid)
    name = domain or record.name
    disk = f"{pool}/{volume}"
    try:
        size_bytes = size if isinstance(size, int) else parse_size(str(size), "size")
    except PVCError as exc:
        raise TaskFailed(exc.message) from None
    ctx.progress(0, 1, f"Resizing disk {disk} of VM {name} to {size_bytes} bytes")
    hv = hypervisor_for(ctx)
    try:
        if not hv.is_running(uuid):
            raise TaskFailed(f"VM {name} is not running on node {ctx.node}; it sees the new size of {disk} "
                             f"when it next starts")
        # QEMU resizes the image: under the image's lock, like the Ceph adapter's own maintenance
        # operations (pvc.cluster.storage.imagelock), so no snapshot operation overlaps it
        with image_guarded([(pool, volume)], f"live resize of {disk} in VM {name}"):
            hv.block_resize(uuid, disk, size_bytes)
    except StorageError as exc:
        raise TaskFailed(f"Live resize of disk {disk} of VM {name} refused: {exc.message}") from None
    except HypervisorError as exc:
        raise TaskFailed(f"Live resize of disk {disk} of VM {name} failed: {exc}") from None
    finally:
        hv.close()
    return {"status": f"Resized disk {disk} of running VM {name} to {size_bytes} bytes"}
