"""VM snapshot routes: create, remove, roll back (upstream's) and rename (ours).

Each answers 202 with upstream's body (`task_id`, `task_name`, `run_on`) and a Location header;
bad input (a missing VM or snapshot, a name breaking the rule, a duplicate, a VM without RBD disks,
a rollback of a VM that is not stopped) is refused synchronously with nothing queued
(pvc.cluster.vmsnapshots). Inputs come from the query string or form fields, as upstream reads them.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import Field

from pvc.api.auth import require_auth
from pvc.api.common import get_zk, responses, task_accepted
from pvc.api.models import TaskAccepted
from pvc.api.params import Bool, Inputs, inputs
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import tasks as tasks_mod
from pvc.cluster import vmsnapshots as snaps
from pvc.core.records import TaskRecord
from pvc.core.zk import ZK

router = APIRouter(prefix="/vm", tags=["vm"], dependencies=[Depends(require_auth)])

RULE = "letters, digits, '.', '_', '-', starting with a letter or digit; at most 64; no '@', '/' or ':'"
NAME_HELP = f"The name of the snapshot ({RULE})"


class CreateInputs(Inputs):
    snapshot_name: str | None = Field(None, description=NAME_HELP + "; default: the date, YYYYMMDDHHMMSS")


class RemoveInputs(Inputs):
    snapshot_name: str = Field(description="The name of the snapshot to remove")
    force: Bool = Field(False, description="Drop the snapshot record even if some of its RBD snapshots are "
                                           "already gone")


class RollbackInputs(Inputs):
    snapshot_name: str = Field(description="The name of the snapshot to roll back to")
    force: Bool = Field(False, description="Detach the VM's disks that the snapshot does not hold "
                                           "(otherwise such a rollback is refused)")
    with_meta: Bool = Field(False, description="Also restore the VM's metadata (limits, selector, autostart, "
                                               "migration settings, profile, tags) as captured")


class RenameInputs(Inputs):
    snapshot_name: str = Field(description="The current name of the snapshot")
    new_name: str = Field(description=f"The new name of the snapshot ({RULE})")


def _accepted(zk: ZK, task: TaskRecord) -> JSONResponse:
    return task_accepted(tasks_mod.accepted(task, nodes_mod.primary_node(zk)))


@router.post("/{vm}/snapshot", summary="Take a snapshot of VM {vm} (all its disks at one instant, its XML "
                                       "and metadata)", responses=responses(TaskAccepted, 202, 404))
def vm_snapshot_create(vm: str, params: CreateInputs = inputs(CreateInputs),
                       zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _accepted(zk, snaps.submit_create(zk, vm, params.snapshot_name or None))


@router.delete("/{vm}/snapshot", summary="Remove a snapshot of VM {vm}",
               responses=responses(TaskAccepted, 202, 404))
def vm_snapshot_remove(vm: str, params: RemoveInputs = inputs(RemoveInputs),
                       zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _accepted(zk, snaps.submit_remove(zk, vm, params.snapshot_name, params.force))


@router.post("/{vm}/snapshot/rollback", summary="Roll (stopped) VM {vm} back to a snapshot: disks and XML",
             responses=responses(TaskAccepted, 202, 404))
def vm_snapshot_rollback(vm: str, params: RollbackInputs = inputs(RollbackInputs),
                         zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _accepted(zk, snaps.submit_rollback(zk, vm, params.snapshot_name, params.force, params.with_meta))


@router.put("/{vm}/snapshot", summary="Rename a snapshot of VM {vm} (not in upstream PVC)",
            responses=responses(TaskAccepted, 202, 404))
def vm_snapshot_rename(vm: str, params: RenameInputs = inputs(RenameInputs),
                       zk: ZK = Depends(get_zk)) -> JSONResponse:
    return _accepted(zk, snaps.submit_rename(zk, vm, params.snapshot_name, params.new_name))
