"""VM routes (pvc-facts §8.3): define, list, inspect, modify, states, migration, metadata, tags,
console, rename (with volumes named after the VM), lock flush and device hot-plug. Backups,
snapshots and mirrors come later.

Decisions and writes live in pvc.cluster.vms; these routes only parse inputs, call it, and shape
answers as PVC clients expect (element GETs are one-element arrays; an empty list is a 404).
`wait=true` waits here, asynchronously, so a waiting request does not hold a worker thread.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from pvc.adapters.ceph import Storage
from pvc.api.auth import require_auth
from pvc.api.common import (
    IfMatch,
    etag,
    get_settings,
    get_storage,
    get_zk,
    if_match,
    ok,
    responses,
    task_accepted,
    wait_async,
)
from pvc.api.errors import message
from pvc.api.models import VM, Message, TaskAccepted, VMLog, VMMeta, VMNode, VMState, VMTags
from pvc.api.params import Bool, Inputs, inputs
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import tasks as tasks_mod
from pvc.cluster import vm_storage
from pvc.cluster import vms as vms_mod
from pvc.core import domainxml, vocabulary
from pvc.core.config import Settings
from pvc.core.errors import NotFound
from pvc.core.vocabulary import VM_MIGRATE_STATES
from pvc.core.zk import ZK

router = APIRouter(prefix="/vm", tags=["vm"], dependencies=[Depends(require_auth)])

VM_404 = (404,)

Selector = vocabulary.SelectorOrNone
Method = vocabulary.MigrationMethod
ListState = vocabulary.ListVMState

LIMIT_HELP = ("The node(s) the VM may be assigned to: repeated keys or one comma-separated list; should "
              "include `node`")
SELECTOR_HELP = "The selector used to choose target nodes for the VM; none = the cluster default"
METHOD_HELP = ("The preferred migration method: live (live only), shutdown (shut down and move) or none "
               "(the default: live, falling back to shutdown)")


DEFINE_FORCE_HELP = ("Define the VM even if its memory or vCPUs exceed every node's, or its node limit "
                     "names nodes not registered yet (nodes still to be added); refused otherwise")
MODIFY_FORCE_HELP = ("Accept a definition whose memory or vCPUs exceed every node's (a bigger node still to "
                     "be added); refused otherwise")
META_FORCE_HELP = "Accept a node limit naming nodes not registered yet; refused otherwise"


class VMListInputs(Inputs):
    limit: str | None = Field(None, description="A regex on the VM name (fuzzy unless anchored with ^ or $), "
                                                "or an exact UUID")
    node: str | None = Field(None, description="Only VMs assigned to this node")
    state: ListState | None = Field(None, description="Only VMs in this state")
    tag: str | None = Field(None, description="Only VMs with this tag")
    negate: Bool = Field(False, description="Invert the node, state and tag filters")


class DefineInputs(Inputs):
    xml: str = Field(description="The libvirt XML definition of the VM")
    node: str | None = Field(None, description="The node the VM is assigned to; chosen by the selector "
                                               "when empty")
    limit: list[str] | None = Field(None, description=LIMIT_HELP)
    selector: Selector = Field("none", description=SELECTOR_HELP)
    autostart: Bool = Field(False, description="Start the VM when its node returns to ready state")
    migration_method: Method = Field("none", description=METHOD_HELP)
    migration_max_downtime: int = Field(300, ge=1, le=3_600_000,
                                        description="The most a live migration may pause the VM (ms)")
    user_tags: list[str] = Field(default_factory=list, description="User tags of the VM (repeat the key)")
    protected_tags: list[str] = Field(default_factory=list,
                                      description="Protected user tags of the VM (repeat the key)")
    force: Bool = Field(False, description=DEFINE_FORCE_HELP)


class ModifyInputs(Inputs):
    xml: str = Field(description="The new libvirt XML definition of the VM")
    restart: Bool = Field(False, description="Restart the VM to apply the new definition")
    force: Bool = Field(False, description=MODIFY_FORCE_HELP)


class DeleteInputs(Inputs):
    delete_disks: Bool = Field(False, description="Also remove the VM's RBD volumes")


class MetaInputs(Inputs):
    limit: list[str] | None = Field(None, description=LIMIT_HELP + "; an empty value clears it")
    selector: Selector | None = Field(None, description=SELECTOR_HELP)
    autostart: Bool | None = Field(None, description="Start the VM when its node returns to ready state")
    profile: str | None = Field(None, description="The provisioner profile of the VM")
    migration_method: Method | None = Field(None, description=METHOD_HELP)
    migration_max_downtime: int | None = Field(None, ge=1, le=3_600_000,
                                               description="The most a live migration may pause the VM (ms)")
    force: Bool = Field(False, description=META_FORCE_HELP)


class TagInputs(Inputs):
    action: Literal["add", "remove"] = Field(description="Add or remove the tag")
    tag: str = Field(description="The tag")
    protected: Bool = Field(False, description="Whether an added tag is protected from removal")


class StateInputs(Inputs):
    state: vocabulary.SettableVMState = Field(description="The new state")
    force: Bool = Field(False, description="disable: stop instead of shutting down; start/stop/disable: "
                                           "allowed on a snapshot mirror")
    wait: Bool = Field(False, description="Answer once the node has carried out the change")


class NodeInputs(Inputs):
    action: vocabulary.NodeAction = Field(
        description="migrate: temporarily; move: permanently; unmigrate: back to the last node")
    node: str | None = Field(None, description="The target node; chosen by the VM's selector when empty")
    force: Bool = Field(False, description="Migrate a VM that is already migrated (keeps its origin)")
    wait: Bool = Field(False, description="Answer once the migration has finished")
    force_live: Bool = Field(False, description="Live migration only, no shutdown fallback")


class ConsoleInputs(Inputs):
    lines: int = Field(10, ge=0, le=100000, description="How many of the last console lines to return")


class RenameInputs(Inputs):
    new_name: str = Field(description="The new name of the VM")


class DeviceInputs(Inputs):
    xml: str = Field(description="The libvirt XML of the device to attach or detach")


def _json(data: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(content=data, media_type="application/json", headers=headers)


def _limit(values: list[str] | None) -> list[str] | None:
    return None if values is None else vms_mod.parse_limit(values)


async def _wait_while(request: Request, zk: ZK, uuid: str, states: tuple[str, ...]) -> bool:
    """Wait until the VM leaves `states` (or the client goes away); True when it did."""
    return await wait_async(request, lambda: vms_mod.get_vm(zk, uuid).state not in states)


# -- list and define ---------------------------------------------------------------------------------

@router.get("", summary="Return a list of VMs in the cluster", responses=responses(list[VM], 200, 404))
def vm_list(params: VMListInputs = inputs(VMListInputs), zk: ZK = Depends(get_zk)) -> Response:
    entries = vms_mod.list_vms(zk, params.limit, params.node, params.state, params.tag, params.negate)
    if not entries:
        raise NotFound("VM not found.")
    return _json(vms_mod.list_json(zk, entries))


def _policy(settings: Settings) -> domainxml.DomainPolicy:
    """This API node's domain XML policy (D14): what a defined, modified or attached XML may open."""
    return domainxml.DomainPolicy.from_settings(settings)


def _define(params: DefineInputs, zk: ZK, settings: Settings) -> JSONResponse:
    record = vms_mod.define(
        zk, params.xml, node=params.node or None, limit=params.limit, selector=params.selector,
        autostart=params.autostart, migration_method=params.migration_method,
        migration_max_downtime=params.migration_max_downtime, user_tags=params.user_tags,
        protected_tags=params.protected_tags, policy=_policy(settings), strict=True, force=params.force,
    )
    return message(f'Added new VM with Name "{record.name}" and UUID "{record.uuid}" to database.')


@router.post("", summary="Define a new VM from libvirt XML", responses=responses(Message, 200, 404))
def vm_define(params: DefineInputs = inputs(DefineInputs), zk: ZK = Depends(get_zk),
              settings: Settings = Depends(get_settings)) -> JSONResponse:
    return _define(params, zk, settings)


# -- one VM -----------------------------------------------------------------------------------------

@router.get("/{vm}", summary="Return information about VM {vm} (a one-element array)",
            responses=responses(list[VM], 200, *VM_404, etag=True))
def vm_get(vm: str, zk: ZK = Depends(get_zk)) -> Response:
    entry = vms_mod.get_entry(zk, vm)
    return _json(b"[" + vms_mod.item_json(zk, entry) + b"]", etag(entry.version))


# POST /vm/autobackup and /vm/automirror live in pvc.api.routers.vm_auto, included before this
# router so that they are never taken for POST /vm/{vm} (a VM may still be named so).


@router.post("/{vm}", summary="Define a new VM (identical to POST /vm; {vm} is ignored, the XML's name "
                              "is used)", responses=responses(Message, 200, 404))
def vm_define_named(vm: str, params: DefineInputs = inputs(DefineInputs),
                    zk: ZK = Depends(get_zk), settings: Settings = Depends(get_settings)) -> JSONResponse:
    return _define(params, zk, settings)


@router.put("/{vm}", summary="Replace the libvirt XML of VM {vm} (If-Match: only if unchanged since read)",
            responses=responses(Message, 200, *VM_404, 412))
def vm_modify(vm: str, params: ModifyInputs = inputs(ModifyInputs), zk: ZK = Depends(get_zk),
              match: IfMatch = None, settings: Settings = Depends(get_settings)) -> JSONResponse:
    return message(vms_mod.modify(zk, vm, params.xml, params.restart, expected_version=if_match(match),
                                  policy=_policy(settings), strict=True, force=params.force))


@router.delete("/{vm}", summary="Undefine VM {vm} (stopping it first), or remove it with its disks",
               responses=responses(Message, 200, *VM_404))
def vm_delete(vm: str, params: DeleteInputs = inputs(DeleteInputs), zk: ZK = Depends(get_zk),
              storage: Storage = Depends(get_storage)) -> JSONResponse:
    if params.delete_disks:
        return message(vm_storage.remove_with_disks(zk, storage, vm))
    return message(vms_mod.undefine(zk, vm))


# -- metadata and tags --------------------------------------------------------------------------------

@router.get("/{vm}/meta", summary="Return the metadata of VM {vm}",
            responses=responses(VMMeta, 200, *VM_404, etag=True))
def vm_meta(vm: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    entry = vms_mod.get_entry(zk, vm)
    return ok(vms_mod.meta_view(entry.record), headers=etag(entry.version))


@router.post("/{vm}/meta", summary="Set metadata of VM {vm} (only the fields given)",
             responses=responses(Message, 200, *VM_404, 412))
def vm_set_meta(vm: str, params: MetaInputs = inputs(MetaInputs), zk: ZK = Depends(get_zk),
                match: IfMatch = None) -> JSONResponse:
    return message(vms_mod.set_meta(
        zk, vm, limit=_limit(params.limit), selector=params.selector, autostart=params.autostart,
        profile=params.profile, migration_method=params.migration_method,
        migration_max_downtime=params.migration_max_downtime, expected_version=if_match(match),
        strict=True, force=params.force,
    ))


@router.get("/{vm}/tags", summary="Return the tags of VM {vm}",
            responses=responses(VMTags, 200, *VM_404, etag=True))
def vm_tags(vm: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    entry = vms_mod.get_entry(zk, vm)
    return ok({"name": entry.record.name, "tags": [t.doc() for t in entry.record.tags]},
              headers=etag(entry.version))


@router.post("/{vm}/tags", summary="Add or remove a tag of VM {vm}",
             responses=responses(Message, 200, *VM_404, 412))
def vm_set_tag(vm: str, params: TagInputs = inputs(TagInputs), zk: ZK = Depends(get_zk),
               match: IfMatch = None) -> JSONResponse:
    return message(vms_mod.modify_tag(zk, vm, params.action, params.tag, params.protected,
                                      expected_version=if_match(match)))


# -- state and node -----------------------------------------------------------------------------------

@router.get("/{vm}/state", summary="Return the state of VM {vm}", responses=responses(VMState, 200, *VM_404))
def vm_state(vm: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    record = vms_mod.get_vm(zk, vm)
    return ok({"name": record.name, "state": record.state})


@router.post("/{vm}/state", summary="Start, shut down, stop, restart or disable VM {vm}",
             responses=responses(Message, 200, *VM_404, 412))
async def vm_set_state(request: Request, vm: str, params: StateInputs = inputs(StateInputs),
                       zk: ZK = Depends(get_zk), match: IfMatch = None) -> JSONResponse:
    done = await run_in_threadpool(vms_mod.set_state, zk, vm, params.state, params.force,
                                   expected_version=if_match(match))
    text = done.plan.message
    transitional = done.plan.wait_while if params.wait and not done.plan.then else None
    if transitional and await _wait_while(request, zk, done.record.uuid, (transitional,)):
        text = vms_mod.wait_message(done.plan, done.record.name)
    return message(text)


@router.get("/{vm}/node", summary="Return the node and last node of VM {vm}",
            responses=responses(VMNode, 200, *VM_404))
def vm_node(vm: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    record = vms_mod.get_vm(zk, vm)
    return ok({"name": record.name, "node": record.node, "last_node": record.last_node})


@router.post("/{vm}/node", summary="Migrate, move or unmigrate VM {vm}",
             responses=responses(Message, 200, *VM_404, 412))
async def vm_set_node(request: Request, vm: str, params: NodeInputs = inputs(NodeInputs),
                      zk: ZK = Depends(get_zk), match: IfMatch = None) -> JSONResponse:
    done = await run_in_threadpool(vms_mod.change_node, zk, vm, params.action, params.node or None,
                                   params.force, params.force_live, expected_version=if_match(match))
    change, record = done.change, done.record
    text = change.message
    if params.wait and change.wait_while and \
            await _wait_while(request, zk, record.uuid, VM_MIGRATE_STATES):
        text = vms_mod.node_change_done_message(params.action, record.name, change.node)
    return message(text)


# -- tasks, console, rename ---------------------------------------------------------------------------

@router.post("/{vm}/locks", summary="Flush the RBD locks of (stopped) VM {vm} on its node",
             responses=responses(TaskAccepted, 202, *VM_404))
def vm_flush_locks(vm: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    task = vms_mod.flush_locks(zk, vm)
    return task_accepted(tasks_mod.accepted(task, nodes_mod.primary_node(zk)))


@router.get("/{vm}/console", summary="Return the recent serial console output of VM {vm}",
            responses=responses(VMLog, 200, *VM_404))
def vm_console(vm: str, params: ConsoleInputs = inputs(ConsoleInputs),
               zk: ZK = Depends(get_zk)) -> JSONResponse:
    record = vms_mod.get_vm(zk, vm)
    return ok({"name": record.name, "data": vms_mod.console_log(zk, record.uuid, params.lines)})


@router.post("/{vm}/rename", summary="Rename (stopped) VM {vm}", responses=responses(Message, 200, *VM_404))
def vm_rename(vm: str, params: RenameInputs = inputs(RenameInputs), zk: ZK = Depends(get_zk),
              storage: Storage = Depends(get_storage)) -> JSONResponse:
    return message(vm_storage.rename(zk, storage, vm, params.new_name))


@router.post("/{vm}/device", summary="Hot-attach a device to (running) VM {vm} on its node",
             responses=responses(TaskAccepted, 202, *VM_404))
def vm_attach(vm: str, params: DeviceInputs = inputs(DeviceInputs), zk: ZK = Depends(get_zk),
              settings: Settings = Depends(get_settings)) -> JSONResponse:
    task = vms_mod.device_task(zk, vm, params.xml, attach=True, policy=_policy(settings))
    return task_accepted(tasks_mod.accepted(task, nodes_mod.primary_node(zk)))


@router.delete("/{vm}/device", summary="Hot-detach a device from (running) VM {vm} on its node",
               responses=responses(TaskAccepted, 202, *VM_404))
def vm_detach(vm: str, params: DeviceInputs = inputs(DeviceInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    task = vms_mod.device_task(zk, vm, params.xml, attach=False)
    return task_accepted(tasks_mod.accepted(task, nodes_mod.primary_node(zk)))
