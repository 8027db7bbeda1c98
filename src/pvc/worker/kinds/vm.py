"""VM tasks that must run on the VM's node: RBD lock flush and live device (un)plug.

They run in pvcworkerd on the node named in the task (pvc.cluster.vms routes them there), through
this node's hypervisor adapter (settings.hypervisor.libvirt_uri). Hot (un)plug is not persisted:
the CLI writes the changed XML to the VM record separately, as upstream does.
"""

from __future__ import annotations

from typing import Any

from pvc.adapters.hypervisor import HypervisorError, LibvirtHypervisor
from pvc.core import schema
from pvc.core.records import VMRecord
from pvc.worker.registry import TaskContext, TaskFailed, task_kind


def _record(ctx: TaskContext, uuid: str) -> VMRecord:
    data = ctx.zk.get(schema.vm(uuid), None)
    if not isinstance(data, dict):
        raise TaskFailed(f"VM {uuid} is not defined")
    return VMRecord.model_validate(data)


@task_kind("vm.flush_locks")
def flush_locks(ctx: TaskContext, uuid: str, domain: str = "", force_unlock: bool = False,
                **_: Any) -> dict[str, Any]:
    """Remove stale RBD locks of the VM's volumes (left by a node that died while running it)."""
    record = _record(ctx, uuid)
    name = domain or record.name
    ctx.progress(0, 1, f"Flushing RBD locks of VM {name}")
    if not record.rbd_volumes:
        return {"status": f"VM {name} has no RBD volumes; no locks to flush", "volumes": []}
    raise TaskFailed(f"Flushing the RBD locks of VM {name} ({', '.join(record.rbd_volumes)}) needs the "
                     "storage subsystem, which this PVC does not have yet",
                     {"volumes": record.rbd_volumes})


def _device(ctx: TaskContext, uuid: str, xml: str, attach: bool, domain: str) -> dict[str, Any]:
    record = _record(ctx, uuid)
    name = domain or record.name
    verb = "attach" if attach else "detach"
    if record.state != "start" or record.node != ctx.node:
        raise TaskFailed(f"VM {name} is not running on node {ctx.node} (state {record.state}, node "
                         f"{record.node or 'none'}); live device {verb} needs a running VM")
    ctx.progress(0, 1, f"{verb.capitalize()}ing a device {'to' if attach else 'from'} VM {name}")
    hv = LibvirtHypervisor(ctx.settings.hypervisor.libvirt_uri)
    try:
        if not hv.is_running(uuid):
            raise TaskFailed(f"VM {name} is not running on node {ctx.node}; live device {verb} needs "
                             "a running VM")
        (hv.attach_device if attach else hv.detach_device)(uuid, xml)
    except HypervisorError as exc:
        raise TaskFailed(f"Device {verb} on VM {name} failed: {exc}") from None
    finally:
        hv.close()
    return {"status": f"Device {verb}ed {'to' if attach else 'from'} VM {name}"}


@task_kind("vm.device_attach")
def device_attach(ctx: TaskContext, uuid: str, xml: str, domain: str = "", **_: Any) -> dict[str, Any]:
    return _device(ctx, uuid, xml, True, domain)


@task_kind("vm.device_detach")
def device_detach(ctx: TaskContext, uuid: str, xml: str, domain: str = "", **_: Any) -> dict[str, Any]:
    return _device(ctx, uuid, xml, False, domain)
