"""Provisioning jobs (pvc-facts §7.2, §8.3): start one, list them, follow or cancel one.

`POST /provisioner/create` queues a `provisioner.create` task on the primary's worker (202 +
Location, as upstream). Jobs are PVC tasks in ZooKeeper, so their status survives a primary
change and they can be cancelled (the job then runs its script's cleanup() and removes what it
made). `GET /provisioner/status[/<id>]` and `DELETE /provisioner/status/<id>` are ours: upstream
documents the status route but only has `/tasks/<id>`, which answers for these jobs too.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import Field

from pvc.api.auth import require_auth
from pvc.api.common import get_zk, ok, responses, task_accepted
from pvc.api.errors import message
from pvc.api.models import Message, TaskAccepted, TaskStatus
from pvc.api.params import Bool, Inputs, inputs
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import placement, vms
from pvc.cluster import provisioner as prov
from pvc.cluster import tasks as tasks_mod
from pvc.cluster.vms import rules
from pvc.core import schema
from pvc.core.errors import InvalidInput, NotFound
from pvc.core.records import TaskRecord
from pvc.core.taskkinds import PROVISION_STAGES, PROVISIONER_CREATE, ProvisionArgs
from pvc.core.vocabulary import TASK_FINISHED
from pvc.core.zk import ZK

router = APIRouter(prefix="/provisioner", tags=["provisioner"], dependencies=[Depends(require_auth)])

JOB_ITEM = {
    "type": "object",
    "properties": {
        "id": {"type": "string"}, "state": {"type": "string"}, "status": {"type": "string"},
        "current": {"type": "integer"}, "total": {"type": "integer"}, "worker": {"type": "string"},
        "vm_name": {"type": "string"}, "vm_profile": {"type": "string"}, "define_vm": {"type": "boolean"},
        "start_vm": {"type": "boolean"}, "script_run_args": {"type": "array", "items": {"type": "string"}},
        "created": {"type": "number"}, "started": {"type": "number"}, "finished": {"type": "number"},
    },
}


class CreateInputs(Inputs):
    name: str = Field(description="Virtual machine name")
    profile: str = Field(description="Profile name")
    define_vm: Bool = Field(True, description="Whether to define the VM on the cluster during provisioning")
    start_vm: Bool = Field(True, description="Whether to start the VM after provisioning (implies define_vm)")
    arg: list[str] = Field(default_factory=list,
                           description="Script argument in key=value form; repeat the key for several "
                                       "(they override the profile's arguments)")


class StatusInputs(Inputs):
    all: Bool = Field(False, description="Also list finished jobs (default: running and waiting ones)")


def check_create(zk: ZK, params: CreateInputs) -> ProvisionArgs:
    """The task arguments of a valid request; bad input is a 400 naming the field."""
    vms.check_vm_name(params.name, "name")
    if zk.exists(schema.vm_name(params.name)):
        raise InvalidInput(f'name: a VM named "{params.name}" already exists in the cluster')
    if not params.profile or "/" in params.profile or not zk.exists(schema.profile(params.profile)):
        raise InvalidInput(f'profile: profile "{params.profile}" does not exist')
    prov.arguments_dict(params.arg, "arg")
    if params.define_vm:
        _check_profile_fits(zk, params.profile, params.name)
    return ProvisionArgs(vm_name=params.name, vm_profile=params.profile, define_vm=params.define_vm,
                         start_vm=params.start_vm and params.define_vm, script_run_args=list(params.arg))


def _check_profile_fits(zk: ZK, profile: str, vm_name: str) -> None:
    """Refuse before queueing a job whose VM no node could ever run (its system template asks more
    memory or vCPUs than the largest node has), instead of failing at the define stage."""
    template_name = prov.get_profile(zk, profile).get("system_template")
    if not template_name:
        return                                  # the job itself names what is missing
    try:
        template = prov.get_system_template(zk, str(template_name))
    except NotFound:
        return
    demand = placement.Demand(memory_mib=int(template.get("vram_mb") or 0),
                              vcpus=int(template.get("vcpu_count") or 0))
    rules.check_demand_fits_cluster(nodes_mod.load_nodes(zk, fresh=True), demand, vm_name,
                                    f"profile (system template {template_name})")


def job_item(task: TaskRecord) -> dict[str, Any]:
    args = task.args
    return {"id": task.id, "state": task.state, "status": task.status, "current": task.current,
            "total": task.total, "worker": task.worker, "target": task.target,
            "vm_name": args.get("vm_name"), "vm_profile": args.get("vm_profile"),
            "define_vm": bool(args.get("define_vm", True)), "start_vm": bool(args.get("start_vm", True)),
            "script_run_args": list(args.get("script_run_args") or []), "created": task.created,
            "started": task.started, "finished": task.finished}


def _job(zk: ZK, task_id: str) -> TaskRecord:
    try:
        task = tasks_mod.get_task(zk, task_id)
    except NotFound:
        raise NotFound(f"Provisioner job {task_id} not found.") from None
    if task.kind != PROVISIONER_CREATE:
        raise NotFound(f"Provisioner job {task_id} not found (task {task_id} is a {task.kind} task).")
    return task


@router.post("/create", summary="Create a new virtual machine with a profile (a task on the primary)",
             responses=responses(TaskAccepted, 202))
def create(params: CreateInputs = inputs(CreateInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    task = tasks_mod.submit(zk, PROVISIONER_CREATE, check_create(zk, params), target=tasks_mod.PRIMARY,
                            total=PROVISION_STAGES)
    return task_accepted(tasks_mod.accepted(task, nodes_mod.primary_node(zk)))


@router.get("/status", summary="List provisioning jobs (running and waiting; all with all=true)",
            responses=responses({"type": "array", "items": JOB_ITEM}))
def status_list(params: StatusInputs = inputs(StatusInputs), zk: ZK = Depends(get_zk)) -> JSONResponse:
    jobs = [job_item(t) for t, _v in tasks_mod.load_tasks(zk)
            if t.kind == PROVISIONER_CREATE and (params.all or t.state not in TASK_FINISHED)]
    return ok(jobs)


@router.get("/status/{task_id}", summary="Return the status of provisioning job {task_id}",
            responses=responses(TaskStatus, 200, 404))
def status(task_id: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    return ok(tasks_mod.task_view(_job(zk, task_id)))


@router.delete("/status/{task_id}", summary="Cancel provisioning job {task_id}: its cleanup runs "
                                            "(400 when it has already finished)",
               responses=responses(Message, 200, 400, 404))
def cancel(task_id: str, zk: ZK = Depends(get_zk)) -> JSONResponse:
    _job(zk, task_id)
    return message(tasks_mod.cancel(zk, task_id))
